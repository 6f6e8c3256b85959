"""Clear errors when an optional dependency group is not installed."""

from __future__ import annotations

import importlib.util

from zoo.errors import FailedPrecondition

SERVER_MODULES = {
    "export": ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"),
    "serving": ("onnxruntime", "prometheus_client", "grpc_health", "grpc_reflection"),
}


def require(feature: str) -> None:
    """Raise FailedPrecondition naming the extra to install if ``feature`` cannot run here."""
    missing = [m for m in SERVER_MODULES[feature] if importlib.util.find_spec(m) is None]
    if missing:
        raise FailedPrecondition(
            f"{feature} needs {', '.join(missing)}, which this installation lacks; install "
            "the server extra: pip install 'keras-zoo[server]' (or [gpu] on NVIDIA hosts)"
        )
