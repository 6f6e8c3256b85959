"""zoo.json: one class writes and reads it; newer formats refused, unknown fields kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.errors import NotFound
from zoo.manifest import FORMAT, InputSpec, Manifest, ManifestError, TensorSpec
from zoo.repository import ModelVersion

MINIMAL = {"input": {"name": "image", "datatype": "UINT8", "shape": [-1, 224, 224, 3]}}


def test_a_manifest_round_trips_and_keeps_fields_it_does_not_know() -> None:
    data = {
        **MINIMAL,
        "format": "keras-zoo.model/1.3",  # a newer minor release
        "labels": ["cat", "dog"],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}],
        "source": {"catalog_model": "MobileNetV2", "weights": {"kind": "imagenet"}},
        "max_batch_size": 8,
        "training": {"base_model": "MobileNetV2", "val_accuracy": 0.9},
        "lineage": {"parent": "abc"},  # a field this release does not know
    }
    manifest = Manifest.from_dict(data)
    assert manifest.input == InputSpec("image", "UINT8", (-1, 224, 224, 3))
    assert manifest.outputs == (TensorSpec("logits", "FP32", (-1, 2)),)
    assert (manifest.labels, manifest.max_batch_size) == (("cat", "dog"), 8)
    assert manifest.catalog_model == "MobileNetV2"
    assert manifest.training == {"base_model": "MobileNetV2", "val_accuracy": 0.9}
    written = manifest.to_dict()
    assert written["lineage"] == {"parent": "abc"} and written["format"] == "keras-zoo.model/1.3"
    assert Manifest.from_dict(json.loads(json.dumps(written))) == manifest


def test_an_older_manifest_without_a_batch_limit_or_format_reads_with_defaults() -> None:
    manifest = Manifest.from_dict(MINIMAL)
    assert (manifest.format, manifest.max_batch_size, manifest.training) == (FORMAT, 32, None)
    assert manifest.input.preprocessing_in_graph is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**MINIMAL, "format": "keras-zoo.model/2"}, "not one this release reads"),
        ({**MINIMAL, "format": "something/1"}, "not one this release reads"),
        ({}, "missing or of the wrong type"),
        ({"input": {"name": 3, "datatype": "UINT8", "shape": []}}, "name must be a string"),
        ({**MINIMAL, "max_batch_size": 0}, "max_batch_size must be a positive integer"),
        ({**MINIMAL, "max_batch_size": True}, "max_batch_size must be a positive integer"),
        ([1, 2], "a manifest is a JSON object"),
    ],
)
def test_unreadable_manifests_say_why(data: object, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data)


def test_a_version_reads_its_manifest_or_says_it_has_none(tmp_path: Path) -> None:
    version = ModelVersion("m", 1, tmp_path)
    with pytest.raises(NotFound, match=r"m version 1 has no zoo\.json"):
        version.manifest()
    (tmp_path / "zoo.json").write_text("{not json")
    with pytest.raises(ManifestError, match=r"m version 1: zoo\.json"):
        version.manifest()
    (tmp_path / "zoo.json").write_text(json.dumps(MINIMAL))
    assert version.manifest().input.shape == (-1, 224, 224, 3)
