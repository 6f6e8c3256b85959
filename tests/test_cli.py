"""The ``zoo`` command line, run as a user runs it."""

from __future__ import annotations

import json

import zoo

DOCUMENTED_KEYS = {
    "name",
    "family",
    "constructor",
    "keras_module",
    "input_shape",
    "min_input_size",
    "preprocessing",
    "channel_order",
    "size_mb",
    "parameters",
    "depth_keras_table",
    "depth_param_layers",
    "top1_accuracy",
    "top5_accuracy",
    "num_classes",
    "license",
    "weights",
}


def test_models_json_lists_the_whole_catalog(zoo_cli) -> None:
    done = zoo_cli("models", "--json")
    assert done.returncode == 0, done.stderr
    models = json.loads(done.stdout)
    assert len(models) == len(zoo.list_models()) == 40
    assert all(set(m) == DOCUMENTED_KEYS for m in models)
    vgg16 = next(m for m in models if m["name"] == "VGG16")
    assert vgg16["parameters"] == 138_357_544
    assert vgg16["size_mb"] == 528
    assert vgg16["depth_keras_table"] == 23
    assert vgg16["preprocessing"] == "caffe"
    assert vgg16["channel_order"] == "BGR"
    assert vgg16["input_shape"] == [224, 224, 3]
    assert vgg16["constructor"] == "keras.applications.VGG16"
    assert vgg16["weights"]["top"] == {
        "file_name": "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "origin": "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "file_hash": "64373286793e3c8b2b4e3219cbf3544b",
        "hash_algorithm": "md5",
    }


def test_models_pattern_and_exclude(zoo_cli) -> None:
    done = zoo_cli("models", "densenet*", "--exclude", "*201", "--json")
    assert [m["name"] for m in json.loads(done.stdout)] == ["DenseNet121", "DenseNet169"]


def test_models_table_is_readable(zoo_cli) -> None:
    done = zoo_cli("models", "MobileNet*")
    assert done.returncode == 0, done.stderr
    assert "4 models" in done.stdout
    assert "MobileNetV2" in done.stdout and "3,538,984" in done.stdout
    assert "71.3%" in done.stdout


def test_info_json_and_text(zoo_cli) -> None:
    done = zoo_cli("info", "inceptionv3", "--json")
    spec = json.loads(done.stdout)
    assert spec["name"] == "InceptionV3"
    assert spec["input_shape"] == [299, 299, 3]
    assert spec["min_input_size"] == 75
    assert spec["preprocessing"] == "tf"
    assert (spec["top1_accuracy"], spec["top5_accuracy"]) == (0.779, 0.937)

    done = zoo_cli("info", "DenseNet121")
    assert done.returncode == 0
    assert "torch" in done.stdout and "8,062,504" in done.stdout
    assert "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in done.stdout


def test_unknown_model_is_one_line_with_suggestion(zoo_cli) -> None:
    done = zoo_cli("info", "VGG61")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("zoo: error: unknown model 'VGG61'")
    assert "VGG16" in lines[0]


def test_usage_error_exits_2_without_traceback(zoo_cli) -> None:
    done = zoo_cli("models", "--no-such-flag")
    assert done.returncode == 2
    assert "No such option" in done.stderr
    assert "Traceback" not in done.stderr
