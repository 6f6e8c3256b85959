"""Dynamic batching: concurrent requests for one model version become one ONNX Runtime call.

Up to ``max_inflight`` batches compute at once on worker threads; while they all do, new
requests wait in the queue and leave together, up to ``max_batch_size`` rows, when a slot
frees. So a lone request never waits, and under load batches grow by themselves. A positive
``max_queue_delay`` additionally holds a batch until it is full or its oldest request has
waited that long. A request with more rows than ``max_batch_size`` runs on its own, unsplit. A
cancelled request (client gone, deadline passed) leaves the queue and is never computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from zoo.stats import ModelStats

RunBatch = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)


class DynamicBatcher:
    """Coalesces ``submit`` calls for one model version; one batch computes at a time."""

    def __init__(
        self,
        run: RunBatch,
        executor: Executor,
        stats: ModelStats,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_inflight: int = 2,
        enabled: bool = True,
    ) -> None:
        self._run = run
        self._executor = executor
        self._stats = stats
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.enabled = enabled
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Batches computing at once: on a CPU two runs use the cores better than one.
        self._slots = asyncio.Semaphore(max_inflight)
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Compute ``rows`` (batch first) as part of a batch; returns this request's rows."""
        if not self.enabled or len(rows) >= self.max_batch_size:
            return await self._run_alone(rows)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())
        pending = _Pending(rows, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._wakeup.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            pending.future.cancel()  # the loop skips it if it is still queued
            raise

    async def _run_alone(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter_ns()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, rows)
        except Exception:
            self._stats.record_failure(time.perf_counter_ns() - started)
            raise
        compute = time.perf_counter_ns() - started
        self._stats.record_batch(len(rows), compute)
        self._stats.record_success(compute, queue_ns=0)
        return outputs

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # cancelled while waiting
                self._queue.popleft()
                continue
            if batch and rows + len(head.rows) > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            rows += len(head.rows)
        return batch

    def _queued_rows(self) -> int:
        return sum(len(p.rows) for p in self._queue if not p.future.done())

    async def _loop(self) -> None:
        while True:
            while not any(not p.future.done() for p in self._queue):
                self._queue.clear()
                self._wakeup.clear()
                await self._wakeup.wait()
            # Wait for a free execution slot: while every slot computes, requests pile up
            # and become the next batch. This is where batches form at zero extra delay.
            await self._slots.acquire()
            if self.max_queue_delay_s > 0:
                await self._wait_for_company()
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _wait_for_company(self) -> None:
        """Hold the batch until it is full or its oldest request waited max_queue_delay."""
        live = [p for p in self._queue if not p.future.done()]
        if not live:
            return
        deadline = live[0].enqueued_ns / 1e9 + self.max_queue_delay_s
        while self._queued_rows() < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter_ns()
        inputs = np.concatenate([p.rows for p in batch]) if len(batch) > 1 else batch[0].rows
        try:
            outputs = await loop.run_in_executor(self._executor, self._run, inputs)
        except Exception as e:
            elapsed = time.perf_counter_ns() - started
            for p in batch:
                self._stats.record_failure(elapsed)
                if not p.future.done():
                    p.future.set_exception(e)
            return
        compute = time.perf_counter_ns() - started
        self._stats.record_batch(len(inputs), compute)
        offset = 0
        for p in batch:
            n = len(p.rows)
            if not p.future.done():
                p.future.set_result({k: v[offset : offset + n] for k, v in outputs.items()})
                self._stats.record_success(compute, queue_ns=started - p.enqueued_ns)
            offset += n

    async def close(self) -> None:
        for task in [self._task, *self._running]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
