"""InceptionV3 (Szegedy et al., 2015). Weights: Apache-2.0."""

from zoo.catalog.registry import register
from zoo.catalog.spec import ModelSpec, Preprocessing, WeightsFile

register(
    ModelSpec(
        name="InceptionV3",
        family="inception_v3",
        keras_module="keras.applications.inception_v3",
        input_size=299,
        min_input_size=75,
        preprocessing=Preprocessing.TF,
        size_mb=92,
        parameters=23_851_784,
        depth_keras_table=159,
        depth_param_layers=189,
        top1_accuracy=0.779,
        top5_accuracy=0.937,
        weights_top=WeightsFile(
            "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
            "9a0d58056eeedaa3f26cb7ebd46da564",
        ),
        weights_notop=WeightsFile(
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "bcbd6486424b2319ff4ef7d526e38f63",
        ),
        license="Apache-2.0",
    ),
)
