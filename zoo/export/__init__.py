"""Export wing: a catalog model to a verified ONNX file in a versioned, Triton-layout repository.

Owns the export route (``exporter``: the parent side that starts the child and publishes),
the child process (``child``: TensorFlow, tf2onnx), the graph conversion (``convert``), the check
against Keras (``verify``) and the ``config.pbtxt`` writer (``triton_config``).
May import: ``zoo.catalog``, the top-level ``zoo.config``/``zoo.errors``/``zoo.lifetime``/
``zoo.repository``/``zoo.manifest``. Never ``zoo.serving`` or ``zoo.jobs``.
"""
