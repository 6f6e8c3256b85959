"""The keras-zoo Python SDK: ``from client import ZooClient``.

Talks to the server over gRPC only; installs and imports without TensorFlow or ONNX Runtime.
"""

from client import errors
from client.aio import AsyncZooClient
from client.jobs import DatasetInfo, Job, JobEvent
from client.sync import ZooClient
from client.types import Classification, LabelChange, ModelInfo, ModelLabels, Prediction

__all__ = [
    "AsyncZooClient",
    "Classification",
    "DatasetInfo",
    "Job",
    "JobEvent",
    "LabelChange",
    "ModelInfo",
    "ModelLabels",
    "Prediction",
    "ZooClient",
    "errors",
]
