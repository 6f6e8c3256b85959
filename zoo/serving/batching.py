"""Dynamic batching: concurrent requests for one model version become one ONNX Runtime call.

Requests wait in one first-in first-out queue, served by ``instances`` threads (Triton's
instance count). An idle instance takes what is queued, up to ``max_batch_size`` rows, and
computes it; while every instance computes, new requests pile up and leave together when one
finishes, less one queued row per instance kept as a reserve. So a lone request never
waits, and under load batches grow by themselves. An
instance takes its next batch the moment it finishes the last, without a trip through the
event loop. A positive ``max_queue_delay`` additionally holds a batch until it is full or its
oldest request has waited that long.

A request with more rows than ``max_batch_size`` is cut into parts of at most that size,
which queue and compute on their own, never in a batch with others; its answer is their
rows joined in order. With ``spread`` (a CPU, where runs side by side on one core each beat
one run on all cores), a multi-row request that finds the model idle is cut into one part per
instance. With batching off, every request or part computes alone, in the same queue.

With priority levels (Triton's ``priority_levels``) a request queues behind those of its own
or a higher priority and ahead of the others, so an instance that comes free takes the most
urgent work first. A cancelled request (client gone) leaves the queue and is never computed.
Overload is shed by policy, as Triton's queue policy does: past ``max_queue_size`` queued
requests a new one is refused at once (UNAVAILABLE, with an estimate of when to retry), and a
request whose deadline (the client's, or ``queue_timeout`` after it arrived) passes while it
waits is dropped uncomputed with DEADLINE_EXCEEDED, counted in the model's statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from zoo.errors import DeadlineExceeded, Unavailable
from zoo.serving.stats import ModelStats

log = logging.getLogger("zoo.serving.batching")

# A run expected to take at most this long computes on the caller's (event loop) thread: the
# hop to an instance thread and back costs about 0.1 ms of CPU (measured with h2load on a
# no-op model, docs/benchmarks/requests.md), more than such a run. No image model is this
# fast on a CPU; trivial graphs (and tests' stand-ins) are.
INLINE_S = 50e-6

# (rows, side_by_side) -> outputs; side_by_side says other parts of one request run with it.
RunBatch = Callable[[np.ndarray, bool], dict[str, np.ndarray]]
Outputs = dict[str, np.ndarray]


@dataclass(eq=False)
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[Outputs]
    part_of_split: bool = False
    deadline: float | None = None  # time.monotonic(); past it the request is dropped
    future_group: object = None  # the same object for every part of one request
    priority: int = 0  # lower is served first
    cancelled: bool = False  # set on the event loop, read by instances (under the lock)
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)
    started_ns: int = 0  # when its batch began computing


class DynamicBatcher:
    """Coalesces ``submit`` calls for one model version; create inside a running loop."""

    def __init__(
        self,
        run: RunBatch,
        stats: ModelStats,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        instances: int = 2,
        enabled: bool = True,
        spread: bool = False,
        name: str = "batcher",
        max_queue_size: int = 0,
        queue_timeout_s: float = 0.0,
        row_seconds: float = 0.0,
    ) -> None:
        self._run = run
        self._stats = stats
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.instances = instances
        self.enabled = enabled
        self.spread = spread
        self.max_queue_size = max_queue_size
        self.queue_timeout_s = queue_timeout_s
        self._row_seconds = row_seconds  # for the retry estimate of a refused request
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._computing = 0
        self._closed = False
        self._threads: list[threading.Thread] = []

    # -- the event loop's side -----------------------------------------------------
    async def submit(
        self, rows: np.ndarray, deadline: float | None = None, priority: int = 0
    ) -> Outputs:
        """Compute ``rows`` (batch first) as part of a batch; returns this request's rows.

        ``deadline`` (``time.monotonic()``), if given, is the caller's: a request still
        queued then is dropped with DeadlineExceeded, never computed. A request queues behind
        those of its ``priority`` or a lower number (higher priority), ahead of the others.
        """
        if 0 < self._row_seconds * len(rows) <= INLINE_S and len(rows) <= self.max_batch_size:
            return self._inline(rows)
        if self.queue_timeout_s:
            timeout = time.monotonic() + self.queue_timeout_s
            deadline = timeout if deadline is None else min(deadline, timeout)
        with self._lock:
            if self._closed:
                raise Unavailable(f"model {self._name} was just unloaded; retry")
            if not self._threads:
                self._start_instances()
            self._refuse_if_full()
            parts = self._parts(rows)
            group = object()
            pending = [
                _Pending(p, self._loop.create_future(), len(parts) > 1, deadline, group, priority)
                for p in parts
            ]
            self._enqueue(pending)
            self._lock.notify(len(pending))
        try:
            results = [await p.future for p in pending]
        except BaseException as e:
            with self._lock:  # queued parts are skipped; computing ones finish unheard
                for p in pending:
                    p.cancelled = True
            for p in pending:
                if p.future.done() and not p.future.cancelled():
                    p.future.exception()  # retrieved, so asyncio does not warn of it
                p.future.cancel()
            if not isinstance(e, asyncio.CancelledError):
                self._stats.record_failure(time.perf_counter_ns() - pending[0].enqueued_ns)
            raise
        queue_ns = pending[0].started_ns - pending[0].enqueued_ns
        total_ns = time.perf_counter_ns() - pending[0].enqueued_ns
        self._stats.record_success(total_ns - queue_ns, queue_ns=queue_ns)
        if len(results) == 1:
            return results[0]
        return {k: np.concatenate([r[k] for r in results]) for k in results[0]}

    def _inline(self, rows: np.ndarray) -> Outputs:
        if self._closed:
            raise Unavailable(f"model {self._name} was just unloaded; retry")
        started = time.perf_counter_ns()
        try:
            outputs = self._run(rows, False)
        except Exception:
            self._stats.record_failure(time.perf_counter_ns() - started)
            raise
        elapsed = time.perf_counter_ns() - started
        self._stats.record_batch(len(rows), elapsed)
        self._stats.record_success(elapsed, queue_ns=0)
        return outputs

    def _enqueue(self, pending: list[_Pending]) -> None:
        """Queue in priority order, first come first served within a level; under the lock."""
        if not self._queue or self._queue[-1].priority <= pending[0].priority:
            self._queue.extend(pending)
            return
        at = len(self._queue)
        while at and self._queue[at - 1].priority > pending[0].priority:
            at -= 1
        for offset, p in enumerate(pending):
            self._queue.insert(at + offset, p)

    def _refuse_if_full(self) -> None:
        """Unavailable when ``max_queue_size`` requests wait already; call under the lock."""
        if not self.max_queue_size:
            return
        waiting = len({id(p.future_group) for p in self._queue if not p.cancelled})
        if waiting < self.max_queue_size:
            return
        self._stats.record_rejected()
        rows = self._queued_rows()
        retry_ms = max(1, round(1000 * rows * self._row_seconds / max(1, self.instances)))
        raise Unavailable(
            f"model {self._name} has {waiting} requests queued, its limit (max_queue_size); "
            f"retry in about {retry_ms} ms"
        )

    def _parts(self, rows: np.ndarray) -> list[np.ndarray]:
        """``rows`` cut into the parts that queue separately (usually just ``rows``)."""
        size = self.max_batch_size
        if self.spread and not self._computing and not self._live():
            size = min(size, math.ceil(len(rows) / self.instances))
        if len(rows) <= size:
            return [rows]
        return [rows[i : i + size] for i in range(0, len(rows), size)]

    def stop(self) -> None:
        """Stop taking requests; any thread. Queued ones fail UNAVAILABLE, computing ones end."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            dropped = [p for p in self._queue if not p.cancelled]
            self._queue.clear()
        if dropped:
            error = Unavailable(f"model {self._name} was unloaded while the request waited")
            with contextlib.suppress(RuntimeError):  # no loop: the server is shutting down
                self._loop.call_soon_threadsafe(self._deliver, dropped, None, error)

    async def close(self) -> None:
        """``stop``, then wait for the instances to finish their current batch."""
        self.stop()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 60)

    @staticmethod
    def _deliver(batch: list[_Pending], outputs: Outputs | None, error: Exception | None) -> None:
        offset = 0
        for p in batch:
            n = len(p.rows)
            if not p.future.done():
                if error is not None:
                    p.future.set_exception(error)
                else:
                    assert outputs is not None
                    p.future.set_result({k: v[offset : offset + n] for k, v in outputs.items()})
            offset += n

    # -- the instances' side (under self._lock where it touches the queue) ---------
    def _start_instances(self) -> None:
        for i in range(self.instances):
            thread = threading.Thread(target=self._instance, name=f"{self._name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _live(self) -> bool:
        return any(not p.cancelled for p in self._queue)

    def _queued_rows(self) -> int:
        return sum(len(p.rows) for p in self._queue if not p.cancelled)

    def _drop_expired(self) -> None:
        """Fail queued requests whose deadline has passed; they are never computed."""
        now = time.monotonic()
        expired = [
            p for p in self._queue
            if not p.cancelled and p.deadline is not None and p.deadline < now
        ]  # fmt: skip
        if not expired:
            return
        for p in expired:
            p.cancelled = True
        self._stats.record_expired(len(expired))
        error = DeadlineExceeded(
            f"model {self._name}: the request waited in the queue past its deadline "
            "(the client's, or queue_timeout_ms) and was not computed"
        )
        with contextlib.suppress(RuntimeError):  # no loop: the server is shutting down
            self._loop.call_soon_threadsafe(self._deliver, expired, None, error)

    def _take_batch(self) -> list[_Pending]:
        # Leave one row queued per instance, so that the next instance to finish finds work
        # while answers travel back to their clients and new requests travel in; without
        # this reserve, batching 4 clients' requests on 2 instances idled them between
        # batches (10% less throughput than no batching, docs/benchmarks/serve.md).
        limit = min(self.max_batch_size, max(1, self._queued_rows() - self.instances))
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.cancelled:
                self._queue.popleft()
                continue
            alone = not self.enabled or head.part_of_split  # parts are sized already
            full = rows + len(head.rows) > limit
            if batch and (alone or batch[0].part_of_split or full):
                break
            batch.append(self._queue.popleft())
            rows += len(head.rows)
        return batch

    def _wait_for_company(self) -> None:
        """Hold the batch until it is full or its oldest request waited max_queue_delay."""
        live = [p for p in self._queue if not p.cancelled]
        if not live:
            return
        deadline = live[0].enqueued_ns / 1e9 + self.max_queue_delay_s
        while not self._closed and self._queued_rows() < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._lock.wait(remaining)

    def _instance(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._live():
                    self._queue.clear()
                    self._lock.wait()
                if self._closed:
                    return
                if self.enabled and self.max_queue_delay_s > 0:
                    self._wait_for_company()
                self._drop_expired()
                batch = self._take_batch()
                if not batch:
                    continue
                self._computing += 1
            self._compute(batch)
            with self._lock:
                self._computing -= 1

    def _compute(self, batch: list[_Pending]) -> None:
        started = time.perf_counter_ns()
        for p in batch:
            p.started_ns = started
        inputs = np.concatenate([p.rows for p in batch]) if len(batch) > 1 else batch[0].rows
        outputs: Outputs | None = None
        error: Exception | None = None
        try:
            outputs = self._run(inputs, any(p.part_of_split for p in batch))
        except Exception as e:
            error = e
        else:
            self._stats.record_batch(len(inputs), time.perf_counter_ns() - started)
        try:
            self._loop.call_soon_threadsafe(self._deliver, batch, outputs, error)
        except RuntimeError:  # the event loop is gone: the server is shutting down
            log.debug("%s: results of %d requests had no loop to go to", self._name, len(batch))
