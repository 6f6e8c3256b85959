"""The serving registry: one owner per loaded model version.

A ``LoadedModel`` owns everything one served version needs: its ONNX Runtime session, its
thread plan (``ServingPlan``, fixed at load) and its dynamic batcher. The ``Runtime`` holds
them, loads a version on first use or eagerly (warmed up), and unloads it in one place
(``LoadedModel.close``), whether by request, under the memory budget (least recently used
first, versions no label points at before labelled ones) or because the model's default
version (``stable``, else the newest; ``zoo.labels``) was loaded and the older one is neither
the default nor labelled: after a promote the next request without a version loads the new
``stable`` and the one it replaced goes, unless a label such as ``candidate`` keeps it. The
batcher stops taking requests (they get UNAVAILABLE, retry), queued ones fail the same way,
and a batch computing finishes.
Execution providers are chosen once at start-up from what this ONNX Runtime build offers and
what the configuration allows: TensorRT, then CUDA, then CPU.

On a multi-core CPU (threads left to us), a version has two sessions that share one copy of
the weights (``zoo.serving.sessions``): a lone run computes on every core, runs that overlap
compute on one thread each, called side by side by one instance thread per core (ONNX
Runtime's Run is thread-safe). A multi-row request on an idle model is cut into one part per
instance, so it still uses every core. Two default sessions held every model twice (6.0 GB
against 3.05 GB for the 13 seed models); one single-thread session saved that but computed a
lone request on one core (0.38 x in-process ONNX Runtime on MobileNetV2 at one client). The
shared pair keeps the lone-run speed in about the memory of one default session (measured
side by side with ``python -m bench.sessions``, docs/benchmarks/serve.md).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo.config import ServerConfig, cpu_quota, usable_cpus
from zoo.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, ZooError
from zoo.manifest import DEFAULT_MAX_BATCH, Manifest, ManifestError
from zoo.repository import ModelVersion, Repository
from zoo.serving.batching import DynamicBatcher
from zoo.serving.sessions import Sessions, open_shared, release_free_memory
from zoo.serving.stats import ModelStats, StatsRegistry

log = logging.getLogger("zoo.serving.runtime")

GPU_INSTANCES = 2  # the "auto" instance count on a GPU; on a CPU, one per core
CPU_BATCH_SECONDS, CPU_BATCH_MAX = 0.004, 8  # the "auto" CPU batch: rows that fit in 4 ms

ORT_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
# ONNX type strings -> (numpy dtype, v2 protocol datatype)
ONNX_TYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "tensor(uint8)": (np.dtype(np.uint8), "UINT8"),
    "tensor(float)": (np.dtype(np.float32), "FP32"),
    "tensor(float16)": (np.dtype(np.float16), "FP16"),
    "tensor(int64)": (np.dtype(np.int64), "INT64"),
    "tensor(int32)": (np.dtype(np.int32), "INT32"),
}


class ModelState(enum.StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"
    FAILED = "FAILED"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str  # v2 protocol name: UINT8, FP32, ...
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # -1 for dynamic dimensions, batch first


@dataclass(frozen=True)
class ServingPlan:
    """How one loaded version computes; fixed when it is loaded.

    The CPU defaults were measured on 2 cores (docs/benchmarks/serve.md): one instance per
    core, each run on one thread. There a batch saves only the fixed cost of a call, and it
    answers all its requests at once, which raises the p99 in proportion to its length; so on
    a CPU rows are batched only while a batch stays short (rows that fit in 4 ms). On a GPU
    large batches are the point: the model's own limit.
    """

    session_threads: int  # ONNX Runtime intra-op threads per run; 0: its default
    instances: int  # runs computing at once (the batcher's threads)
    max_batch_size: int  # rows per run
    batching: bool
    spread: bool  # cut a multi-row request on an idle model into one part per instance
    max_queue_delay_s: float
    max_queue_size: int
    queue_timeout_s: float
    priority_levels: int = 0  # 0: priorities ignored
    default_priority_level: int = 0  # 0: the lowest level
    lone_threads: int = 0  # threads of a run that has the version to itself; 0: session_threads

    @classmethod
    def for_model(
        cls,
        config: ServerConfig,
        *,
        on_cpu: bool,
        session_threads: int,
        model_max_batch: int,
        row_seconds: float,
        lone_threads: int = 0,
    ) -> ServingPlan:
        """The plan of a version whose session computes each run on ``session_threads``
        threads (0: ONNX Runtime's default, every core), as the runtime opened it, and a lone
        run on ``lone_threads`` (0: no session of its own)."""
        instances = config.model_instances or (
            max(1, cpu_cores() // (session_threads or cpu_cores())) if on_cpu else GPU_INSTANCES
        )
        cap = config.max_batch_size or (cpu_batch_size(row_seconds) if on_cpu else model_max_batch)
        return cls(
            session_threads=session_threads,
            instances=instances,
            max_batch_size=max(1, min(model_max_batch, cap)),
            batching=config.dynamic_batching,
            spread=on_cpu and instances > 1,
            max_queue_delay_s=config.max_queue_delay_us / 1e6,
            max_queue_size=config.max_queue_size,
            queue_timeout_s=config.queue_timeout_ms / 1000,
            priority_levels=config.priority_levels,
            default_priority_level=config.default_priority_level or config.priority_levels,
            lone_threads=lone_threads,
        )

    def queue_position(self, priority: int) -> int:
        """The queue level of a request's ``priority`` (1 is the highest; 0: the default)."""
        if not self.priority_levels:
            return 0
        if not 0 <= priority <= self.priority_levels:
            raise InvalidArgument(
                f"priority must be between 0 (the default) and {self.priority_levels}, the "
                f"priority levels of this server; received {priority}"
            )
        return priority or self.default_priority_level


@dataclass(eq=False)
class LoadedModel:
    """One served version: its sessions, its plan and its batcher, closed in one place."""

    name: str
    version: int
    sessions: Sessions | None  # None once closed
    provider: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    manifest: Manifest | None  # None for an ONNX file placed without one
    max_batch_size: int  # the model's own limit (its manifest), whatever the plan batches
    size_bytes: int
    plan: ServingPlan
    stats: ModelStats
    row_seconds: float = 0.0  # one row's compute at warm-up
    last_used: float = field(default_factory=time.monotonic)
    _batcher: DynamicBatcher | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels) if self.manifest else []

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def session(self) -> Any:
        """The session overlapping runs use (the only one unless the weights are shared)."""
        if self.sessions is None:
            raise Unavailable(f"model {self.name} version {self.version} was unloaded; retry")
        return self.sessions.overlap

    def run(
        self,
        feeds: dict[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        side_by_side: bool = False,
    ) -> dict[str, np.ndarray]:
        """One ONNX Runtime call, on the caller's thread; ``side_by_side`` says the caller
        starts others with it (so it computes on one thread)."""
        sessions = self.sessions  # held for the call: closing cannot free it mid-run
        if sessions is None:
            raise Unavailable(f"model {self.name} version {self.version} was unloaded; retry")
        names = list(outputs) if outputs else [o.name for o in self.outputs]
        results = sessions.run(names, feeds, side_by_side=side_by_side)
        return dict(zip(names, results, strict=True))

    async def submit(
        self, rows: np.ndarray, deadline: float | None = None, priority: int = 0
    ) -> dict[str, np.ndarray]:
        """Compute ``rows`` through this version's batcher (created on first use)."""
        level = self.plan.queue_position(priority)
        return await self.batcher().submit(rows, deadline, level)

    def batcher(self) -> DynamicBatcher:
        """This version's batcher; call on the event loop. UNAVAILABLE once closed."""
        with self._lock:
            if self._closed:
                raise Unavailable(f"model {self.name} version {self.version} was unloaded; retry")
            if self._batcher is None:
                self._batcher = self._new_batcher()
            return self._batcher

    def _new_batcher(self) -> DynamicBatcher:
        names = [o.name for o in self.outputs]
        feed = self.input.name

        def run(rows: np.ndarray, side_by_side: bool) -> dict[str, np.ndarray]:
            return self.run({feed: rows}, names, side_by_side=side_by_side)

        plan = self.plan
        batcher = DynamicBatcher(
            run,
            self.stats,
            max_batch_size=plan.max_batch_size,
            max_queue_delay_s=plan.max_queue_delay_s,
            instances=plan.instances,
            enabled=plan.batching,
            spread=plan.spread,
            name=f"{self.name}-{self.version}",
            max_queue_size=plan.max_queue_size,
            queue_timeout_s=plan.queue_timeout_s,
            row_seconds=self.row_seconds,
        )
        log.info(
            "model %s version %s: %s, %d instance(s) of %s thread(s)%s; one row took %.1f ms "
            "at warm-up",
            self.name,
            self.version,
            f"batches of up to {plan.max_batch_size} rows"
            if plan.batching and plan.max_batch_size > 1
            else "one request per run (no batching)",
            plan.instances,
            plan.session_threads or "ONNX Runtime's default",
            f", a lone run on {plan.lone_threads} (weights shared)" if plan.lone_threads else "",
            self.row_seconds * 1000,
        )
        return batcher

    def close(self) -> None:
        """Stop serving; any thread. Queued requests fail UNAVAILABLE, a computing batch ends;
        the sessions and their weights are freed when the last run on them returns."""
        with self._lock:
            self._closed = True
            batcher = self._batcher
            self.sessions = None
        if batcher is not None:
            batcher.stop()

    async def wait_closed(self) -> None:
        """``close`` and wait for the instance threads to end."""
        self.close()
        if self._batcher is not None:
            await self._batcher.close()


def cpu_batch_size(row_seconds: float) -> int:
    """The auto CPU batch limit: as many rows as one instance computes in CPU_BATCH_SECONDS."""
    if row_seconds <= 0:
        return 1
    return max(1, min(CPU_BATCH_MAX, int(CPU_BATCH_SECONDS / row_seconds)))


def cpu_cores() -> int:
    """Cores this process may use: its affinity (a container's cpuset), capped by its CPU quota
    (a Kubernetes CPU limit), read at each call since a pod's limit can be resized in place."""
    return usable_cpus(len(os.sched_getaffinity(0)), cpu_quota())


def choose_providers(allowed: Sequence[str]) -> list[str]:
    """ONNX Runtime provider names to ask for, best first, always ending with CPU."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen = [ORT_PROVIDERS[p] for p in allowed if ORT_PROVIDERS[p] in available]
    missing = [p for p in allowed if ORT_PROVIDERS[p] not in available]
    if missing and missing != ["cpu"]:
        log.info("execution providers not available in this build: %s", ", ".join(missing))
    if ORT_PROVIDERS["cpu"] not in chosen:
        chosen.append(ORT_PROVIDERS["cpu"])
    return chosen


def _tensor_infos(nodes: Sequence[Any]) -> tuple[TensorInfo, ...]:
    infos = []
    for node in nodes:
        dtype, datatype = ONNX_TYPES.get(node.type, ONNX_TYPES["tensor(float)"])
        shape = tuple(d if isinstance(d, int) else -1 for d in node.shape)
        infos.append(TensorInfo(node.name, datatype, dtype, shape))
    return tuple(infos)


class Runtime:
    """The registry of loaded versions of one repository; thread-safe."""

    def __init__(self, repository: Repository, config: ServerConfig) -> None:
        self.repository = repository
        self.config = config
        self.providers = choose_providers(config.providers)
        self.memory_budget_bytes = config.memory_budget_mb * 2**20
        self.stats = StatsRegistry()
        self._loaded: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._failed: dict[tuple[str, int], str] = {}
        self._lock = threading.RLock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        log.info("execution providers in order of preference: %s", ", ".join(self.providers))

    # -- state ---------------------------------------------------------------------
    def state(self, name: str, version: int | str | None = None) -> tuple[ModelState, str]:
        """(state, reason) of a version; an unknown model raises NotFound."""
        mv = self.repository.get(name, version)
        key = (mv.model, mv.version)
        with self._lock:
            if key in self._loaded:
                return ModelState.READY, ""
            if key in self._failed:
                return ModelState.FAILED, self._failed[key]
            if key in self._loading and self._loading[key].locked():
                return ModelState.LOADING, ""
        return ModelState.UNAVAILABLE, "not loaded"

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._loaded.values())

    # -- loading -------------------------------------------------------------------
    def ready(self, name: str, version: int | str | None = None) -> LoadedModel | None:
        """The model if it is loaded, else None; never blocks on a load."""
        mv = self.repository.get(name, version)
        with self._lock:
            return self._touch((mv.model, mv.version))

    def _touch(self, key: tuple[str, int]) -> LoadedModel | None:
        """The loaded model of ``key``, marked most recently used; call under the lock."""
        model = self._loaded.get(key)
        if model is not None:
            model.last_used = time.monotonic()
            self._loaded.move_to_end(key)
        return model

    def get(self, name: str, version: int | str | None = None) -> LoadedModel:
        """The ready model, loading it first if needed (blocking; call from a thread).

        ``version``: a number, a label, or None for the default version (``stable``, else
        the newest), resolved again on every call so that a promote applies to the next one.
        """
        mv = self.repository.get(name, version)
        key = (mv.model, mv.version)
        with self._lock:
            model = self._touch(key)
            if model is not None:
                return model
            lock = self._loading.setdefault(key, threading.Lock())
        with lock:  # one loader per version; others wait for it
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            return self._load(mv, default=version is None)

    def _load(self, mv: ModelVersion, *, default: bool) -> LoadedModel:
        import onnxruntime as ort

        key = (mv.model, mv.version)
        started = time.perf_counter()
        manifest: Manifest | None = None
        try:
            manifest = mv.manifest()
        except (NotFound, ManifestError) as e:
            log.warning("%s version %s: no readable zoo.json (%s)", mv.model, mv.version, e)
        model_max_batch = manifest.max_batch_size if manifest else DEFAULT_MAX_BATCH
        on_cpu = self.providers[0] == ORT_PROVIDERS["cpu"]
        threads = self.config.intra_op_threads or (1 if on_cpu else 0)
        cores = cpu_cores()
        sessions: Sessions | None = None
        try:
            if on_cpu and not self.config.intra_op_threads and cores > 1:
                sessions = self._open_shared(mv, cores)
            if sessions is None:
                options = ort.SessionOptions()
                if threads:
                    options.intra_op_num_threads = threads
                sessions = Sessions(
                    ort.InferenceSession(
                        str(mv.model_file), sess_options=options, providers=self.providers
                    )
                )
        except Exception as e:  # ORT raises several unrelated types for a bad file
            reason = f"ONNX Runtime could not load {mv.model_file}: {str(e).strip()[:300]}"
            with self._lock:
                self._failed[key] = reason
            log.error("model %s version %s failed to load: %s", mv.model, mv.version, reason)
            raise FailedPrecondition(
                f"model {mv.model!r} version {mv.version} failed to load: {reason}"
            ) from None
        session = sessions.overlap
        inputs = _tensor_infos(session.get_inputs())
        if len(inputs) != 1:
            raise FailedPrecondition(f"model {mv.model!r} has {len(inputs)} inputs; expected 1")
        provider = session.get_providers()[0]
        if sessions.lone is not None:
            _warm_up(sessions.lone, inputs[0])
        row_seconds = _warm_up(session, inputs[0])  # the session runs under load use
        model = LoadedModel(
            name=mv.model,
            version=mv.version,
            sessions=sessions,
            provider=provider,
            inputs=inputs,
            outputs=_tensor_infos(session.get_outputs()),
            manifest=manifest,
            max_batch_size=model_max_batch,
            size_bytes=mv.model_file.stat().st_size,
            plan=ServingPlan.for_model(
                self.config,
                on_cpu=provider == ORT_PROVIDERS["cpu"],
                session_threads=threads,
                model_max_batch=model_max_batch,
                row_seconds=row_seconds,
                lone_threads=cores if sessions.shared else 0,
            ),
            stats=self.stats.get(*key),
            row_seconds=row_seconds,
        )
        release_free_memory()  # what loading parsed and optimized, freed, goes back
        with self._lock:
            self._failed.pop(key, None)
            self._loaded[key] = model
            if default:  # the default replaces the others but labelled ones (Triton's policy)
                kept = self._labelled(mv.model)
                for old in [
                    k for k in self._loaded if k[0] == mv.model and k != key and k[1] not in kept
                ]:
                    self._drop(old, f"version {mv.version}, the default, was loaded")
            self._enforce_budget(keep=key)
        log.info(
            "loaded model %s version %s on %s in %.2f s",
            mv.model,
            mv.version,
            model.provider,
            time.perf_counter() - started,
        )
        return model

    def _open_shared(self, mv: ModelVersion, cores: int) -> Sessions | None:
        """The all-core and single-thread sessions sharing their weights, or None (the caller
        opens one session) where dense layers hold most of the weights or the pair cannot be
        made: the `onnx` package missing, a model over protobuf's 2 GB, no room in /tmp."""
        try:
            return open_shared(mv.model_file, cores)
        except Exception as e:  # any failure here leaves the plain session to try
            log.warning(
                "model %s version %s: no shared all-core session (%s); lone runs compute "
                "on one thread",
                mv.model,
                mv.version,
                str(e).strip()[:200],
            )
            release_free_memory()
            return None

    def _drop(self, key: tuple[str, int], why: str) -> LoadedModel:
        """Remove and close one loaded version; call under the lock."""
        model = self._loaded.pop(key)
        model.close()
        log.info("unloaded model %s version %s (%s)", key[0], key[1], why)
        return model

    def _labelled(self, name: str) -> set[int]:
        """Versions of ``name`` a label points at, and its default version."""
        try:
            labels = self.repository.labels(name)
            return {*labels.labels.values(), self.repository.default_version(name)}
        except ZooError as e:  # an unreadable labels file must not stop serving
            log.warning("model %s: labels not readable (%s)", name, e)
            return set()

    def _enforce_budget(self, keep: tuple[str, int]) -> None:
        """Drop least recently used versions until the loaded ones fit the budget: first the
        versions no label points at, then, only if that is not enough, labelled ones."""
        if not self.memory_budget_bytes:
            return
        total = sum(m.size_bytes for m in self._loaded.values())
        kept = {n: self._labelled(n) for n in {k[0] for k in self._loaded}}
        unlabelled = [k for k in self._loaded if k[1] not in kept[k[0]]]
        labelled = [k for k in self._loaded if k[1] in kept[k[0]]]
        why = f"least recently used; memory budget {self.memory_budget_bytes // 2**20} MB"
        for key in [*unlabelled, *labelled]:
            if total <= self.memory_budget_bytes:
                break
            if key == keep:
                continue
            total -= self._drop(key, why).size_bytes

    def retire(self, name: str) -> None:
        """After a label change: drop the loaded versions of ``name`` that are now neither its
        default nor labelled, if the default is loaded (else a request still loads it first)."""
        try:
            default = self.repository.default_version(name)
        except ZooError:  # a label at a removed version: requests say so; keep what is loaded
            return
        with self._lock:
            if (name, default) not in self._loaded:
                return
            kept = self._labelled(name)
            for key in [k for k in self._loaded if k[0] == name and k[1] not in kept]:
                self._drop(key, f"version {default} is the default now")

    def unload(self, name: str) -> list[LoadedModel]:
        """Drop every loaded version of ``name``; returns the versions dropped."""
        if name not in self.repository.models():
            raise NotFound(f"model {name!r} is not in the repository")
        with self._lock:
            dropped = [self._drop(k, "on request") for k in list(self._loaded) if k[0] == name]
            for key in [k for k in self._failed if k[0] == name]:
                del self._failed[key]
        return dropped

    async def close(self) -> None:
        """Unload everything and wait for the instance threads (server shutdown)."""
        with self._lock:
            models = list(self._loaded.values())
            self._loaded.clear()
        await asyncio.gather(*(m.wait_closed() for m in models))


def _warm_up(session: Any, info: TensorInfo) -> float:
    """Two runs of one zero row (the first is slow); returns the second's seconds."""
    shape = tuple(1 if d < 0 else d for d in info.shape)
    feeds = {info.name: np.zeros(shape, info.dtype)}
    session.run(None, feeds)
    started = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - started
