"""Helpers shared by tests (import as `from helpers import ...`)."""

from __future__ import annotations

import importlib
from typing import Any


def pixel_sensitive_model(name: str, input_size: int, **kwargs: object) -> Any:
    """A ``weights=None`` catalog logits model whose outputs depend on the pixels."""
    import keras

    import zoo
    from zoo.verify import make_pixel_sensitive, verification_inputs

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
    return make_pixel_sensitive(
        model, preprocess(verification_inputs(input_size, input_size).astype("float32"))
    )


def heavy_modules_after(statement: str) -> list[str]:
    """Which ML frameworks (and our domain) a fresh interpreter holds after ``statement``."""
    import ast
    import subprocess
    import sys

    code = (
        f"import sys; {statement}; print(sorted(m for m in ('tensorflow', 'keras', "
        "'onnxruntime', 'onnx', 'tf2onnx', 'grpc', 'zoo') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(done.stdout)
