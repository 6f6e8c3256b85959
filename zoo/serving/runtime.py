"""ONNX Runtime sessions for the versions in a model repository.

One session per (model, version), created on first use or eagerly, warmed up on load,
and dropped on request or, least recently used first, when the loaded models' size passes
the memory budget. Execution providers are chosen once at start-up from what this ONNX
Runtime build offers and what the configuration allows: TensorRT, then CUDA, then CPU.

On a multi-core CPU with the thread count left to us, a version gets two sessions: one whose
runs use every core, for a run that has the model to itself, and one that computes on its
caller's thread only, for runs that overlap others. Measured on 2 cores
(docs/benchmarks/serve.md): a lone batch-1 MobileNetV2 run takes 2.2 ms with both cores
against 3.6 ms with one, while under concurrent load one-thread runs side by side deliver
10-20% more images per second than all-core runs, which wait on each other's thread pool.
"""

from __future__ import annotations

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

from zoo.config import cpu_quota, usable_cpus
from zoo.errors import FailedPrecondition, NotFound
from zoo.repository import ModelVersion, Repository

log = logging.getLogger("zoo.serving.runtime")

# After runs of a model overlapped, its runs keep to one thread for this long: under steady
# concurrent load a momentarily lone run must not grab every core as the others arrive.
OVERLAP_MEMORY_S = 1.0

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


@dataclass
class LoadedModel:
    """A ready session and what callers need to feed it.

    ``single_thread_session`` (CPU only, else None) is the same model in a session that
    computes on its caller's thread; ``run`` uses it for runs that overlap others.
    """

    name: str
    version: int
    session: Any
    provider: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    manifest: dict[str, Any]
    max_batch_size: int
    size_bytes: int
    last_used: float = field(default_factory=time.monotonic)
    single_thread_session: Any = None
    row_seconds: float = 0.0  # one row's compute at warm-up, on the session used under load
    _active: int = field(default=0, repr=False)
    _overlapped_at: float = field(default=-OVERLAP_MEMORY_S, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    @property
    def labels(self) -> list[str]:
        labels: list[str] = self.manifest.get("labels", [])
        return labels

    def run(
        self,
        feeds: dict[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        side_by_side: bool = False,
    ) -> dict[str, np.ndarray]:
        """One ONNX Runtime call; ``side_by_side`` says the caller starts others with it."""
        names = list(outputs) if outputs else [o.name for o in self.outputs]
        if self.single_thread_session is None:
            return dict(zip(names, self.session.run(names, feeds), strict=True))
        with self._lock:
            now = time.monotonic()
            if self._active or side_by_side:
                self._overlapped_at = now
            lone = now - self._overlapped_at >= OVERLAP_MEMORY_S
            self._active += 1
        session = self.session if lone else self.single_thread_session
        try:
            return dict(zip(names, session.run(names, feeds), strict=True))
        finally:
            with self._lock:
                self._active -= 1


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
    """Loads, serves and unloads model versions of one repository; thread-safe."""

    def __init__(
        self,
        repository: Repository,
        *,
        providers: Sequence[str] = ("tensorrt", "cuda", "cpu"),
        intra_op_threads: int = 0,
        memory_budget_bytes: int = 0,
    ) -> None:
        self.repository = repository
        self.providers = choose_providers(providers)
        self.intra_op_threads = intra_op_threads
        self.memory_budget_bytes = memory_budget_bytes
        self._loaded: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._failed: dict[tuple[str, int], str] = {}
        self._lock = threading.RLock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        log.info("execution providers in order of preference: %s", ", ".join(self.providers))

    # -- state ---------------------------------------------------------------------
    def state(self, name: str, version: int | None = None) -> tuple[ModelState, str]:
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
    def ready(self, name: str, version: int | None = None) -> LoadedModel | None:
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

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """The ready model, loading it first if needed (blocking; call from a thread)."""
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
            return self._load(mv)

    def _load(self, mv: ModelVersion) -> LoadedModel:
        import onnxruntime as ort

        key = (mv.model, mv.version)
        started = time.perf_counter()
        try:
            manifest = mv.manifest()
        except (NotFound, ValueError) as e:
            manifest = {}
            log.warning("%s version %s: no readable zoo.json (%s)", mv.model, mv.version, e)

        def open_session(threads: int, providers: Sequence[str]) -> Any:
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            return ort.InferenceSession(
                str(mv.model_file), sess_options=options, providers=providers
            )

        try:
            session = open_session(self.intra_op_threads, self.providers)
            single = None
            if (
                session.get_providers()[0] == ORT_PROVIDERS["cpu"]
                and not self.intra_op_threads
                and cpu_cores() > 1
            ):
                single = open_session(1, [ORT_PROVIDERS["cpu"]])
        except Exception as e:  # ORT raises several unrelated types for a bad file
            reason = f"ONNX Runtime could not load {mv.model_file}: {str(e).strip()[:300]}"
            with self._lock:
                self._failed[key] = reason
            log.error("model %s version %s failed to load: %s", mv.model, mv.version, reason)
            raise FailedPrecondition(
                f"model {mv.model!r} version {mv.version} failed to load: {reason}"
            ) from None
        inputs = _tensor_infos(session.get_inputs())
        if len(inputs) != 1:
            raise FailedPrecondition(f"model {mv.model!r} has {len(inputs)} inputs; expected 1")
        model = LoadedModel(
            name=mv.model,
            version=mv.version,
            session=session,
            provider=session.get_providers()[0],
            inputs=inputs,
            outputs=_tensor_infos(session.get_outputs()),
            manifest=manifest,
            max_batch_size=self._max_batch_size(mv),
            size_bytes=mv.model_file.stat().st_size * (2 if single else 1),
            single_thread_session=single,
        )
        self._warm_up(model)
        with self._lock:
            self._failed.pop(key, None)
            self._loaded[key] = model
            self._enforce_budget(keep=key)
        log.info(
            "loaded model %s version %s on %s in %.2f s%s",
            mv.model,
            mv.version,
            model.provider,
            time.perf_counter() - started,
            f" (lone runs on {cpu_cores()} cores, overlapping runs on one core each)"
            if single
            else "",
        )
        return model

    def _max_batch_size(self, mv: ModelVersion) -> int:
        # config.pbtxt is the model's own setting (Triton's); without one, 32.
        config = mv.path.parent / "config.pbtxt"
        try:
            for line in config.read_text().splitlines():
                if line.strip().startswith("max_batch_size:"):
                    return max(1, int(line.split(":", 1)[1]))
        except (OSError, ValueError):
            pass
        return 32

    @staticmethod
    def _warm_up(model: LoadedModel) -> None:
        """One run per session (the first is slow), then one timed row for ``row_seconds``."""
        shape = tuple(1 if d < 0 else d for d in model.input.shape)
        feeds = {model.input.name: np.zeros(shape, model.input.dtype)}
        sessions = [s for s in (model.session, model.single_thread_session) if s is not None]
        for session in sessions:
            session.run(None, feeds)
        started = time.perf_counter()
        sessions[-1].run(None, feeds)  # the session that runs under load
        model.row_seconds = time.perf_counter() - started

    def _enforce_budget(self, keep: tuple[str, int]) -> None:
        if not self.memory_budget_bytes:
            return
        total = sum(m.size_bytes for m in self._loaded.values())
        for key in list(self._loaded):
            if total <= self.memory_budget_bytes:
                break
            if key == keep:
                continue
            evicted = self._loaded.pop(key)
            total -= evicted.size_bytes
            log.info(
                "unloaded model %s version %s (least recently used; memory budget %d MB)",
                evicted.name,
                evicted.version,
                self.memory_budget_bytes // 2**20,
            )

    def unload(self, name: str) -> list[int]:
        """Drop every loaded version of ``name``; returns the versions dropped."""
        if name not in self.repository.models():
            raise NotFound(f"model {name!r} is not in the repository")
        with self._lock:
            keys = [k for k in self._loaded if k[0] == name]
            for key in keys:
                del self._loaded[key]
            for key in [k for k in self._failed if k[0] == name]:
                del self._failed[key]
        if keys:
            log.info("unloaded model %s versions %s", name, [k[1] for k in keys])
        return [k[1] for k in keys]
