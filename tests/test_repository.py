"""The model repository: versions, manifests, Triton's config format, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.errors import AlreadyExists, InvalidArgument, NotFound
from zoo.export.exporter import export_model
from zoo.export.triton_config import render_config
from zoo.manifest import Manifest, TensorSpec
from zoo.repository import Repository, validate_model_name

SMALL = {"weights": None, "input_shape": (64, 64, 3), "alpha": 0.35}


def fake_version(tmp: Path, text: str = "onnx") -> Path:
    staged = tmp / f"staged-{text}"
    staged.mkdir()
    (staged / "model.onnx").write_text(text)
    manifest = {"input": {"name": "image", "datatype": "UINT8", "shape": [-1, 8, 8, 3]}}
    (staged / "zoo.json").write_text(json.dumps({**manifest, "note": text}))
    return staged


def test_versions_increase_and_newest_wins(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    config = render_config("m", [], [], 8)
    assert repo.publish(fake_version(tmp_path, "a"), "m", config).version == 1
    assert repo.publish(fake_version(tmp_path, "b"), "m", config).version == 2
    assert repo.publish(fake_version(tmp_path, "c"), "m", config, version=7).version == 7
    assert repo.publish(fake_version(tmp_path, "d"), "m", config).version == 8
    assert repo.versions("m") == [1, 2, 7, 8]
    assert repo.get("m").version == 8
    manifest = repo.manifest("m", 2)
    assert (manifest.model, manifest.version, manifest.extra) == ("m", 2, {"note": "b"})
    with pytest.raises(AlreadyExists, match="already has version 7"):
        repo.publish(fake_version(tmp_path, "e"), "m", config, version=7)
    with pytest.raises(NotFound, match="has no version 5; it has 1, 2, 7, 8"):
        repo.get("m", 5)
    with pytest.raises(NotFound, match="model 'other' is not in"):
        repo.versions("other")
    with pytest.raises(
        InvalidArgument, match="whole number from 1 to 9007199254740991; received 0"
    ):
        repo.get("m", 0)


@pytest.mark.parametrize(
    "name", ["..", ".", ".staging", "a/b", "../up", "", "x" * 65, "with space", "naïve", "/abs"]
)
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid model name"):
        validate_model_name(name)


@pytest.mark.parametrize("name", ["resnet50", "My-Model_v2.1", "x" * 64, "9"])
def test_valid_names(name: str) -> None:
    assert validate_model_name(name) == name


def test_manifest_round_trips_and_config_parses_with_triton(tmp_path: Path) -> None:
    result = export_model("MobileNetV2", tmp_path, max_batch_size=16, **SMALL)
    repo = Repository(tmp_path)
    assert repo.models() == ["mobilenetv2"]
    assert repo.manifest("mobilenetv2") == result.manifest
    assert result.manifest.max_batch_size == 16
    assert Manifest.from_dict(json.loads(json.dumps(result.manifest.to_dict()))) == result.manifest

    # Parsed by Triton's own protobuf definition, in a separate process: its generated
    # `inference` modules clash with ours when both load into one protobuf registry.
    code = """
import json, sys
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
DataType = model_config_pb2.DataType
config = text_format.Parse(open(sys.argv[1]).read(), model_config_pb2.ModelConfig())
print(json.dumps({
    "name": config.name, "platform": config.platform, "max_batch_size": config.max_batch_size,
    "inputs": [[t.name, DataType.Name(t.data_type), list(t.dims)] for t in config.input],
    "outputs": [[t.name, DataType.Name(t.data_type), list(t.dims)] for t in config.output],
    "dynamic_batching": config.HasField("dynamic_batching"),
}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "mobilenetv2" / "config.pbtxt")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == {
        "name": "mobilenetv2",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 16,
        "inputs": [["image", "TYPE_UINT8", [64, 64, 3]]],
        "outputs": [["logits", "TYPE_FP32", [1000]], ["probabilities", "TYPE_FP32", [1000]]],
        "dynamic_batching": True,
    }


def test_config_matches_tensor_specs() -> None:
    text = render_config("m", [TensorSpec("image", "FP32", (-1, 3, 4, 3))], [], 4)
    assert (
        'name: "image"' in text and "data_type: TYPE_FP32" in text and "dims: [ 3, 4, 3 ]" in text
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every visible file (not under .staging) with its content hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".staging" not in p.parts
    }


@pytest.mark.parametrize("moment", ["staging", "writing"])
def test_killed_export_leaves_the_repository_as_it_was(tmp_path: Path, moment: str) -> None:
    export_model("MobileNetV2", tmp_path, **SMALL)
    before = snapshot(tmp_path)
    zoo_exe = Path(sys.executable).with_name("zoo")
    process = subprocess.Popen(
        [str(zoo_exe), "export", "mobilenetv2", "-r", str(tmp_path), "--weights", "none"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    staging = tmp_path / ".staging"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        files = list(staging.rglob("model.onnx")) if staging.exists() else []
        if moment == "staging" and staging.exists() and any(staging.iterdir()):
            break
        if moment == "writing" and files and files[0].stat().st_size > 0:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the export finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.5)  # the export child dies with its parent (PR_SET_PDEATHSIG)

    assert snapshot(tmp_path) == before
    assert Repository(tmp_path).versions("mobilenetv2") == [1]
    # The next writer clears the dead writer's staging debris and carries on.
    assert export_model("MobileNetV2", tmp_path, **SMALL).version == 2
    assert list(staging.iterdir()) == []


def test_a_version_published_by_another_process_is_seen_at_once(tmp_path: Path) -> None:
    reader = Repository(tmp_path)
    writer = Repository(tmp_path)
    config = render_config("m", [], [], 8)
    writer.publish(fake_version(tmp_path, "a"), "m", config)
    assert reader.get("m").version == 1
    writer.publish(fake_version(tmp_path, "b"), "m", config)  # within the same clock tick
    assert reader.get("m").version == 2
    assert reader.versions("m") == [1, 2]


def test_publish_moves_the_staged_files_not_copies(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    config = render_config("m", [], [], 8)
    for expected_version in (1, 2):  # a new model, then a version of an existing one
        staged = fake_version(tmp_path, f"v{expected_version}")
        inode = (staged / "model.onnx").stat().st_ino
        published = repo.publish(staged, "m", config)
        assert published.version == expected_version
        assert published.model_file.stat().st_ino == inode  # renamed, the same file
        assert not staged.exists()


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_rename_exposes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    repo = Repository(tmp_path / "repo")
    config = render_config("m", [], [], 8)
    if existing:
        repo.publish(fake_version(tmp_path, "old"), "m", config)
    before = sorted(
        p.relative_to(repo.root) for p in repo.root.rglob("*") if ".staging" not in p.parts
    )
    real_rename = os.rename
    staging = repo.root / ".staging"

    def failing(src, dst, *args, **kwargs):
        if Path(dst).is_relative_to(repo.root) and not Path(dst).is_relative_to(staging):
            raise OSError(18, "Invalid cross-device link")  # e.g. staging on another mount
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="cross-device"):
        repo.publish(fake_version(tmp_path, "new"), "m", config)
    monkeypatch.setattr(os, "rename", real_rename)
    after = sorted(
        p.relative_to(repo.root) for p in repo.root.rglob("*") if ".staging" not in p.parts
    )
    assert after == before  # no version directory, no model directory, no partial file
    if existing:
        assert repo.versions("m") == [1]
    else:
        with pytest.raises(NotFound):
            repo.versions("m")


def test_out_of_range_version_directories_do_not_break_the_listing(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    config = render_config("m", [], [], 8)
    repo.publish(fake_version(tmp_path, "a"), "m", config)
    for name in ("9223372036854775808", "\u0661", "0", "9007199254740992"):  # made by hand
        (repo.root / "m" / name).mkdir()
        (repo.root / "m" / name / "model.onnx").write_text("x")
    assert repo.versions("m") == [1]
    assert repo.models() == ["m"]
    with pytest.raises(InvalidArgument, match="whole number from 1 to 9007199254740991"):
        repo.publish(fake_version(tmp_path, "b"), "m", config, version=2**63 - 1)
    top = repo.publish(fake_version(tmp_path, "c"), "m", config, version=2**53 - 1)
    with pytest.raises(InvalidArgument, match="has version 9007199254740991, the highest allowed"):
        repo.publish(fake_version(tmp_path, "d"), "m", config)
    assert repo.versions("m") == [1, top.version]


def test_the_version_below_the_highest_takes_the_highest(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    config = render_config("m", [], [], 8)
    repo.publish(fake_version(tmp_path, "a"), "m", config, version=2**53 - 2)
    assert repo.publish(fake_version(tmp_path, "b"), "m", config).version == 2**53 - 1


def test_a_pinned_version_whose_directory_exists_is_refused(tmp_path: Path) -> None:
    """An empty directory named 3 (made by hand, or left by a crash) is no version, but a
    rename onto it would succeed: publish refuses the number instead of filling it."""
    repo = Repository(tmp_path / "repo")
    config = render_config("m", [], [], 8)
    repo.publish(fake_version(tmp_path, "a"), "m", config)
    (repo.root / "m" / "3").mkdir()
    with pytest.raises(AlreadyExists, match="already has version 3"):
        repo.publish(fake_version(tmp_path, "b"), "m", config, version=3)
    assert list((repo.root / "m" / "3").iterdir()) == []


def test_a_repository_is_made_with_its_parents(tmp_path: Path) -> None:
    Repository(tmp_path / "a" / "b" / "repo")
    assert (tmp_path / "a" / "b" / "repo").is_dir()
    with pytest.raises(NotFound, match="does not exist"):
        Repository(tmp_path / "other", create=False)


def test_a_settled_model_directory_is_listed_from_the_cache(tmp_path: Path) -> None:
    """A model directory unchanged for over a second (every one, in a running deployment) is
    listed from the cache: a model.onnx removed by hand inside a version is not seen until
    the directory changes, as versions() documents; a publish changes it."""
    config = render_config("m", [], [], 8)
    Repository(tmp_path / "repo").publish(fake_version(tmp_path, "a"), "m", config)
    Repository(tmp_path / "repo").publish(fake_version(tmp_path, "b"), "m", config)
    model_dir = tmp_path / "repo" / "m"
    settled = time.time() - 5
    os.utime(model_dir, (settled, settled))
    repo = Repository(tmp_path / "repo")
    assert repo.versions("m") == [1, 2]
    (model_dir / "2" / "model.onnx").unlink()
    os.utime(model_dir, (settled, settled))  # as it was
    assert repo.versions("m") == [1, 2]  # from the cache
    os.utime(model_dir, (settled - 1, settled - 1))  # changed, and settled again
    assert repo.versions("m") == [1]
    # 2 is no version now, but its directory is not empty: the rename onto it fails
    assert repo.publish(fake_version(tmp_path, "c"), "m", config).version == 3
    assert repo.versions("m") == [1, 3]


def test_a_change_within_one_timestamp_tick_is_seen(tmp_path: Path) -> None:
    """On a file system with coarse timestamps a publish may leave the model directory's
    modification time as it was: a directory changed in the last second is listed afresh."""
    repo = Repository(tmp_path / "repo")
    config = render_config("m", [], [], 8)
    repo.publish(fake_version(tmp_path, "a"), "m", config)
    model_dir = repo.root / "m"
    tick = model_dir.stat().st_mtime_ns
    assert repo.versions("m") == [1]  # cached with this stamp
    Repository(repo.root).publish(fake_version(tmp_path, "b"), "m", config)
    os.utime(model_dir, ns=(tick, tick))  # the same tick
    assert repo.versions("m") == [1, 2]


def test_models_are_directories_with_versions(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    config = render_config("m", [], [], 8)
    with repo.stage() as staged:
        (staged / "model.onnx").write_text("onnx")
        repo.publish(staged, "m", config)
        (repo.root / "notes.txt").write_text("a file")
        (repo.root / "empty").mkdir()
        assert repo.models() == ["m"]  # not .staging, the file or the empty directory


def test_an_unknown_model_is_named_with_the_known_ones(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    with pytest.raises(NotFound, match=r"model 'x' is not in .* \(models: none\)"):
        repo.versions("x")
    repo.publish(fake_version(tmp_path, "a"), "m", render_config("m", [], [], 8))
    with pytest.raises(NotFound, match=r"model 'x' is not in .* \(models: m\)"):
        repo.versions("x")


def test_a_version_is_a_number_not_a_boolean(tmp_path: Path) -> None:
    repo = Repository(tmp_path / "repo")
    repo.publish(fake_version(tmp_path, "a"), "m", render_config("m", [], [], 8))
    with pytest.raises(InvalidArgument, match="received True"):
        repo.get("m", True)
