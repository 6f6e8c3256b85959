"""The descriptor pool our generated protocol modules register in, apart from the default one.

Our ``inference`` messages are Triton's, under Triton's proto package, so that unmodified
Triton clients work against the server. tritonclient registers the same messages in the
default pool from its own files, and the default pool refuses a second definition of a
symbol (``duplicate symbol 'inference.DataType'``), so with the default pool ``import client``
and ``import tritonclient.grpc`` could not share a process. Messages built from this pool
serialise to the same bytes and the gRPC method paths (``/inference.GRPCInferenceService/...``)
do not depend on the pool, so nothing on the wire changes. ``protos/generate.py`` points the
generated modules here; server reflection answers from this pool.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
