"""Xception (Chollet, 2017). Weights: MIT."""

from zoo.catalog.registry import register
from zoo.catalog.spec import ModelSpec, Preprocessing, WeightsFile

register(
    ModelSpec(
        name="Xception",
        family="xception",
        keras_module="keras.applications.xception",
        input_size=299,
        min_input_size=71,
        preprocessing=Preprocessing.TF,
        size_mb=88,
        parameters=22_910_480,
        depth_keras_table=126,
        depth_param_layers=81,
        top1_accuracy=0.79,
        top5_accuracy=0.945,
        weights_top=WeightsFile(
            "xception_weights_tf_dim_ordering_tf_kernels.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/xception/xception_weights_tf_dim_ordering_tf_kernels.h5",
            "0a58e3b7378bc2990ea3b43d5981f1f6",
        ),
        weights_notop=WeightsFile(
            "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "b0042744bf5b25fce3cb969f33bebb97",
        ),
        license="MIT",
    ),
)
