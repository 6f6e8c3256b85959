"""Job state machine and the job store, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import postgres_job_store
from sqlalchemy import event as sqlalchemy_event

from zoo.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from zoo.jobs.records import (
    TERMINAL,
    TRANSITIONS,
    EventType,
    IllegalTransition,
    JobEvent,
    JobKind,
    JobState,
    transition,
)
from zoo.jobs.store import JobStore
from zoo.jobs.watch import EventHub

# What the job lifecycle means, written out apart from zoo.jobs.records.TRANSITIONS: a queued job is
# claimed or cancelled; a running one ends, is being cancelled, or goes back to the queue when
# its worker dies; a cancelling one still ends as its work did. Nothing leaves an end state.
Q, R, S, F, CG, CD = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED,
                      JobState.CANCELLING, JobState.CANCELLED)  # fmt: skip
LEGAL = {(Q, R), (Q, CD), (R, S), (R, F), (R, CG), (R, Q), (CG, CD), (CG, F), (CG, S)}


@pytest.mark.parametrize("current", list(JobState))
@pytest.mark.parametrize("target", list(JobState))
def test_transition_allows_exactly_the_lifecycle(current: JobState, target: JobState) -> None:
    if (current, target) in LEGAL:
        assert transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition, match=f"in state {current} cannot become {target}"):
            transition(current, target)


def test_terminal_states_are_the_ends() -> None:
    assert {S, F, CD} == TERMINAL
    assert all(s.terminal == (s in {S, F, CD}) for s in JobState)
    assert all(not TRANSITIONS[s] for s in TERMINAL)
    with pytest.raises(IllegalTransition, match="it can become nothing: it has ended"):
        transition(S, R)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield JobStore(tmp_path / "jobs.db")
        return
    with postgres_job_store() as jobs:
        yield jobs


def test_lifecycle_and_events(store: JobStore) -> None:
    job = store.create(JobKind.EXPORT, {"model": "MobileNetV2"})
    assert (job.state, job.attempts, job.params) == (JobState.QUEUED, 0, {"model": "MobileNetV2"})
    claimed = store.claim("worker-a")
    assert claimed is not None and claimed.id == job.id
    assert (claimed.state, claimed.worker, claimed.attempts) == (JobState.RUNNING, "worker-a", 1)
    assert store.claim("worker-b") is None
    store.add_event(job.id, EventType.EPOCH, {"epoch": 1, "accuracy": 0.5})
    done = store.set_state(job.id, JobState.SUCCEEDED, result={"version": 3})
    assert done.state is JobState.SUCCEEDED and done.result == {"version": 3}
    assert done.finished_at is not None
    events = store.events(job.id)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [(e.type, e.payload.get("state")) for e in events] == [
        (EventType.STATE, "QUEUED"), (EventType.STATE, "RUNNING"),
        (EventType.EPOCH, None), (EventType.STATE, "SUCCEEDED"),
    ]  # fmt: skip
    assert [e.seq for e in store.events(job.id, after=2)] == [3, 4]
    with pytest.raises(IllegalTransition):
        store.set_state(job.id, JobState.RUNNING)
    with pytest.raises(FailedPrecondition, match="has already ended"):
        store.request_cancel(job.id)


def test_cancel(store: JobStore) -> None:
    queued = store.create(JobKind.EXPORT, {})
    assert store.request_cancel(queued.id).state is JobState.CANCELLED
    running = store.create(JobKind.EXPORT, {})
    store.claim("w")
    assert store.request_cancel(running.id).state is JobState.CANCELLING
    assert store.heartbeat(running.id, "w") is JobState.CANCELLING
    assert store.set_state(running.id, JobState.CANCELLED).state is JobState.CANCELLED


def test_orphaned_job_is_claimed_again(store: JobStore) -> None:
    job = store.create(JobKind.FINETUNE, {})
    assert store.claim("dead-worker").id == job.id
    assert store.claim("other", stale_after_s=60) is None  # still beating recently
    time.sleep(0.2)
    again = store.claim("other", stale_after_s=0.1)
    assert again is not None and (again.id, again.worker, again.attempts) == (job.id, "other", 2)
    assert any("resuming on other" in e.payload.get("message", "") for e in store.events(job.id))


def test_list_and_unknown(store: JobStore) -> None:
    a = store.create(JobKind.EXPORT, {})
    b = store.create(JobKind.FINETUNE, {})
    store.claim("w")
    assert [j.id for j in store.jobs()] == [b.id, a.id]
    assert [j.id for j in store.jobs(JobState.QUEUED)] == [b.id]
    with pytest.raises(NotFound, match="no job 'nope'"):
        store.get("nope")


def test_listing_is_newest_first_within_the_limit(store: JobStore) -> None:
    a, b, c = (store.create(JobKind.EXPORT, {}) for _ in range(3))
    assert [j.id for j in store.jobs(limit=2)] == [c.id, b.id]
    assert [j.id for j in store.jobs(limit=1)] == [c.id]
    with pytest.raises(InvalidArgument, match="limit must be >= 1; received 0"):
        store.jobs(limit=0)
    assert a.id in [j.id for j in store.jobs()]


def test_only_the_holder_keeps_a_job_alive(store: JobStore) -> None:
    """A heartbeat from a worker that lost the job (its claim went stale and another took
    it) does not keep the job from being claimed again."""
    job = store.create(JobKind.EXPORT, {})
    store.claim("old")
    time.sleep(0.2)
    assert store.heartbeat(job.id, "someone-else") is JobState.RUNNING
    again = store.claim("new", stale_after_s=0.1)
    assert again is not None and (again.id, again.worker) == (job.id, "new")


def test_latest_events_by_job(store: JobStore) -> None:
    a, b = store.create(JobKind.EXPORT, {}), store.create(JobKind.EXPORT, {})
    store.add_event(a.id, EventType.LOG, {"message": "x"})
    assert store.latest_events([a.id, b.id, "nope"]) == {a.id: 2, b.id: 1}
    assert store.latest_events([b.id]) == {b.id: 1}
    assert store.latest_events([]) == {}


def test_an_ended_job_keeps_its_error_or_result(store: JobStore) -> None:
    failed, done = store.create(JobKind.EXPORT, {}), store.create(JobKind.EXPORT, {})
    store.claim("w"), store.claim("w")
    ended = store.set_state(failed.id, JobState.FAILED, error="boom")
    assert (ended.error, ended.result, ended.finished_at is not None) == ("boom", None, True)
    assert store.events(failed.id)[-1].payload == {"state": "FAILED", "error": "boom"}
    ended = store.set_state(done.id, JobState.SUCCEEDED, result={"version": 2})
    assert (ended.error, ended.result) == (None, {"version": 2})
    assert store.events(done.id)[-1].payload == {"state": "SUCCEEDED"}
    assert store.get(failed.id).error == "boom" and store.get(done.id).result == {"version": 2}
    assert store.get(failed.id).created_at.tzinfo is not None  # UTC, also from SQLite
    assert store.get(done.id).updated_at == ended.updated_at  # as stored, not when read
    assert store.get(done.id).created_at == done.created_at
    created = store.events(done.id)[0]
    assert created.time <= ended.updated_at  # the QUEUED event, as stored, not when read


def test_a_store_outlives_its_dropped_connections() -> None:
    """PostgreSQL restarted, or a proxy that closed idle connections: the next call
    reconnects instead of failing on a dead pooled connection."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    with postgres_job_store() as jobs:
        job = jobs.create(JobKind.EXPORT, {})  # leaves a connection in the store's pool
        other = create_engine(jobs.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with other.connect() as admin:
            admin.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            )  # fmt: skip
        other.dispose()
        assert jobs.get(job.id).state is JobState.QUEUED


def test_events_written_side_by_side_get_one_number_each(store: JobStore) -> None:
    """Writers that pick the same next number at once: the loser retries with the next."""
    job = store.create(JobKind.EXPORT, {})
    stores = [JobStore(store.url) for _ in range(6)]

    def write(i: int) -> list[int]:
        return [stores[i].add_event(job.id, EventType.LOG, {"n": n}) for n in range(8)]

    with ThreadPoolExecutor(6) as pool:
        numbers = [seq for seqs in pool.map(write, range(6)) for seq in seqs]
    assert sorted(numbers) == list(range(2, 50))
    assert [e.seq for e in store.events(job.id)] == list(range(1, 50))
    for other in stores:
        other.close()


def test_times_are_utc_whatever_the_servers_time_zone() -> None:
    """A PostgreSQL session in another time zone (a server's default, or a DBA's) reads and
    writes the same instants: every time column holds a time zone."""
    import datetime as dt

    with postgres_job_store() as jobs:
        tokyo = JobStore(f"{jobs.url}?options=-c%20TimeZone%3DAsia%2FTokyo")
        job = tokyo.create(JobKind.EXPORT, {})
        tokyo.claim("w")
        tokyo.add_event(job.id, EventType.LOG, {"message": "x"})
        assert tokyo.census().longest_silence_s < 3600  # the heartbeat, 9 hours off if naive
        ended = tokyo.set_state(job.id, JobState.FAILED, error="boom")
        now = dt.datetime.now(dt.UTC)
        for store in (tokyo, jobs):
            read = store.get(job.id)
            times = [read.created_at, read.updated_at, read.started_at, read.finished_at]
            times += [e.time for e in store.events(job.id)]
            assert all(t is not None and abs(t - now) < dt.timedelta(hours=1) for t in times), (
                times, now)  # fmt: skip
        assert ended.finished_at == jobs.get(job.id).finished_at
        jobs.create(JobKind.EXPORT, {})
        assert jobs.claim("here") is not None
        assert tokyo.claim("there", stale_after_s=3600) is None  # beating, not 9 hours silent
        tokyo.close()


def test_a_job_ends_once_when_its_ends_race(store: JobStore) -> None:
    """Six writers end each job at once (a worker settling it, its process finishing, a
    cancel): one wins, the others see the state it left and are refused by the state
    machine; no job records two ends."""
    jobs = [store.create(JobKind.EXPORT, {}) for _ in range(8)]
    for _ in jobs:
        store.claim("w")
    stores = [JobStore(store.url) for _ in range(6)]
    ends = [JobState.FAILED, JobState.SUCCEEDED, JobState.CANCELLING] * 2

    def end(i: int) -> list[str]:
        outcomes = []
        for job in jobs:
            try:
                stores[i].set_state(job.id, ends[i])
                outcomes.append("won")
            except IllegalTransition:
                outcomes.append("refused")
        return outcomes

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(end, range(6)))
    for j, job in enumerate(jobs):
        winners = [ends[i] for i in range(6) if outcomes[i][j] == "won"]
        states = [e.payload["state"] for e in store.events(job.id) if e.type is EventType.STATE]
        assert states[:2] == ["QUEUED", "RUNNING"]
        assert sorted(states[2:]) == sorted(w.value for w in winners)  # every win recorded
        assert sum(w.terminal for w in winners) == 1 and JobState(states[-1]).terminal
    for other in stores:
        other.close()


def test_database_urls(tmp_path: Path) -> None:
    from zoo.jobs.store import database_url

    assert database_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
    assert database_url(tmp_path / "jobs.db") == f"sqlite:///{tmp_path.resolve() / 'jobs.db'}"
    assert JobStore(tmp_path / "jobs.db").dialect == "sqlite"


def _claim_all(url: str, worker: str, go: object, out: multiprocessing.Queue) -> None:
    jobs = JobStore(url)
    mine = []
    go.wait(60)  # type: ignore[attr-defined]  # all workers start claiming together
    while (job := jobs.claim(worker)) is not None:
        mine.append(job.id)
        time.sleep(0.01)  # a little work, so that the others get a turn
    out.put(mine)


def test_concurrent_workers_never_take_the_same_job(store: JobStore) -> None:
    created = {store.create(JobKind.EXPORT, {"n": i}).id for i in range(40)}
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = context.Queue()
    go = context.Event()
    workers = [
        context.Process(target=_claim_all, args=(store.url, f"w{i}", go, out)) for i in range(4)
    ]
    for w in workers:
        w.start()
    time.sleep(3)  # let the spawned interpreters import
    go.set()
    claimed = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(30)
    every = [job for mine in claimed for job in mine]
    assert sorted(every) == sorted(created)  # each job exactly once
    assert len(set(every)) == len(every)
    assert sum(1 for mine in claimed if mine) >= 2  # they really competed


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.jobs.worker import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def test_visible_gpus_without_the_variable_ask_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """nvidia-smi -L lists one "GPU i: ..." line per device (and MIG lines under them); on a
    machine without it there are none."""
    from zoo.jobs.worker import visible_gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpus() == []
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\n"
        "echo '  MIG 1g.10gb Device 0: (UUID: MIG-b)'\n"
        "echo 'GPU 1: NVIDIA H100 (UUID: GPU-c)'\n"
    )
    smi.chmod(0o755)
    assert visible_gpus() == ["0", "1"]  # not ["0", "2"]: the MIG line is no GPU


def test_a_worker_outlives_a_failing_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A claim that raises (the database down, a table gone) is logged; the worker polls on."""
    import sqlite3
    import threading

    from zoo.jobs.worker import Worker, WorkerSettings

    db = tmp_path / "jobs.db"
    settings = WorkerSettings(str(db), tmp_path / "data", tmp_path / "repo", poll_s=0.02)
    worker = Worker(settings, name="w1")
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TABLE job_events")
        connection.execute("DROP TABLE jobs")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    with caplog.at_level("ERROR", logger="zoo"):
        thread.start()
        deadline = time.monotonic() + 30
        while len([r for r in caplog.records if "claiming" in r.getMessage()]) < 3:
            assert time.monotonic() < deadline, "the worker did not retry"
            time.sleep(0.02)
        assert thread.is_alive()
        JobStore(db)  # the tables are back: claims find nothing, without errors
        time.sleep(0.1)  # a claim already under way may still fail once
        failures = len(caplog.records)
        time.sleep(0.3)
        assert thread.is_alive() and len(caplog.records) == failures
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert "no such table: jobs" in caplog.text


def test_a_worker_waits_its_poll_interval_after_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed claim is followed by the poll wait, not by another claim at once: with a
    five-minute interval there is one failure until the worker is stopped."""
    import sqlite3
    import threading

    from zoo.jobs.worker import Worker, WorkerSettings

    db = tmp_path / "jobs.db"
    worker = Worker(WorkerSettings(str(db), tmp_path / "data", tmp_path / "repo", poll_s=300))
    with sqlite3.connect(db) as connection:
        connection.execute("DROP TABLE job_events")
        connection.execute("DROP TABLE jobs")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    with caplog.at_level("ERROR", logger="zoo"):
        thread.start()
        deadline = time.monotonic() + 30
        while not caplog.records:
            assert time.monotonic() < deadline, "the claim did not fail"
            time.sleep(0.02)
        time.sleep(0.5)  # a worker that did not wait would fail again and again meanwhile
        assert len(caplog.records) == 1
    stop.set()  # ends the wait at once
    thread.join(10)
    assert not thread.is_alive()


def test_job_specs_round_trip_through_the_stored_shape() -> None:
    from zoo.catalog.weights import WeightsSource
    from zoo.jobs.records import ExportJobSpec, FineTuneJobSpec
    from zoo.jobs.training import FineTuneParams

    finetune = FineTuneJobSpec("MobileNetV2", "abc", "pets", FineTuneParams(epochs=2, weights=None))
    stored = finetune.to_dict()
    assert stored["params"]["epochs"] == 2 and stored["params"]["weights"] is None
    assert FineTuneJobSpec.from_dict(stored) == finetune
    export = ExportJobSpec("ResNet50", WeightsSource.parse("none"), "uint8", None, 3)
    assert export.to_dict() == {"model": "ResNet50", "weights": None, "input": "uint8",
                                "model_name": None, "version": 3}  # fmt: skip
    assert ExportJobSpec.from_dict(export.to_dict()) == export
    # a job stored before the specs existed reads the same
    old = {"model": "ResNet50", "weights": "/w/r.h5", "input": "", "model_name": "r"}
    assert ExportJobSpec.from_dict(old) == ExportJobSpec(
        "ResNet50", WeightsSource("file", "/w/r.h5"), "uint8", "r", None
    )


@pytest.mark.parametrize(
    ("given", "kind", "keras", "text"),
    [("imagenet", "imagenet", "imagenet", "imagenet"), ("none", "none", None, "none"),
     (None, "none", None, "none"), ("/w/x.h5", "file", "/w/x.h5", "/w/x.h5"),
     (Path("/w/y.h5"), "file", "/w/y.h5", "/w/y.h5")],
)  # fmt: skip
def test_weights_source_reads_every_spelling(given, kind, keras, text) -> None:
    from zoo.catalog.weights import WeightsSource

    source = WeightsSource.parse(given)
    assert (source.kind, source.keras_arg, str(source)) == (kind, keras, text)
    assert WeightsSource.parse(str(source)) == source


def test_census_counts_states_and_the_longest_silence(store: JobStore) -> None:
    empty = store.census()
    assert set(empty.counts) == set(JobState) and not any(empty.counts.values())
    assert empty.longest_silence_s == 0.0
    a, b, _, _ = (store.create(JobKind.EXPORT, {}) for _ in range(4))
    store.claim("w")  # a runs
    store.set_state(a.id, JobState.FAILED, error="boom")
    store.claim("w")  # b runs, beating from now
    time.sleep(0.2)
    census = store.census()
    assert {s: n for s, n in census.counts.items() if n} == {Q: 2, R: 1, F: 1}
    assert 0.2 <= census.longest_silence_s < 30
    store.heartbeat(b.id, "w")
    assert store.census().longest_silence_s < 0.2


# -- watching: streams wait on notifications, not on the database ------------------------------
def _add_event_from_another_process(url: str, job_id: str) -> None:
    code = (
        "import sys\n"
        "from zoo.jobs.records import EventType\n"
        "from zoo.jobs.store import JobStore\n"
        "JobStore(sys.argv[1]).add_event(sys.argv[2], EventType.LOG, {'message': 'from afar'})\n"
    )
    subprocess.run([sys.executable, "-c", code, url, job_id], check=True, timeout=120)


def _reader(store: JobStore):  # type: ignore[no-untyped-def]
    def read(job_id: str, after: int) -> tuple[bool, list[JobEvent]]:
        return store.get(job_id).state.terminal, store.events(job_id, after)

    return read


async def _until(condition, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def test_fifty_watchers_cost_one_poll_and_hear_another_process(store: JobStore) -> None:
    job = store.create(JobKind.EXPORT, {})
    queries: list[str] = []
    sqlalchemy_event.listen(
        store.engine, "before_cursor_execute", lambda *args: queries.append(args[2])
    )

    async def scenario() -> None:
        io = ThreadPoolExecutor(4)
        hub = EventHub(store, io, poll_s=0.2, max_wait_s=120)
        seen: list[list[int]] = [[] for _ in range(50)]

        async def watch(i: int) -> None:
            async for event in hub.watch(job.id, 0, _reader(store)):
                seen[i].append(event.seq)

        tasks = [asyncio.create_task(watch(i)) for i in range(50)]
        await _until(lambda: hub.watchers == 50)
        before = len(queries)
        await asyncio.sleep(1.0)
        idle = len(queries) - before
        if store.dialect == "sqlite":  # one poll per 0.2 s for all 50 (a few statements each)
            assert 0 < idle <= 6 * 4, queries[before:]
        else:  # LISTEN: no query at all while nothing happens
            assert idle == 0, queries[before:]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _add_event_from_another_process, store.url, job.id)
        await _until(lambda: all(s == [1, 2] for s in seen))
        await loop.run_in_executor(None, store.set_state, job.id, JobState.CANCELLED)
        await asyncio.wait_for(asyncio.gather(*tasks), 15)  # the job ended: every stream ends
        assert all(s == [1, 2, 3] for s in seen)
        await hub.close()
        io.shutdown()

    asyncio.run(scenario())


def test_a_write_in_this_process_wakes_watchers_without_polling(store: JobStore) -> None:
    job = store.create(JobKind.EXPORT, {})
    other = JobStore(store.url)  # e.g. a worker thread's store: the same database

    async def scenario() -> None:
        io = ThreadPoolExecutor(2)
        hub = EventHub(store, io, poll_s=300, max_wait_s=300)  # only a notification wakes it
        seen: list[int] = []

        async def watch() -> None:
            async for event in hub.watch(job.id, 0, _reader(store)):
                seen.append(event.seq)

        task = asyncio.create_task(watch())
        await _until(lambda: hub.watchers == 1)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, other.add_event, job.id, EventType.LOG, {"message": "x"})
        await _until(lambda: seen == [1, 2], timeout=10)
        await hub.close()  # the stream ends: the server is stopping
        with pytest.raises(
            Unavailable, match=r"the server is stopping; watch job .* after event 2"
        ):
            await asyncio.wait_for(task, 10)
        io.shutdown()

    asyncio.run(scenario())
    other.close()
