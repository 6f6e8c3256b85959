"""MobileNet (Howard et al., 2017), alpha 1.0 at 224. Weights: Apache-2.0."""

from zoo.catalog.registry import register
from zoo.catalog.spec import ModelSpec, Preprocessing, WeightsFile

register(
    ModelSpec(
        name="MobileNet",
        family="mobilenet",
        keras_module="keras.applications.mobilenet",
        input_size=224,
        min_input_size=32,
        preprocessing=Preprocessing.TF,
        size_mb=16,
        parameters=4_253_864,
        depth_keras_table=88,
        depth_param_layers=55,
        top1_accuracy=0.704,
        top5_accuracy=0.895,
        weights_top=WeightsFile(
            "mobilenet_1_0_224_tf.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/mobilenet_1_0_224_tf.h5",
            None,
        ),
        weights_notop=WeightsFile(
            "mobilenet_1_0_224_tf_no_top.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/mobilenet_1_0_224_tf_no_top.h5",
            None,
        ),
        license="Apache-2.0",
    ),
)
