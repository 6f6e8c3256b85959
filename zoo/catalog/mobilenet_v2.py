"""MobileNetV2 (Sandler et al., 2018), alpha 1.0 at 224. Weights: Apache-2.0."""

from zoo.catalog.registry import register
from zoo.catalog.spec import ModelSpec, Preprocessing, WeightsFile

register(
    ModelSpec(
        name="MobileNetV2",
        family="mobilenet_v2",
        keras_module="keras.applications.mobilenet_v2",
        input_size=224,
        min_input_size=32,
        preprocessing=Preprocessing.TF,
        size_mb=14,
        parameters=3_538_984,
        depth_keras_table=88,
        depth_param_layers=105,
        top1_accuracy=0.713,
        top5_accuracy=0.901,
        weights_top=WeightsFile(
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
            None,
        ),
        weights_notop=WeightsFile(
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            None,
        ),
        license="Apache-2.0",
    ),
)
