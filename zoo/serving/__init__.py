"""Serving wing: models of the repository answered with ONNX Runtime.

Owns the registry of loaded versions (``runtime``), dynamic batching (``batching``), the data
plane that the gRPC and HTTP adapters call (``dataplane``), per-model statistics (``stats``) and
image decoding for classify (``images``).
May import: ``zoo.catalog`` (labels, preprocessing facts), the top-level ``zoo.config``/
``zoo.errors``/``zoo.repository``/``zoo.manifest``. Never ``zoo.jobs``, ``zoo.export``,
TensorFlow, Keras or tf2onnx. Only the server imports this wing.
"""
