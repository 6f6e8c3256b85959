"""VGG16 and VGG19 (Simonyan & Zisserman, 2014). Weights: CC BY 4.0."""

from zoo.catalog.registry import register
from zoo.catalog.spec import ModelSpec, Preprocessing, WeightsFile

register(
    ModelSpec(
        name="VGG16",
        family="vgg",
        keras_module="keras.applications.vgg16",
        input_size=224,
        min_input_size=32,
        preprocessing=Preprocessing.CAFFE,
        size_mb=528,
        parameters=138_357_544,
        depth_keras_table=23,
        depth_param_layers=16,
        top1_accuracy=0.713,
        top5_accuracy=0.901,
        weights_top=WeightsFile(
            "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            "64373286793e3c8b2b4e3219cbf3544b",
        ),
        weights_notop=WeightsFile(
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "6d6bbae143d832006294945121d1f1fc",
        ),
        license="CC-BY-4.0",
    ),
    ModelSpec(
        name="VGG19",
        family="vgg",
        keras_module="keras.applications.vgg19",
        input_size=224,
        min_input_size=32,
        preprocessing=Preprocessing.CAFFE,
        size_mb=549,
        parameters=143_667_240,
        depth_keras_table=26,
        depth_param_layers=19,
        top1_accuracy=0.713,
        top5_accuracy=0.9,
        weights_top=WeightsFile(
            "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
            "cbe5617147190e668d6c5d5026f83318",
        ),
        weights_notop=WeightsFile(
            "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "253f8cb515780f3b799900260a226db6",
        ),
        license="CC-BY-4.0",
    ),
)
