"""Per model-version inference statistics, in the shape of Triton's ModelStatistics."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class BatchStats:
    count: int = 0
    compute_ns: int = 0


@dataclass
class ModelStats:
    """Counters of one model version; updated from the event loop or worker threads."""

    name: str
    version: int
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    inference_count: int = 0  # rows (images) computed
    execution_count: int = 0  # ONNX Runtime calls
    last_inference_ms: int = 0
    rejected: int = 0  # refused at once: the queue was full
    expired: int = 0  # dropped uncomputed: their deadline or queue timeout passed
    batches: dict[int, BatchStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_success(self, request_ns: int, queue_ns: int) -> None:
        with self._lock:
            self.success.add(request_ns + queue_ns)
            self.queue.add(queue_ns)
            self.last_inference_ms = int(time.time() * 1000)

    def record_failure(self, ns: int) -> None:
        with self._lock:
            self.fail.add(ns)

    def record_rejected(self) -> None:
        with self._lock:
            self.rejected += 1

    def record_expired(self, count: int) -> None:
        with self._lock:
            self.expired += count

    def record_batch(self, rows: int, compute_ns: int) -> None:
        with self._lock:
            self.compute_infer.add(compute_ns)
            self.inference_count += rows
            self.execution_count += 1
            entry = self.batches.setdefault(rows, BatchStats())
            entry.count += 1
            entry.compute_ns += compute_ns


class StatsRegistry:
    """All models' statistics, created on first use."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, int], ModelStats] = {}
        self._lock = threading.Lock()

    def get(self, name: str, version: int) -> ModelStats:
        with self._lock:
            key = (name, version)
            if key not in self._stats:
                self._stats[key] = ModelStats(name, version)
            return self._stats[key]

    def all(self) -> list[ModelStats]:
        with self._lock:
            return list(self._stats.values())
