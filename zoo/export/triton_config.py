"""Triton model configuration (``config.pbtxt``) in protobuf text format.

Written as text, not through protobuf, because the domain does not import protobuf; the
tests parse the result with Triton's own ``model_config_pb2`` to prove it is valid.
"""

from __future__ import annotations

from collections.abc import Sequence

from zoo.manifest import TensorSpec

# Triton's DataType enum names for the numpy-style names used in zoo.json.
TRITON_TYPES = {
    "UINT8": "TYPE_UINT8",
    "FP32": "TYPE_FP32",
    "FP16": "TYPE_FP16",
    "INT64": "TYPE_INT64",
    "INT32": "TYPE_INT32",
}


def _tensor_block(spec: TensorSpec) -> str:
    dims = ", ".join(str(d) for d in spec.shape[1:])  # Triton's dims leave out the batch
    return (
        "  {\n"
        f'    name: "{spec.name}"\n'
        f"    data_type: {TRITON_TYPES[spec.datatype]}\n"
        f"    dims: [ {dims} ]\n"
        "  }"
    )


def render_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    max_queue_delay_us: int = 0,
) -> str:
    """config.pbtxt for an ONNX model with a dynamic batch dimension (the manifest's tensors,
    batch first)."""
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensor_block(s) for s in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(s) for s in outputs) + "\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}",
        # A new model has no labels, so its default is the newest; once a version is labelled
        # stable, the repository rewrites this line to serve stable alone (the reason is in
        # zoo.labels.triton_version_policy).
        "version_policy: { latest: { num_versions: 1 } }",
    ]
    return "\n".join(lines) + "\n"
