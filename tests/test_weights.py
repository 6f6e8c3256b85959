"""The weights cache: seeding checks hashes, building finds seeded files without network."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.catalog import WeightsFile
from zoo.catalog import weights as cache
from zoo.errors import IntegrityError

STANDIN = "standin_mobilenetv2_notop.weights.h5"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """A real Keras weights file for MobileNetV2 without top, with recognisable values."""
    model = zoo.build_model("MobileNetV2", weights=None, include_top=False, input_shape=(96, 96, 3))
    rng = np.random.default_rng(7)
    values = [rng.normal(size=w.shape).astype("float32") for w in model.weights]
    model.set_weights(values)
    directory = tmp_path_factory.mktemp("weights_src")
    path = directory / STANDIN
    model.save_weights(path)
    return path, values


def spec_with(file_hash: str | None) -> zoo.ModelSpec:
    """MobileNetV2 with its no-top weights file replaced by the stand-in (a test hash table)."""
    wf = WeightsFile(STANDIN, f"https://example.invalid/{STANDIN}", file_hash)
    return dataclasses.replace(zoo.get_spec("MobileNetV2"), weights_notop=wf)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_seed_refuses_a_wrong_hash(standin: tuple[Path, list], tmp_path: Path) -> None:
    path, _ = standin
    report = cache.seed(path.parent, tmp_path / "models", specs=[spec_with("0" * 64)])
    assert report.copied == () and report.unverified == ()
    assert len(report.refused) == 1
    assert f"does not match the published {'0' * 64}" in report.refused[0]
    assert sha256(path) in report.refused[0]
    assert not (tmp_path / "models" / STANDIN).exists()


def test_seeded_file_is_found_and_loaded_without_network(
    standin: tuple[Path, list], keras_home: Path
) -> None:
    path, values = standin
    spec = spec_with(sha256(path))
    report = cache.seed(path.parent, specs=[spec])
    assert report.copied == (STANDIN,)
    assert (keras_home / "models" / STANDIN).read_bytes() == path.read_bytes()

    # no_network (autouse) fails the test if building tries to download anything
    model = zoo.build_model(spec, weights="imagenet", include_top=False, input_shape=(96, 96, 3))
    loaded = model.get_weights()
    assert len(loaded) == len(values)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, values, strict=True))
    states = {(s.include_top, s.state) for s in cache.status([spec])}
    assert states == {(True, cache.FileState.MISSING), (False, cache.FileState.VERIFIED)}


def test_md5_hashes_are_checked_too(standin: tuple[Path, list], tmp_path: Path) -> None:
    path, _ = standin
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    report = cache.seed(path.parent, tmp_path / "models", specs=[spec_with(md5)])
    assert report.copied == (STANDIN,)
    report = cache.seed(path.parent, tmp_path / "other", specs=[spec_with("f" * 32)])
    assert report.copied == () and "md5" in report.refused[0]


def test_corrupted_cache_file_is_refused_at_build(
    standin: tuple[Path, list], keras_home: Path
) -> None:
    path, _ = standin
    spec = spec_with(sha256(path))
    cache.seed(path.parent, specs=[spec])
    target = keras_home / "models" / STANDIN
    target.write_bytes(target.read_bytes()[:-10])  # truncated, as after a broken copy
    with pytest.raises(IntegrityError, match="does not match its published sha256"):
        zoo.build_model(spec, weights="imagenet", include_top=False, input_shape=(96, 96, 3))


def test_file_without_published_hash_is_copied_as_unverified(
    standin: tuple[Path, list], tmp_path: Path
) -> None:
    path, _ = standin
    report = cache.seed(path.parent, tmp_path / "models", specs=[spec_with(None)])
    assert report.unverified == (STANDIN,) and report.copied == ()


def test_cli_seed_refuses_wrong_file_and_status_reports_it(
    zoo_cli, tmp_path: Path, keras_home: Path
) -> None:
    source = tmp_path / "download"
    source.mkdir()
    fake = source / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    fake.write_bytes(b"not really weights")
    (source / "README.txt").write_text("unrelated")

    done = zoo_cli("weights", "seed", str(source))
    assert done.returncode == 1
    assert "refused" in done.stderr and "does not match the published" in done.stderr
    assert "6d6bbae143d832006294945121d1f1fc" in done.stderr  # Keras's md5 for that file
    assert "Traceback" not in done.stderr
    assert not (keras_home / "models" / fake.name).exists()

    # A bad file put there by hand is reported, not trusted.
    (keras_home / "models").mkdir(parents=True, exist_ok=True)
    (keras_home / "models" / fake.name).write_bytes(b"not really weights")
    done = zoo_cli("weights", "status", "VGG16", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["directory"] == str(keras_home / "models")
    states = {(f["model"], f["include_top"]): f["state"] for f in report["files"]}
    assert states == {("VGG16", True): "missing", ("VGG16", False): "mismatch"}


def test_cli_seed_of_missing_directory_is_one_clear_line(zoo_cli, tmp_path: Path) -> None:
    done = zoo_cli("weights", "seed", str(tmp_path / "nope"))
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"zoo: error: seed source '{tmp_path / 'nope'}' is not a directory"
    )
