"""What the catalog knows about one model: plain, frozen data.

A ``ModelSpec`` holds facts only (published figures, file names, hashes); anything computed
from them is a property. Specs are built once at import time by the family modules beside
this one and never change afterwards.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Preprocessing(enum.StrEnum):
    """How ``keras.applications.<module>.preprocess_input`` turns RGB pixels 0..255 into inputs.

    CAFFE: RGB -> BGR, then subtract the ImageNet mean per channel (no scaling).
    TF: scale to -1..1 (``x / 127.5 - 1``).
    TORCH: scale to 0..1, then normalise with the ImageNet mean and standard deviation.
    BUILTIN: the model contains its own rescaling layers and takes raw 0..255 pixels.
    """

    CAFFE = "caffe"
    TF = "tf"
    TORCH = "torch"
    BUILTIN = "builtin"


class ChannelOrder(enum.StrEnum):
    """Channel order the network's first layer sees after preprocessing."""

    RGB = "RGB"
    BGR = "BGR"


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained weights file as Keras publishes it.

    ``file_hash`` is the hash Keras checks: 32 hex digits for MD5, 64 for SHA-256, or None
    where Keras publishes none (then the file is accepted unverified and says so).
    """

    file_name: str
    origin: str
    file_hash: str | None

    @property
    def hash_algorithm(self) -> str | None:
        if self.file_hash is None:
            return None
        return "sha256" if len(self.file_hash) == 64 else "md5"


@dataclass(frozen=True)
class ModelSpec:
    """One image-classification model of ``keras.applications``.

    Figures follow the Keras documentation. ``depth_keras_table`` is the depth of the
    original Keras Applications table (None where it printed "-"); ``depth_param_layers``
    is the current keras.io table's depth, which counts layers with parameters (None where
    that table prints "-" or does not list the model).
    """

    name: str
    family: str
    keras_module: str
    input_size: int
    min_input_size: int
    preprocessing: Preprocessing
    size_mb: float | None
    parameters: int
    top1_accuracy: float | None
    top5_accuracy: float | None
    weights_top: WeightsFile
    weights_notop: WeightsFile
    license: str
    depth_keras_table: int | None = None
    depth_param_layers: int | None = None
    num_classes: int = 1000

    @property
    def constructor(self) -> str:
        """Name of the constructor in ``keras.applications``."""
        return self.name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Default input shape, NHWC without the batch dimension."""
        return (self.input_size, self.input_size, 3)

    @property
    def channel_order(self) -> ChannelOrder:
        # Only caffe-style preprocessing swaps channels; every other mode keeps RGB.
        return ChannelOrder.BGR if self.preprocessing is Preprocessing.CAFFE else ChannelOrder.RGB

    def weights_file(self, include_top: bool) -> WeightsFile:
        return self.weights_top if include_top else self.weights_notop

    def to_dict(self) -> dict[str, object]:
        """The stable JSON form used by ``zoo models --json`` and ``zoo info --json``."""
        return {
            "name": self.name,
            "family": self.family,
            "constructor": f"keras.applications.{self.constructor}",
            "keras_module": self.keras_module,
            "input_shape": list(self.input_shape),
            "min_input_size": self.min_input_size,
            "preprocessing": self.preprocessing.value,
            "channel_order": self.channel_order.value,
            "size_mb": self.size_mb,
            "parameters": self.parameters,
            "depth_keras_table": self.depth_keras_table,
            "depth_param_layers": self.depth_param_layers,
            "top1_accuracy": self.top1_accuracy,
            "top5_accuracy": self.top5_accuracy,
            "num_classes": self.num_classes,
            "license": self.license,
            "weights": {
                "top": _weights_dict(self.weights_top),
                "notop": _weights_dict(self.weights_notop),
            },
        }


def _weights_dict(w: WeightsFile) -> dict[str, object]:
    return {
        "file_name": w.file_name,
        "origin": w.origin,
        "file_hash": w.file_hash,
        "hash_algorithm": w.hash_algorithm,
    }
