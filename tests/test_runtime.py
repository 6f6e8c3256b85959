"""The runtime: lazy and eager loading, LRU unloading under a memory budget, providers."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from zoo.config import ServerConfig
from zoo.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from zoo.repository import Repository
from zoo.serving.dataplane import DataPlane
from zoo.serving.runtime import Runtime, choose_providers, cpu_cores


@pytest.fixture
def three_models(served_repository: Path, tmp_path: Path) -> Repository:
    for name in ("a", "b", "c"):
        shutil.copytree(served_repository / "mobilenetv2", tmp_path / name)
    return Repository(tmp_path)


def test_models_load_lazily_and_lru_unloads_over_budget(three_models: Repository) -> None:
    runtime = Runtime(three_models, ServerConfig(repository=three_models.root, providers=("cpu",)))
    assert runtime.loaded() == []
    size = runtime.get("a").size_bytes  # one session: the file once
    assert size == (three_models.root / "a/1/model.onnx").stat().st_size
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


def test_a_cpu_version_runs_overlapping_requests_on_one_thread_per_instance(
    served_repository: Path,
) -> None:
    config = ServerConfig(repository=served_repository, providers=("cpu",))
    model = Runtime(Repository(served_repository), config).get("mobilenetv2")
    plan = model.plan
    assert (plan.session_threads, plan.instances) == (1, cpu_cores())
    assert plan.spread == (cpu_cores() > 1)
    # on several cores a lone run has an all-core session sharing the weights
    assert plan.lone_threads == (cpu_cores() if cpu_cores() > 1 else 0)
    assert model.size_bytes == (served_repository / "mobilenetv2/1/model.onnx").stat().st_size
    # runs side by side give what a fresh default session gives, row for row
    import onnxruntime as ort

    reference = ort.InferenceSession(
        str(served_repository / "mobilenetv2/1/model.onnx"), providers=["CPUExecutionProvider"]
    )
    xs = [np.random.default_rng(i).integers(0, 256, (2, 64, 64, 3), np.uint8) for i in range(4)]
    results: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        for _ in range(5):
            results[i] = model.run({"image": xs[i]})["probabilities"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(xs):
        expected = reference.run(["probabilities"], {"image": x})[0]
        np.testing.assert_allclose(results[i], expected, rtol=1e-5, atol=1e-6)


def test_configured_threads_and_instances_make_the_plan(served_repository: Path) -> None:
    config = ServerConfig(
        repository=served_repository,
        providers=("cpu",),
        intra_op_threads=2,
        model_instances=3,
        max_batch_size=4,
    )
    model = Runtime(Repository(served_repository), config).get("mobilenetv2")
    assert (model.plan.session_threads, model.plan.instances) == (2, 3)
    assert model.plan.max_batch_size == 4
    assert model.session.get_session_options().intra_op_num_threads == 2


def test_a_newer_version_replaces_the_older_and_its_requests_get_unavailable(
    served_repository: Path, tmp_path: Path
) -> None:
    shutil.copytree(served_repository / "mobilenetv2", tmp_path / "m")
    repository = Repository(tmp_path)
    config = ServerConfig(repository=tmp_path, providers=("cpu",))
    x = np.zeros((1, 64, 64, 3), np.uint8)

    async def scenario() -> None:
        plane = DataPlane(config, repository)
        await plane.start()
        old, _ = await plane.infer("m", None, {"image": x})
        assert old.version == 1
        shutil.copytree(tmp_path / "m/1", tmp_path / "m/2")
        new, _ = await plane.infer("m", None, {"image": x})  # the newest version now
        assert new.version == 2 and old.closed
        assert [(m.name, m.version) for m in plane.runtime.loaded()] == [("m", 2)]
        with pytest.raises(Unavailable, match="unloaded; retry"):
            await old.submit(x)  # a request that held the old version
        again, _ = await plane.infer("m", 1, {"image": x})  # asked for by number: reloaded
        assert again.version == 1 and not again.closed and again is not old
        await plane.close()

    asyncio.run(scenario())


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


def test_priorities_are_checked_against_the_levels_and_default_to_a_level() -> None:
    from zoo.serving.runtime import ServingPlan

    def plan(**settings: object) -> ServingPlan:
        config = ServerConfig(repository=Path("."), **settings)  # type: ignore[arg-type]
        return ServingPlan.for_model(
            config, on_cpu=True, session_threads=1, model_max_batch=8, row_seconds=0.01
        )

    assert plan().queue_position(7) == 0  # no levels: priorities are ignored
    levels = plan(priority_levels=3)
    assert [levels.queue_position(p) for p in (0, 1, 2, 3)] == [3, 1, 2, 3]  # 0: the lowest
    assert plan(priority_levels=3, default_priority_level=2).queue_position(0) == 2
    with pytest.raises(InvalidArgument, match=r"priority must be between 0 .* and 3.*received 4"):
        levels.queue_position(4)
    with pytest.raises(InvalidArgument, match="default_priority_level must be between 0 and"):
        plan(priority_levels=1, default_priority_level=2)


def test_the_default_version_follows_stable_and_labelled_versions_stay(tmp_path: Path) -> None:
    from versions import onnxruntime_logits, pixels, publish_versions

    repository = Repository(tmp_path)
    files = publish_versions(repository, "twin", 3)
    runtime = Runtime(repository, ServerConfig(repository=tmp_path, providers=("cpu",)))
    image = pixels()

    def answer(version: int | str | None = None) -> tuple[int, np.ndarray]:
        model = runtime.get("twin", version)
        return model.version, model.run({"image": image})["logits"]

    def loaded() -> list[int]:
        return sorted(m.version for m in runtime.loaded())

    assert answer()[0] == 3  # no labels: the newest
    assert answer(1)[0] == 1
    assert answer()[0] == 3 and loaded() == [1, 3]
    repository.set_label("twin", "stable", 1)
    repository.set_label("twin", "candidate", 3)
    version, logits = answer()  # the next request follows the promote, no restart
    assert version == 1
    np.testing.assert_allclose(logits, onnxruntime_logits(files[0], image), rtol=1e-5)
    assert loaded() == [1, 3]  # already loaded: nothing dropped
    assert answer(2)[0] == 2 and loaded() == [1, 2, 3]
    repository.set_label("twin", "stable", 2)
    runtime.unload("twin")
    assert answer()[0] == 2
    assert answer(1)[0] == 1 and answer("candidate")[0] == 3
    repository.set_label("twin", "stable", 1)
    assert answer()[0] == 1  # loaded already: the others stay until a default load
    runtime.unload("twin")
    answer(2), answer(3)
    assert answer()[0] == 1  # loading the default drops 2 (no label) but keeps the candidate
    assert loaded() == [1, 3]


def test_the_memory_budget_drops_unlabelled_versions_first(tmp_path: Path) -> None:
    from versions import publish_versions

    repository = Repository(tmp_path)
    publish_versions(repository, "twin", 3)
    runtime = Runtime(repository, ServerConfig(repository=tmp_path, providers=("cpu",)))
    repository.set_label("twin", "stable", 1)
    size = runtime.get("twin").size_bytes
    runtime.memory_budget_bytes = int(2.5 * size)
    runtime.get("twin", 3)
    runtime.get("twin", 2)  # over budget: the least recently used is stable, but 3 goes
    assert sorted(m.version for m in runtime.loaded()) == [1, 2]
    assert runtime.state("twin", "stable")[0].value == "READY"
