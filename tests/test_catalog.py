"""The catalog: complete, consistent with Keras, and equal to the published table."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
from helpers import heavy_modules_after

import zoo
from zoo.catalog import SEED_MODELS, Preprocessing, list_models, register
from zoo.errors import AlreadyExists, NotFound

# The original Keras Applications table (name: size MB, parameters, depth); None = "-".
SEED_TABLE = {
    "Xception": (88, 22_910_480, 126),
    "VGG16": (528, 138_357_544, 23),
    "VGG19": (549, 143_667_240, 26),
    "ResNet50": (99, 25_636_712, 168),
    "InceptionV3": (92, 23_851_784, 159),
    "InceptionResNetV2": (215, 55_873_736, 572),
    "MobileNet": (16, 4_253_864, 88),
    "MobileNetV2": (14, 3_538_984, 88),
    "DenseNet121": (33, 8_062_504, 121),
    "DenseNet169": (57, 14_307_880, 169),
    "DenseNet201": (80, 20_242_984, 201),
    "NASNetMobile": (23, 5_326_716, None),
    "NASNetLarge": (343, 88_949_818, None),
}
ALL_SPECS = list_models()


def test_seed_models_are_the_original_table() -> None:
    assert set(SEED_MODELS) == set(SEED_TABLE)


@pytest.mark.parametrize("name", SEED_TABLE)
def test_seed_entry_matches_published_table(name: str) -> None:
    spec = zoo.get_spec(name)
    size, params, depth = SEED_TABLE[name]
    assert (spec.size_mb, spec.parameters, spec.depth_keras_table) == (size, params, depth)


def test_catalog_has_every_keras_image_classifier() -> None:
    keras = pytest.importorskip("keras")
    in_keras = {n for n in dir(keras.applications) if n[0].isupper()}
    assert in_keras == {s.name for s in ALL_SPECS}
    assert len(ALL_SPECS) == 40


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_spec_points_at_real_keras_code(spec: zoo.ModelSpec) -> None:
    keras = pytest.importorskip("keras")
    assert callable(getattr(keras.applications, spec.constructor))
    module = importlib.import_module(spec.keras_module)
    assert callable(module.preprocess_input)
    assert spec.min_input_size <= spec.input_size
    for wf in (spec.weights_top, spec.weights_notop):
        # Keras saves some files under another name than the URL's (NASNet-large.h5)
        assert wf.origin.startswith("https://") and wf.origin.endswith(".h5")
        assert wf.file_name.endswith(".h5")
        assert wf.file_hash is None or len(wf.file_hash) in (32, 64)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: s.name)
def test_preprocessing_mode_matches_keras_source(spec: zoo.ModelSpec) -> None:
    """The mode is read back from how Keras's own preprocess_input treats one pixel."""
    np = pytest.importorskip("numpy")
    module = importlib.import_module(spec.keras_module)
    pixel = np.array([[[[255.0, 0.0, 0.0]]]], dtype="float32")  # pure red
    out = np.asarray(module.preprocess_input(pixel.copy())).reshape(3)
    observed = {
        (255.0, 0.0, 0.0): Preprocessing.BUILTIN,
        (1.0, -1.0, -1.0): Preprocessing.TF,
    }.get(tuple(round(float(v), 3) for v in out))
    if observed is None:
        # caffe puts red last (BGR) and subtracts the mean; torch keeps red first, scaled.
        observed = Preprocessing.CAFFE if out[2] > 100 else Preprocessing.TORCH
    assert observed is spec.preprocessing


def test_weights_file_names_are_unique() -> None:
    names = [wf.file_name for s in ALL_SPECS for wf in (s.weights_top, s.weights_notop)]
    assert len(names) == len(set(names))


def test_list_models_filters_and_sorts_naturally() -> None:
    names = [s.name for s in list_models("resnet*")]
    assert names == [
        "ResNet50",
        "ResNet50V2",
        "ResNet101",
        "ResNet101V2",
        "ResNet152",
        "ResNet152V2",
    ]
    assert [s.name for s in list_models("ResNet*", exclude=("*V2",))] == [
        "ResNet50",
        "ResNet101",
        "ResNet152",
    ]
    assert [s.name for s in list_models(family="densenet")] == [
        "DenseNet121",
        "DenseNet169",
        "DenseNet201",
    ]
    assert list_models("nothing-matches*") == []


def test_get_spec_is_case_insensitive() -> None:
    assert zoo.get_spec("mobilenetv2") is zoo.get_spec("MobileNetV2")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(NotFound, match=r"unknown model 'MobileNetV4'.*did you mean .*MobileNetV2"):
        zoo.get_spec("MobileNetV4")


def test_duplicate_registration_raises() -> None:
    copy = dataclasses.replace(zoo.get_spec("VGG16"), name="vgg16")
    with pytest.raises(AlreadyExists, match="vgg16"):
        register(copy)


def test_specs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        zoo.get_spec("VGG16").parameters = 1  # type: ignore[misc]


def test_import_zoo_does_not_import_frameworks() -> None:
    assert heavy_modules_after("import zoo; zoo.list_models()") == ["zoo"]


@pytest.mark.parametrize("name", [s.name for s in zoo.list_models()])
def test_architecture_options_are_constructor_arguments(name: str) -> None:
    import inspect

    import keras

    from zoo.catalog.options import options_of

    spec = zoo.get_spec(name)
    parameters = inspect.signature(getattr(keras.applications, spec.constructor)).parameters
    for option in options_of(spec):
        assert option.name in parameters, f"{name} has no argument {option.name}"
        default = parameters[option.name].default
        assert option.check(default) == default  # the default is inside the accepted range
