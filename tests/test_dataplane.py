"""The data plane in-process (no server): the model listing joined with the catalog, the
repository index, reloads, evaluations and Classify's labels, on copies of the served models
with their zoo.json edited the way fine-tuned, newer or damaged versions leave it."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from zoo.config import ServerConfig
from zoo.errors import InvalidArgument
from zoo.repository import Repository
from zoo.serving.dataplane import DataPlane


def _copy(served: Path, root: Path, source: str, name: str, version: int = 1,
          edit: Callable[[dict[str, Any]], None] | None = None) -> Path:  # fmt: skip
    """``served``'s ``source/1`` as ``name/version`` in ``root``, its zoo.json edited."""
    target = root / name / str(version)
    shutil.copytree(served / source / "1", target)
    manifest = target / "zoo.json"
    data = json.loads(manifest.read_text())
    data["model"], data["version"] = name, version
    if edit is not None:
        edit(data)
    manifest.write_text(json.dumps(data))
    return target


def _catalog(name: str | None) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["source"]["catalog_model"] = name
        data["labels"] = []  # a fine-tune without class names: the count comes from the spec

    return edit


@pytest.fixture
def repository(served_repository: Path, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for name in ("mobilenetv2", "tiny-f32", "broken"):
        shutil.copytree(served_repository / name, root / name)
    for version in (1, 2):  # as a fine-tune of ResNet50 leaves it, twice
        _copy(served_repository, root, "tiny-f32", "digits-net", version, _catalog("ResNet50"))
    _copy(served_repository, root, "tiny-f32", "future-net", edit=_catalog("NoSuchNet2030"))
    (_copy(served_repository, root, "tiny-f32", "bare") / "zoo.json").unlink()
    return root


def run(scenario: Callable[[DataPlane], Any], root: Path, **config: Any) -> Any:
    async def main() -> Any:
        plane = DataPlane(ServerConfig(repository=root, **config))
        try:
            return await scenario(plane)
        finally:
            await plane.close()

    return asyncio.run(main())


def test_the_listing_joins_versions_with_the_catalog(repository: Path) -> None:
    Repository(repository).set_label("digits-net", "stable", 1)
    (repository / "future-net" / "labels.json").write_text("{ not json")

    async def scenario(plane: DataPlane) -> Any:
        await plane.model("mobilenetv2")
        return {s.name: s for s in plane.list_models()}, plane.list_models("resnet50")

    listed, resnet = run(scenario, repository)
    assert len(listed) == 40 + 5  # the catalog, and the served models it does not name
    tuned = listed["digits-net"]
    assert (tuned.catalog_model, tuned.spec.name, tuned.spec.family) == (
        "ResNet50", "ResNet50", "resnet",
    )  # fmt: skip
    assert tuned.versions == (1, 2) and tuned.labels == (("stable", 1),)
    assert tuned.input_shape == (64, 64, 3)  # the manifest's, not ResNet50's 224
    assert tuned.num_classes == 1000  # no class names in the manifest: the spec's count
    # a catalog model from a newer zoo: listed as it is, without catalog metadata
    future = listed["future-net"]
    assert (future.catalog_model, future.spec, future.labels) == ("NoSuchNet2030", None, ())
    bare = listed["bare"]  # no zoo.json: versions, nothing else
    assert (bare.catalog_model, bare.versions, bare.num_classes) == (None, (1,), 0)
    loaded = listed["mobilenetv2"]
    assert (loaded.loaded_versions, loaded.provider) == ((1,), "CPUExecutionProvider")
    assert (listed["tiny-f32"].loaded_versions, listed["tiny-f32"].provider) == ((), "")
    catalog_only = listed["ResNet50"]
    assert (catalog_only.versions, catalog_only.input_shape) == ((), (224, 224, 3))
    # a pattern matches a model's name or its catalog model's
    assert sorted(s.name for s in resnet) == ["ResNet50", "digits-net"]


def test_label_changes_are_counted_past_an_unreadable_labels_file(repository: Path) -> None:
    labels = Repository(repository)
    labels.set_label("digits-net", "stable", 1)
    labels.set_label("digits-net", "stable", 2)
    labels.rollback("digits-net")
    labels.set_label("mobilenetv2", "canary", 1)
    (repository / "future-net" / "labels.json").write_text("{ not json")

    async def scenario(plane: DataPlane) -> Any:
        return plane.label_changes()

    assert run(scenario, repository) == {
        ("digits-net", "stable", "promote"): 2,
        ("digits-net", "stable", "rollback"): 1,
        ("mobilenetv2", "canary", "promote"): 1,
    }


def test_the_repository_index_and_its_ready_only_view(repository: Path) -> None:
    async def scenario(plane: DataPlane) -> Any:
        assert not plane.ready
        await plane.start()  # eager "*": one broken model must not keep the others down
        assert plane.ready
        await plane.unload("tiny-f32")
        await plane.model("digits-net", 2)
        full = [(e.name, e.version, e.state) for e in plane.repository_index()]
        ready = [(e.name, e.version, e.state) for e in plane.repository_index(ready_only=True)]
        return full, ready

    full, ready = run(scenario, repository, eager_models=("*",))
    assert [(n, v) for n, v, _ in full] == [
        ("bare", 1), ("broken", 1), ("digits-net", 1), ("digits-net", 2), ("future-net", 1),
        ("mobilenetv2", 1), ("tiny-f32", 1),
    ]  # fmt: skip
    assert ready == [
        ("bare", 1, "READY"), ("digits-net", 2, "READY"), ("future-net", 1, "READY"),
        ("mobilenetv2", 1, "READY"),
    ]  # fmt: skip
    states = {(n, v): s for n, v, s in full}
    assert states[("broken", 1)] == "FAILED" and states[("tiny-f32", 1)] != "READY"
    assert states[("digits-net", 1)] != "READY"  # stable is 2 here: the newest


def test_loading_a_loaded_model_reloads_it(repository: Path) -> None:
    async def scenario(plane: DataPlane) -> Any:
        first = await plane.model("tiny-f32")
        again = await plane.load("tiny-f32")
        x = np.zeros((1, 64, 64, 3), np.float32)
        served, out = await plane.infer("tiny-f32", None, {"image": x})
        return again is not first, first.closed, again.closed, served is again, out

    new, first_closed, again_closed, served_by_new, out = run(scenario, repository)
    assert (new, first_closed, again_closed, served_by_new) == (True, True, False, True)
    assert out["logits"].shape == (1, 1000)


def test_an_evaluation_of_a_version_without_a_readable_report_is_none(repository: Path) -> None:
    (repository / "future-net" / "1" / "zoo.json").write_text("{ not json")

    async def scenario(plane: DataPlane) -> Any:
        return [plane.evaluation(name, None) for name in ("bare", "future-net", "digits-net")]

    assert run(scenario, repository) == [(1, None), (1, None), (2, None)]


def _png() -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_classify_names_classes_beyond_the_labels_by_index(
    served_repository: Path, tmp_path: Path
) -> None:
    root = tmp_path / "repo"

    def shorter(data: dict[str, Any]) -> None:
        data["labels"] = data["labels"][:999]

    _copy(served_repository, root, "mobilenetv2", "short", edit=shorter)

    async def scenario(plane: DataPlane) -> Any:
        _, results = await plane.classify("short", None, [_png()], top_k=1000)
        return results

    (predictions,) = run(scenario, root)
    by_index = {p.index: p.label for p in predictions}
    assert by_index[999] == "999" and by_index[0] != "0"


def test_classify_takes_exactly_the_request_limit(served_repository: Path, tmp_path: Path) -> None:
    from zoo.serving.dataplane import MAX_REQUEST_BATCH

    root = tmp_path / "repo"
    shutil.copytree(served_repository / "mobilenetv2", root / "mobilenetv2")
    image = _png()

    async def scenario(plane: DataPlane) -> Any:
        _, results = await plane.classify("mobilenetv2", None, [image] * MAX_REQUEST_BATCH, 1)
        over = f"{MAX_REQUEST_BATCH + 1} images in one request; the limit is"
        with pytest.raises(InvalidArgument, match=over):
            await plane.classify("mobilenetv2", None, [image] * (MAX_REQUEST_BATCH + 1), 1)
        return results

    results = run(scenario, root)
    assert len(results) == MAX_REQUEST_BATCH
    assert len({r[0].index for r in results}) == 1  # the same image, the same answer
