"""Helpers shared by tests (import as `from helpers import ...`)."""

from __future__ import annotations


def pixel_sensitive_model(name: str, input_size: int, **kwargs: object) -> object:
    """A ``weights=None`` catalog model whose logits depend on the pixels.

    Random weights answer almost the same whatever the input, which hides wrong
    preprocessing. So: output logits, set every BatchNorm's statistics from real photos
    (momentum 0, one training-mode pass) and scale the classifier so the logits spread by
    about 10 between images.
    """
    import importlib

    import keras
    import numpy as np

    import zoo
    from zoo.verify import verification_inputs

    spec = zoo.get_spec(name)
    keras.utils.set_random_seed(0)
    model = zoo.build_model(
        spec,
        weights=None,
        input_shape=(input_size, input_size, 3),
        classifier_activation=None,
        **kwargs,
    )
    preprocess = importlib.import_module(spec.keras_module).preprocess_input
    x = preprocess(verification_inputs(input_size, input_size).astype("float32"))
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(x, training=True)
    head = [layer for layer in model.layers if hasattr(layer, "kernel")][-1]
    logits = np.asarray(model(x, training=False))
    spread = float(np.std(logits - logits.mean(axis=0)))
    head.kernel.assign(head.kernel * (10.0 / max(spread, 1e-12)))
    return model
