"""Catalog wing: the ``keras.applications`` image classifiers, their weights and building them.

Importing this package registers every family module below; the registry is plain data.
Also owns the weights cache (``weights``), building a Keras model from a spec (``build``) and the
ImageNet labels (``labels``). May import only the top-level ``zoo.config``/``zoo.errors``/
``zoo.extras``; never ``zoo.export``, ``zoo.serving`` or ``zoo.jobs``.
"""

from zoo.catalog import (  # noqa: F401  (each import registers its family)
    convnext,
    densenet,
    efficientnet,
    efficientnet_v2,
    inception_resnet_v2,
    inception_v3,
    mobilenet,
    mobilenet_v2,
    mobilenet_v3,
    nasnet,
    resnet,
    resnet_v2,
    vgg,
    xception,
)
from zoo.catalog.registry import families, get_spec, list_models, natural_key, register
from zoo.catalog.spec import ChannelOrder, ModelSpec, Preprocessing, WeightsFile

# The 13 models of the original Keras Applications table, the project's seed set.
SEED_MODELS = (
    "Xception",
    "VGG16",
    "VGG19",
    "ResNet50",
    "InceptionV3",
    "InceptionResNetV2",
    "MobileNet",
    "MobileNetV2",
    "DenseNet121",
    "DenseNet169",
    "DenseNet201",
    "NASNetMobile",
    "NASNetLarge",
)

__all__ = [
    "SEED_MODELS",
    "ChannelOrder",
    "ModelSpec",
    "Preprocessing",
    "WeightsFile",
    "families",
    "get_spec",
    "list_models",
    "natural_key",
    "register",
]
