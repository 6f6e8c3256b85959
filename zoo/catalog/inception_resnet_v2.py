"""InceptionResNetV2 (Szegedy et al., 2016). Weights: Apache-2.0."""

from zoo.catalog.registry import register
from zoo.catalog.spec import ModelSpec, Preprocessing, WeightsFile

register(
    ModelSpec(
        name="InceptionResNetV2",
        family="inception_resnet_v2",
        keras_module="keras.applications.inception_resnet_v2",
        input_size=299,
        min_input_size=75,
        preprocessing=Preprocessing.TF,
        size_mb=215,
        parameters=55_873_736,
        depth_keras_table=572,
        depth_param_layers=449,
        top1_accuracy=0.803,
        top5_accuracy=0.953,
        weights_top=WeightsFile(
            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
            "e693bd0210a403b3192acc6073ad2e96",
        ),
        weights_notop=WeightsFile(
            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/inception_resnet_v2/inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "d19885ff4a710c122648d3b5c3b684e4",
        ),
        license="Apache-2.0",
    ),
)
