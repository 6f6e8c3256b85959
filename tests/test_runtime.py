"""The runtime: lazy and eager loading, LRU unloading under a memory budget, providers."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from zoo.config import ServerConfig
from zoo.errors import FailedPrecondition, NotFound
from zoo.repository import Repository
from zoo.serving.dataplane import DataPlane
from zoo.serving.runtime import OVERLAP_MEMORY_S, Runtime, choose_providers, cpu_cores


@pytest.fixture
def three_models(served_repository: Path, tmp_path: Path) -> Repository:
    for name in ("a", "b", "c"):
        shutil.copytree(served_repository / "mobilenetv2", tmp_path / name)
    return Repository(tmp_path)


def test_models_load_lazily_and_lru_unloads_over_budget(three_models: Repository) -> None:
    runtime = Runtime(three_models, providers=("cpu",))
    assert runtime.loaded() == []
    size = runtime.get("a").size_bytes  # the file once per session it has
    assert size % (three_models.root / "a/1/model.onnx").stat().st_size == 0
    runtime.memory_budget_bytes = int(2.5 * size)
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


class Recording:
    """A real session that notes its name in ``log`` on each run; ``hold`` pauses runs."""

    def __init__(self, session: object, name: str, log: list[str]) -> None:
        self.session, self.name, self.log = session, name, log
        self.hold = threading.Event()
        self.hold.set()

    def run(self, names: object, feeds: object) -> object:
        self.log.append(self.name)
        assert self.hold.wait(10)
        return self.session.run(names, feeds)  # type: ignore[attr-defined]


@pytest.mark.skipif(cpu_cores() < 2, reason="one core: one session per model")
def test_cpu_runs_use_all_cores_alone_and_one_core_each_side_by_side(
    served_repository: Path,
) -> None:
    model = Runtime(Repository(served_repository), providers=("cpu",)).get("mobilenetv2")
    assert model.single_thread_session is not None
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), np.uint8)
    feeds = {"image": x}
    # both sessions compute the same thing
    np.testing.assert_allclose(
        model.session.run(None, feeds)[0],
        model.single_thread_session.run(None, feeds)[0],
        rtol=1e-5,
        atol=1e-5,
    )
    log: list[str] = []
    model.session = Recording(model.session, "all cores", log)
    model.single_thread_session = Recording(model.single_thread_session, "one core", log)
    model.run(feeds)
    assert log == ["all cores"]
    # a run that starts while another computes takes one core
    model.session.hold.clear()
    lone = threading.Thread(target=model.run, args=(feeds,))
    lone.start()
    while log.count("all cores") < 2:
        time.sleep(0.001)
    model.run(feeds)
    model.session.hold.set()
    lone.join()
    assert log == ["all cores", "all cores", "one core"]
    # for a while after an overlap, lone runs stay on one core; parts of a split always do
    model.run(feeds)
    model.run(feeds, side_by_side=True)
    assert log[-2:] == ["one core", "one core"]
    model._overlapped_at -= OVERLAP_MEMORY_S
    model.run(feeds)
    assert log[-1] == "all cores"


def test_a_configured_thread_count_means_one_session(served_repository: Path) -> None:
    runtime = Runtime(Repository(served_repository), providers=("cpu",), intra_op_threads=1)
    model = runtime.get("mobilenetv2")
    assert model.single_thread_session is None
    assert model.size_bytes == (served_repository / "mobilenetv2/1/model.onnx").stat().st_size


def test_unloaded_models_give_up_their_batchers_and_threads(three_models: Repository) -> None:
    # a budget under one model: each load unloads the others (least recently used first)
    config = ServerConfig(repository=three_models.root, memory_budget_mb=1)
    x = np.zeros((1, 64, 64, 3), np.uint8)

    def instance_threads(name: str) -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith(f"{name}-1-")]

    async def scenario() -> None:
        plane = DataPlane(config)
        await plane.start()
        for name in ("a", "b", "a"):
            _, out = await plane.infer(name, None, {"image": x})
            assert out["probabilities"].shape == (1, 1000)
            assert [m.name for m in plane.runtime.loaded()] == [name]
        await asyncio.sleep(0.1)  # the stale batchers' close tasks
        assert instance_threads("b") == []
        assert len(instance_threads("a")) >= 1
        await plane.close()
        assert instance_threads("a") == []

    asyncio.run(scenario())
