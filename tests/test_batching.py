"""The dynamic batcher: coalescing, parts of large requests, spreading, batching off, cancel.

The model here is a function on worker threads that doubles its rows and records each call;
a threading gate holds a call computing, so the tests decide what is in flight when.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest

from zoo.errors import DeadlineExceeded, Unavailable
from zoo.serving.batching import DynamicBatcher
from zoo.serving.stats import ModelStats


@dataclass
class Model:
    """Records (rows, side_by_side) per call; calls wait at the gate while it is closed."""

    calls: list[tuple[list[int], bool]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0
    most_in_flight: int = 0
    fail_on: int | None = None  # a row value that makes the call fail
    meet: threading.Barrier | None = None  # calls that must compute at the same time
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gate.set()

    def __call__(self, rows: np.ndarray, side_by_side: bool) -> dict[str, np.ndarray]:
        with self.lock:
            self.calls.append((rows[:, 0].tolist(), side_by_side))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            assert self.gate.wait(10), "the test never opened the gate"
            if self.meet is not None and len(rows) > 1:
                self.meet.wait(5)  # BrokenBarrierError unless the others come
            if self.fail_on is not None and self.fail_on in rows:
                raise RuntimeError(f"row {self.fail_on} is poison")
            return {"y": rows * 2}
        finally:
            with self.lock:
                self.in_flight -= 1


def rows(*values: int) -> np.ndarray:
    return np.array([[v] for v in values])


def batcher(model: Model, **settings: object) -> tuple[DynamicBatcher, ModelStats]:
    """A batcher over ``model``; call inside the event loop."""
    stats = ModelStats("m", 1)
    options = {"max_batch_size": 8, "max_queue_delay_s": 0.0, "instances": 1, **settings}
    return DynamicBatcher(model, stats, **options), stats  # type: ignore[arg-type]


async def busy(
    model: Model, first: int = 0, **settings: object
) -> tuple[DynamicBatcher, ModelStats, asyncio.Future[dict[str, np.ndarray]]]:
    """A batcher whose instance computes row ``first`` behind the closed gate."""
    b, stats = batcher(model, **settings)
    model.gate.clear()
    blocker = asyncio.ensure_future(b.submit(rows(first)))
    await until(lambda: model.in_flight == 1)
    return b, stats, blocker


async def until(condition: object, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_requests_that_wait_for_an_instance_leave_as_one_batch() -> None:
    model = Model()

    async def scenario() -> list[dict[str, np.ndarray]]:
        b, _, first = await busy(model, max_batch_size=4)  # the only instance computes
        rest = [asyncio.ensure_future(b.submit(rows(i))) for i in range(1, 6)]
        await asyncio.sleep(0.02)
        model.gate.set()
        results = await asyncio.gather(first, *rest)
        await b.close()
        return results

    results = asyncio.run(scenario())
    # FIFO: 1-4 fill the next batch up to its limit, 5 goes in the one after
    assert [c[0] for c in model.calls] == [[0], [1, 2, 3, 4], [5]]
    assert [r["y"].ravel().tolist() for r in results] == [[2 * i] for i in range(6)]


def test_a_request_over_the_limit_is_cut_into_parts_that_never_join_others() -> None:
    model = Model()

    async def scenario() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        b, stats, blocker = await busy(model, 100, max_batch_size=4)
        big = asyncio.ensure_future(b.submit(rows(*range(10))))
        small = asyncio.ensure_future(b.submit(rows(50)))
        await asyncio.sleep(0.02)
        model.gate.set()
        await blocker
        result = await big, await small
        await b.close()
        assert stats.success.count == 3 and stats.fail.count == 0
        assert stats.inference_count == 12 and stats.execution_count == 5
        return result

    big, small = asyncio.run(scenario())
    assert big["y"].ravel().tolist() == [2 * i for i in range(10)]
    assert small["y"].ravel().tolist() == [100]
    assert model.calls == [
        ([100], False),
        ([0, 1, 2, 3], True),
        ([4, 5, 6, 7], True),
        ([8, 9], True),  # the last part is not topped up with request 50
        ([50], False),
    ]


def test_spread_cuts_a_request_on_an_idle_model_into_one_part_per_instance() -> None:
    model = Model(meet=threading.Barrier(2))

    async def scenario() -> dict[str, np.ndarray]:
        b, _ = batcher(model, instances=2, spread=True)
        result = await b.submit(rows(*range(8)))
        await b.submit(rows(9))  # one row cannot be cut
        await b.close()
        return result

    result = asyncio.run(scenario())
    assert result["y"].ravel().tolist() == [2 * i for i in range(8)]
    assert sorted(model.calls) == [([0, 1, 2, 3], True), ([4, 5, 6, 7], True), ([9], False)]
    assert model.most_in_flight == 2


def test_spread_leaves_requests_whole_while_the_model_is_busy() -> None:
    model = Model()

    async def scenario() -> None:
        b, _, blocker = await busy(model, 100, instances=2, spread=True)
        whole = asyncio.ensure_future(b.submit(rows(*range(6))))
        await until(lambda: model.in_flight == 2)
        model.gate.set()
        await asyncio.gather(blocker, whole)
        await b.close()

    asyncio.run(scenario())
    assert ([0, 1, 2, 3, 4, 5], False) in model.calls


def test_batching_off_runs_each_request_alone_in_arrival_order() -> None:
    model = Model()

    async def scenario() -> None:
        b, stats = batcher(model, enabled=False, instances=1)
        model.gate.clear()
        futures = [asyncio.ensure_future(b.submit(rows(i))) for i in range(5)]
        await until(lambda: model.in_flight == 1)
        model.gate.set()
        await asyncio.gather(*futures)
        await b.close()
        assert sorted(stats.batches) == [1] and stats.batches[1].count == 5

    asyncio.run(scenario())
    assert [c[0] for c in model.calls] == [[0], [1], [2], [3], [4]]


def test_a_cancelled_request_leaves_the_queue_uncomputed() -> None:
    model = Model()

    async def scenario() -> None:
        b, stats, blocker = await busy(model)
        doomed = asyncio.ensure_future(b.submit(rows(*range(1, 20))))  # parts of 8, 8, 3
        kept = asyncio.ensure_future(b.submit(rows(99)))
        await asyncio.sleep(0.02)
        doomed.cancel()
        await asyncio.wait([doomed])  # its cancellation ran before the instance is free
        model.gate.set()
        await blocker
        assert (await kept)["y"].ravel().tolist() == [198]
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await b.close()
        assert stats.success.count == 2 and stats.fail.count == 0

    asyncio.run(scenario())
    assert [c[0] for c in model.calls] == [[0], [99]]


def test_a_failing_part_fails_its_request_once_and_others_still_succeed() -> None:
    model = Model(fail_on=5)

    async def scenario() -> None:
        b, stats = batcher(model, max_batch_size=2)
        with pytest.raises(RuntimeError, match="row 5 is poison"):
            await b.submit(rows(*range(8)))
        assert (await b.submit(rows(1)))["y"].ravel().tolist() == [2]
        await b.close()
        assert stats.fail.count == 1 and stats.success.count == 1

    asyncio.run(scenario())


def test_closing_fails_queued_requests_as_unavailable_and_lets_computing_ones_finish() -> None:
    model = Model()

    async def scenario() -> None:
        b, _, computing = await busy(model, 1)
        queued = asyncio.ensure_future(b.submit(rows(2)))
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(b.close())
        with pytest.raises(Unavailable, match="unloaded while the request waited"):
            await queued
        model.gate.set()
        assert (await computing)["y"].ravel().tolist() == [2]
        await closing
        with pytest.raises(Unavailable, match="was just unloaded"):
            await b.submit(rows(3))

    asyncio.run(scenario())
    assert [c[0] for c in model.calls] == [[1]]


def test_a_batch_leaves_one_queued_row_per_instance_in_reserve() -> None:
    model = Model()

    async def scenario() -> None:
        b, _, first = await busy(model, instances=1)
        rest = [asyncio.ensure_future(b.submit(rows(i))) for i in (1, 2, 3)]
        await asyncio.sleep(0.02)
        model.gate.set()
        await asyncio.gather(first, *rest)
        await b.close()

    asyncio.run(scenario())
    # three queued with a limit of 8: two leave together, one stays for the next run
    assert [c[0] for c in model.calls] == [[0], [1, 2], [3]]


def test_a_full_queue_refuses_at_once_with_a_retry_estimate() -> None:
    model = Model()

    async def scenario() -> None:
        b, stats, blocker = await busy(model, max_queue_size=3, row_seconds=0.010)
        queued = [asyncio.ensure_future(b.submit(rows(i))) for i in range(1, 4)]
        await asyncio.sleep(0.02)
        with pytest.raises(Unavailable, match=r"3 requests queued, its limit .* about 30 ms"):
            await b.submit(rows(9))
        assert stats.rejected == 1
        model.gate.set()
        results = await asyncio.gather(blocker, *queued)
        assert [r["y"].ravel().tolist() for r in results] == [[0], [2], [4], [6]]
        assert (await b.submit(rows(5)))["y"].ravel().tolist() == [10]  # room again
        await b.close()

    asyncio.run(scenario())
    assert 9 not in [v for call, _ in model.calls for v in call]  # never computed


def test_requests_past_their_deadline_are_dropped_uncomputed() -> None:
    import time

    model = Model()

    async def scenario() -> None:
        b, stats, blocker = await busy(model)
        soon = time.monotonic() + 0.05
        late = [asyncio.ensure_future(b.submit(rows(i), deadline=soon)) for i in (1, 2)]
        on_time = asyncio.ensure_future(b.submit(rows(3), deadline=time.monotonic() + 60))
        untimed = asyncio.ensure_future(b.submit(rows(4)))
        await asyncio.sleep(0.1)  # the two deadlines pass while the instance is busy
        model.gate.set()
        await blocker
        for future in late:
            with pytest.raises(DeadlineExceeded, match="waited in the queue past its deadline"):
                await future
        assert (await on_time)["y"].ravel().tolist() == [6]
        assert (await untimed)["y"].ravel().tolist() == [8]
        assert stats.expired == 2 and stats.fail.count == 2
        await b.close()

    asyncio.run(scenario())
    assert [call for call, _ in model.calls] == [[0], [3], [4]]  # 1 and 2 never ran


def test_queue_timeout_applies_without_a_client_deadline() -> None:
    model = Model()

    async def scenario() -> None:
        b, stats, blocker = await busy(model, queue_timeout_s=0.05)
        waiting = asyncio.ensure_future(b.submit(rows(1)))
        await asyncio.sleep(0.1)
        model.gate.set()
        await blocker
        with pytest.raises(DeadlineExceeded):
            await waiting
        assert stats.expired == 1
        assert (await b.submit(rows(2)))["y"].ravel().tolist() == [4]  # fresh ones run
        await b.close()

    asyncio.run(scenario())
    assert [call for call, _ in model.calls] == [[0], [2]]


def test_a_run_shorter_than_the_thread_hop_computes_on_the_callers_thread() -> None:
    seen: list[str] = []

    def run(rows: np.ndarray, side_by_side: bool) -> dict[str, np.ndarray]:
        seen.append(threading.current_thread().name)
        return {"y": rows * 2}

    async def scenario() -> None:
        for row_seconds in (20e-6, 0.002):  # under and over INLINE_S for one row
            stats = ModelStats("m", 1)
            b = DynamicBatcher(run, stats, max_batch_size=8, max_queue_delay_s=0.0,
                               instances=1, row_seconds=row_seconds, name="m-1")  # fmt: skip
            assert (await b.submit(rows(3)))["y"].ravel().tolist() == [6]
            assert (stats.success.count, stats.execution_count) == (1, 1)
            await b.close()

    asyncio.run(scenario())
    assert seen == ["MainThread", "m-1-0"]


def test_higher_priority_requests_go_ahead_of_those_queued_before_them() -> None:
    model = Model()

    async def scenario() -> None:
        b, _, first = await busy(model, max_batch_size=2, enabled=False)
        queued = []
        for value, priority in ((1, 3), (2, 3), (3, 1), (4, 2), (5, 1), (6, 3)):
            queued.append(asyncio.ensure_future(b.submit(rows(value), None, priority)))
            await asyncio.sleep(0.005)  # arrival order = the order above
        model.gate.set()
        await asyncio.gather(first, *queued)
        await b.close()

    asyncio.run(scenario())
    # level 1 first, then 2, then 3; first come first served within a level
    assert [c[0] for c in model.calls] == [[0], [3], [5], [4], [1], [2], [6]]


def test_an_inline_run_is_never_side_by_side_and_only_small_runs_are_inline() -> None:
    seen: list[tuple[str, bool]] = []

    def run(rows: np.ndarray, side_by_side: bool) -> dict[str, np.ndarray]:
        seen.append((threading.current_thread().name, side_by_side))
        return {"y": rows * 2}

    async def scenario() -> None:
        from zoo.serving.batching import INLINE_S

        # (seconds per row, rows): at most INLINE_S in all is inline; 2 x 30 us is not;
        # a request as large as a batch (2 rows) may be inline
        for row_seconds, n in ((INLINE_S, 1), (30e-6, 2), (20e-6, 2)):
            b = DynamicBatcher(run, ModelStats("m", 1), max_batch_size=2, max_queue_delay_s=0.0,
                               instances=1, row_seconds=row_seconds, name="m-1")  # fmt: skip
            assert (await b.submit(rows(*range(n))))["y"].ravel().tolist() == [0, 2][:n]
            await b.close()

    asyncio.run(scenario())
    assert seen == [("MainThread", False), ("m-1-0", False), ("MainThread", False)]


def test_without_spread_an_idle_model_takes_a_request_whole() -> None:
    model = Model()

    async def scenario() -> None:
        b, _ = batcher(model, instances=2)  # spread is off unless asked for
        await b.submit(rows(1, 2, 3, 4))
        await b.close()

    asyncio.run(scenario())
    assert model.calls == [([1, 2, 3, 4], False)]


def test_a_lone_request_waits_for_company_only_while_batching_is_on() -> None:
    model = Model()

    async def scenario() -> None:
        # Batching on: the first request waits (up to 2 s) for the batch to fill.
        b, _ = batcher(model, max_batch_size=3, max_queue_delay_s=2.0)
        first = asyncio.ensure_future(b.submit(rows(1)))
        await asyncio.sleep(0.2)
        assert model.calls == []  # still waiting for company
        rest = [asyncio.ensure_future(b.submit(rows(i))) for i in (2, 3)]
        # 1 and 2 go together (one row stays queued for the instance); 3 goes alone once it
        # has waited its 2 s
        await asyncio.wait_for(asyncio.gather(first, *rest), 20)
        await b.close()
        assert [c[0] for c in model.calls] == [[1, 2], [3]]
        # Batching off: no wait, whatever the delay says.
        b, _ = batcher(model, max_batch_size=3, max_queue_delay_s=60.0, enabled=False)
        await asyncio.wait_for(b.submit(rows(4)), 10)
        await b.close()

    asyncio.run(scenario())
    assert [c[0] for c in model.calls] == [[1, 2], [3], [4]]


def test_recorded_durations_fit_within_the_time_the_callers_waited() -> None:
    import time

    model = Model(fail_on=9)

    async def scenario() -> tuple[int, int, ModelStats]:
        started = time.perf_counter_ns()
        b, stats, blocker = await busy(model)
        queued = asyncio.ensure_future(b.submit(rows(1)))  # waits behind the blocker
        await asyncio.sleep(0.05)
        model.gate.set()
        await asyncio.gather(blocker, queued)
        whole = time.perf_counter_ns() - started  # each request's time is within it
        started = time.perf_counter_ns()
        with pytest.raises(RuntimeError, match="poison"):
            await b.submit(rows(9))
        failed = time.perf_counter_ns() - started
        await b.close()
        return whole, failed, stats

    whole, failed, stats = asyncio.run(scenario())
    assert (stats.success.count, stats.queue.count, stats.compute_infer.count) == (2, 2, 2)
    assert 0 < stats.success.ns <= 2 * whole  # two requests, each within `whole`
    assert 0.04e9 < stats.queue.ns <= stats.success.ns  # the second waited 50 ms
    assert 0 < stats.compute_infer.ns <= stats.success.ns
    assert stats.fail.count == 1 and 0 < stats.fail.ns <= failed


def test_an_inline_run_records_its_time_and_its_failure() -> None:
    import time

    def run(rows: np.ndarray, side_by_side: bool) -> dict[str, np.ndarray]:
        if 9 in rows:
            raise RuntimeError("row 9 is poison")
        return {"y": rows * 2}

    async def scenario() -> tuple[int, ModelStats]:
        stats = ModelStats("m", 1)
        b = DynamicBatcher(run, stats, max_batch_size=8, max_queue_delay_s=0.0,
                           instances=1, row_seconds=1e-6)  # fmt: skip
        started = time.perf_counter_ns()
        await b.submit(rows(1))
        with pytest.raises(RuntimeError, match="poison"):
            await b.submit(rows(9))
        whole = time.perf_counter_ns() - started
        await b.close()
        return whole, stats

    whole, stats = asyncio.run(scenario())
    assert (stats.success.count, stats.fail.count, stats.execution_count) == (1, 1, 1)
    assert stats.queue.ns == 0 and 0 < stats.success.ns <= whole
    assert 0 < stats.compute_infer.ns <= whole and 0 < stats.fail.ns <= whole


def test_a_split_request_of_higher_priority_keeps_its_parts_in_order() -> None:
    model = Model()

    async def scenario() -> None:
        b, _, first = await busy(model, max_batch_size=2, enabled=False)
        low = [asyncio.ensure_future(b.submit(rows(v), None, 3)) for v in (1, 2)]
        await asyncio.sleep(0.01)
        high = asyncio.ensure_future(b.submit(rows(5, 6, 7, 8, 9), None, 1))  # 3 parts
        await asyncio.sleep(0.01)
        model.gate.set()
        assert (await high)["y"].ravel().tolist() == [10, 12, 14, 16, 18]
        await asyncio.gather(first, *low)
        await b.close()

    asyncio.run(scenario())
    assert [c[0] for c in model.calls] == [[0], [5, 6], [7, 8], [9], [1], [2]]


def test_the_retry_estimate_shares_the_queue_among_the_instances() -> None:
    model = Model()

    async def scenario() -> None:
        b, _ = batcher(model, instances=2, max_queue_size=2, row_seconds=0.010)
        model.gate.clear()
        computing = [asyncio.ensure_future(b.submit(rows(i))) for i in (1, 2)]
        await until(lambda: model.in_flight == 2)
        queued = [asyncio.ensure_future(b.submit(rows(i, i))) for i in (3, 4)]
        await asyncio.sleep(0.01)
        # 4 rows queued at 10 ms a row on 2 instances: about 20 ms
        with pytest.raises(Unavailable, match=r"2 requests queued, .* about 20 ms"):
            await b.submit(rows(9))
        model.gate.set()
        await asyncio.gather(*computing, *queued)
        await b.close()

    asyncio.run(scenario())


def test_close_waits_for_the_batch_being_computed() -> None:
    model = Model()

    async def scenario() -> None:
        b, _, computing = await busy(model)
        closing = asyncio.ensure_future(b.close())
        await asyncio.sleep(0.1)
        assert not closing.done() and model.in_flight == 1
        model.gate.set()
        await asyncio.wait_for(closing, 10)
        assert model.in_flight == 0
        assert (await computing)["y"].ravel().tolist() == [0]

    asyncio.run(scenario())


def test_a_request_whose_parts_fail_leaves_no_exception_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import gc

    model = Model(fail_on=5)

    async def scenario() -> None:
        b, _ = batcher(model, max_batch_size=2, instances=2)
        with pytest.raises(RuntimeError, match="row 5 is poison"):
            await b.submit(rows(5, 1, 5, 2))  # both parts fail
        await b.close()

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(scenario())
        gc.collect()
    assert "never retrieved" not in caplog.text


def test_a_request_that_fills_a_batch_leaves_at_once_and_close_ends_the_wait() -> None:
    model = Model()

    async def scenario() -> None:
        b, _ = batcher(model, max_batch_size=2, max_queue_delay_s=60.0)
        # two rows fill the batch: no waiting out the minute
        await asyncio.wait_for(b.submit(rows(1, 2)), 10)
        # a lone row waits for company until the batcher closes, then fails at once
        lone = asyncio.ensure_future(b.submit(rows(3)))
        await asyncio.sleep(0.1)
        await asyncio.wait_for(b.close(), 10)
        with pytest.raises(Unavailable, match="unloaded while the request waited"):
            await lone

    asyncio.run(scenario())
    assert model.calls == [([1, 2], False)]


def test_a_batch_that_ends_after_its_event_loop_is_dropped_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    model = Model()

    async def scenario() -> DynamicBatcher:
        b, _, _ = await busy(model)
        return b  # asyncio.run closes the loop while the batch computes

    b = asyncio.run(scenario())
    model.gate.set()
    for _ in range(1000):
        if model.in_flight == 0:
            break
        threading.Event().wait(0.005)
    b.stop()
    for thread in threading.enumerate():
        if thread.name.startswith("batcher-"):
            thread.join(5)
    assert errors == []  # no traceback from an instance thread
