"""keras-zoo's domain: catalog, weights, building, export, runtime and fine-tuning.

Importing ``zoo`` is cheap: TensorFlow, Keras, tf2onnx and ONNX Runtime are imported inside
the functions that need them.
"""

__version__ = "0.1.0"

from zoo.catalog import SEED_MODELS, ModelSpec, Preprocessing, get_spec, list_models
from zoo.catalog.build import build_model
from zoo.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    WeightsNotFound,
    ZooError,
)

__all__ = [
    "SEED_MODELS",
    "FailedPrecondition",
    "IntegrityError",
    "InvalidArgument",
    "ModelSpec",
    "NotFound",
    "Preprocessing",
    "WeightsNotFound",
    "ZooError",
    "build_model",
    "get_spec",
    "list_models",
]
