"""MobileNetV3 (Howard et al., 2019): rescaling is part of the model.

Keras documents no size or top-5 for these; top-1 is the docstring's figure."""

from zoo.catalog.registry import register
from zoo.catalog.spec import ModelSpec, Preprocessing, WeightsFile

register(
    ModelSpec(
        name="MobileNetV3Large",
        family="mobilenet_v3",
        keras_module="keras.applications.mobilenet_v3",
        input_size=224,
        min_input_size=32,
        preprocessing=Preprocessing.BUILTIN,
        size_mb=None,
        parameters=5_507_432,
        depth_keras_table=None,
        depth_param_layers=110,
        top1_accuracy=0.756,
        top5_accuracy=None,
        weights_top=WeightsFile(
            "weights_mobilenet_v3_large_224_1.0_float.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float.h5",
            "59e551e166be033d707958cf9e29a6a7",
        ),
        weights_notop=WeightsFile(
            "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
            "07fb09a5933dd0c8eaafa16978110389",
        ),
        license="Apache-2.0",
    ),
    ModelSpec(
        name="MobileNetV3Small",
        family="mobilenet_v3",
        keras_module="keras.applications.mobilenet_v3",
        input_size=224,
        min_input_size=32,
        preprocessing=Preprocessing.BUILTIN,
        size_mb=None,
        parameters=2_554_968,
        depth_keras_table=None,
        depth_param_layers=88,
        top1_accuracy=0.681,
        top5_accuracy=None,
        weights_top=WeightsFile(
            "weights_mobilenet_v3_small_224_1.0_float.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float.h5",
            "8768d4c2e7dee89b9d02b2d03d65d862",
        ),
        weights_notop=WeightsFile(
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            "d3e8ec802a04aa4fc771ee12a9a9b836",
        ),
        license="Apache-2.0",
    ),
)
