"""NASNet (Zoph et al., 2017). Weights: Apache-2.0."""

from zoo.catalog.registry import register
from zoo.catalog.spec import ModelSpec, Preprocessing, WeightsFile

register(
    ModelSpec(
        name="NASNetLarge",
        family="nasnet",
        keras_module="keras.applications.nasnet",
        input_size=331,
        min_input_size=32,
        preprocessing=Preprocessing.TF,
        size_mb=343,
        parameters=88_949_818,
        depth_keras_table=None,
        depth_param_layers=533,
        top1_accuracy=0.825,
        top5_accuracy=0.96,
        weights_top=WeightsFile(
            "nasnet_large.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/NASNet-large.h5",
            "11577c9a518f0070763c2b964a382f17",
        ),
        weights_notop=WeightsFile(
            "nasnet_large_no_top.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/NASNet-large-no-top.h5",
            "d81d89dc07e6e56530c4e77faddd61b5",
        ),
        license="Apache-2.0",
    ),
    ModelSpec(
        name="NASNetMobile",
        family="nasnet",
        keras_module="keras.applications.nasnet",
        input_size=224,
        min_input_size=32,
        preprocessing=Preprocessing.TF,
        size_mb=23,
        parameters=5_326_716,
        depth_keras_table=None,
        depth_param_layers=389,
        top1_accuracy=0.744,
        top5_accuracy=0.919,
        weights_top=WeightsFile(
            "nasnet_mobile.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/NASNet-mobile.h5",
            "020fb642bf7360b370c678b08e0adf61",
        ),
        weights_notop=WeightsFile(
            "nasnet_mobile_no_top.h5",
            "https://storage.googleapis.com/tensorflow/keras-applications/nasnet/NASNet-mobile-no-top.h5",
            "1ed92395b5b598bdda52abe5c0dbfd63",
        ),
        license="Apache-2.0",
    ),
)
