"""The runtime: lazy and eager loading, LRU unloading under a memory budget, providers."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from zoo.config import ServerConfig
from zoo.dataplane import DataPlane
from zoo.errors import FailedPrecondition, NotFound
from zoo.repository import Repository
from zoo.runtime import Runtime, choose_providers


@pytest.fixture
def three_models(served_repository: Path, tmp_path: Path) -> Repository:
    for name in ("a", "b", "c"):
        shutil.copytree(served_repository / "mobilenetv2", tmp_path / name)
    return Repository(tmp_path)


def test_models_load_lazily_and_lru_unloads_over_budget(three_models: Repository) -> None:
    size = (three_models.root / "a/1/model.onnx").stat().st_size
    runtime = Runtime(three_models, providers=("cpu",), memory_budget_bytes=int(2.5 * size))
    assert runtime.loaded() == []
    runtime.get("a")
    runtime.get("b")
    runtime.get("a")  # a is now the most recently used
    runtime.get("c")  # over budget: b goes
    assert sorted(m.name for m in runtime.loaded()) == ["a", "c"]
    assert runtime.state("b")[0].value == "UNAVAILABLE"


def test_cpu_is_always_the_last_provider() -> None:
    assert choose_providers(("cuda", "tensorrt"))[-1] == "CPUExecutionProvider"
    assert choose_providers(("cpu",)) == ["CPUExecutionProvider"]


def test_dataplane_eager_load_and_unknown_and_broken_models(served_repository: Path) -> None:
    config = ServerConfig(repository=served_repository, eager_models=("mobilenet*",))

    async def scenario() -> None:
        plane = DataPlane(config)
        await plane.start()
        assert plane.ready
        assert [m.name for m in plane.runtime.loaded()] == ["mobilenetv2"]
        with pytest.raises(NotFound):
            await plane.model("nosuch")
        with pytest.raises(FailedPrecondition, match="failed to load"):
            await plane.model("broken")
        index = {(e.name, e.state) for e in plane.repository_index()}
        assert ("broken", "FAILED") in index and ("mobilenetv2", "READY") in index
        model, out = await plane.infer(
            "mobilenetv2", None, {"image": np.zeros((2, 64, 64, 3), np.uint8)}
        )
        assert out["probabilities"].shape == (2, 1000) and model.version == 1
        await plane.close()

    asyncio.run(scenario())
