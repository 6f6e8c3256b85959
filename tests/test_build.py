"""Building models from the catalog; argument checks come before any TensorFlow work."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from zoo.catalog import list_models
from zoo.errors import InvalidArgument, NotFound, WeightsNotFound


def test_builds_without_weights_at_a_custom_size() -> None:
    model = zoo.build_model("mobilenetv2", weights=None, include_top=False, input_shape=(96, 96, 3))
    assert tuple(model.output_shape) == (None, 3, 3, 1280)


def test_builds_a_new_classifier() -> None:
    model = zoo.build_model("MobileNetV2", weights=None, num_classes=7, input_shape=(64, 64, 3))
    assert tuple(model.output_shape) == (None, 7)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"name": "NoSuchNet"}, NotFound, "unknown model 'NoSuchNet'"),
        (
            {"input_shape": (16, 16, 3)},
            InvalidArgument,
            r"height and width >= 32; received \(16, 16\)",
        ),
        ({"input_shape": (96, 96, 1)}, InvalidArgument, "3 RGB channels; received"),
        ({"input_shape": "big"}, InvalidArgument, "must be \\(height, width, 3\\); received 'big'"),
        ({"weights": "/no/such/file.h5"}, NotFound, "'/no/such/file.h5' does not exist"),
        ({"include_top": False, "num_classes": 3}, InvalidArgument, "needs include_top=True"),
        ({"num_classes": 0, "weights": None}, InvalidArgument, "positive integer; received 0"),
        ({"weights": "imagenet", "num_classes": 10}, InvalidArgument, "have 1000 classes"),
        (
            {"weights": "imagenet", "input_shape": (128, 128, 3)},
            InvalidArgument,
            r"need input_shape \(224, 224, 3\)",
        ),
        ({"weights": "imagenet", "alpha": 0.35}, InvalidArgument, "default architecture"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, error: type, message: str) -> None:
    args = {"name": "MobileNetV2", "weights": None, **kwargs}
    with pytest.raises(error, match=message):
        zoo.build_model(**args)


def test_missing_imagenet_weights_say_where_and_how(keras_home: Path) -> None:
    with pytest.raises(WeightsNotFound) as info:
        zoo.build_model("ResNet50")
    message = str(info.value)
    expected = keras_home / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    assert str(expected) in message
    assert "zoo weights seed" in message
    assert "zoo weights fetch ResNet50" in message


@pytest.mark.parametrize("spec", list_models(), ids=lambda s: s.name)
def test_built_model_matches_catalog(spec: zoo.ModelSpec) -> None:
    """Parameter count and layers with weights (keras.io's depth) of the real model.

    For the 13 seed models this, with the published-table test, proves the built models
    have exactly the table's parameter counts. All 40 build in about a minute.
    """
    import gc

    import keras

    model = zoo.build_model(spec, weights=None)
    try:
        assert model.count_params() == spec.parameters
        assert sum(1 for layer in model.layers if layer.weights) == spec.depth_param_layers
        assert tuple(model.input_shape[1:]) == spec.input_shape
        assert tuple(model.output_shape[1:]) == (spec.num_classes,)
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()


def test_missing_extra_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo import extras
    from zoo.errors import FailedPrecondition

    monkeypatch.setitem(extras.SERVER_MODULES, "export", ("numpy", "no_such_module_here"))
    with pytest.raises(FailedPrecondition, match=r"no_such_module_here.*keras-zoo\[server\]"):
        extras.require("export")
    extras.require("serving")  # everything is installed in the test environment
