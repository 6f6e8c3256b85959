"""The job worker with real job processes: claim, heartbeat, cancel, hand-back, settling.

A job process (``python -m zoo.jobs.child``) of a fine-tune reads its dataset's manifest
first. Here that manifest is a named pipe, so the real child blocks in ``open`` until the
test writes to it: the test holds a job running as long as it needs, without a timed wait,
and then kills the child, lets it fail, or stops the worker. Whole fine-tunes and exports
through workers are in test_finetune.py and test_export_jobs.py (minutes each).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from zoo.jobs.datasets import MANIFEST_FILE
from zoo.jobs.records import FineTuneJobSpec, FineTuneParams, Job, JobKind, JobState
from zoo.jobs.store import JobRow, JobStore
from zoo.jobs.worker import Worker, WorkerSettings, _last_words

DATASET = "ab" * 32  # a well-formed id (64 hex characters)


def finetune(store: JobStore) -> Job:
    spec = FineTuneJobSpec("MobileNetV2", DATASET, "tuned", FineTuneParams())
    return store.create(JobKind.FINETUNE, spec.to_dict())


def children() -> list[int]:
    """This process's job processes (the worker runs on a thread of the test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("PPid:"))
        if ppid == os.getpid() and b"zoo.jobs.child" in cmdline:
            found.append(int(entry.name))
    return found


def wait_until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120  # a guard against a hang, not a measurement
    while not condition():
        assert time.monotonic() < deadline, f"waited 120 s for {what}"
        time.sleep(0.02)


class Held:
    """A worker on a thread, running one fine-tune whose child waits on the manifest pipe."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.store = JobStore(tmp_path / "jobs.db")
        manifest = tmp_path / "data" / "datasets" / DATASET / MANIFEST_FILE
        manifest.parent.mkdir(parents=True)
        os.mkfifo(manifest)
        self.manifest = manifest
        self.job = finetune(self.store)
        options = {"heartbeat_s": 0.05, **settings}
        self.worker = Worker(
            WorkerSettings(str(tmp_path / "jobs.db"), tmp_path / "data", tmp_path / "repo",
                           **options),  # type: ignore[arg-type]
            name="w1",
        )  # fmt: skip
        self.stop = threading.Event()
        self.ran: list[object] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(lambda: children(), "the job process")
        (self.child,) = children()
        # Until the child has its SIGUSR1 handler (the cancel), that signal would end it
        wait_until(self._catches_sigusr1, "the job process's cancel handler")

    def _catches_sigusr1(self) -> bool:
        status = (Path("/proc") / str(self.child) / "status").read_text()
        caught = next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:"))
        return bool(int(caught, 16) & (1 << (signal.SIGUSR1 - 1)))

    def _run(self) -> None:
        try:
            self.ran.append(self.worker.run_once(self.stop))
        except Exception as e:
            self.ran.append(e)

    def release(self, text: str) -> None:
        """Let the child read the manifest ``text``."""
        with self.manifest.open("w") as pipe:
            pipe.write(text)

    def finish(self) -> object:
        self.thread.join(120)
        assert not self.thread.is_alive(), "the worker did not return"
        (ran,) = self.ran
        return ran

    def get(self) -> Job:
        return self.store.get(self.job.id)

    def beat_at(self) -> object:
        """The job's last heartbeat, as the store holds it."""
        with Session(self.store.engine) as session:
            row = session.get(JobRow, self.job.id)
            assert row is not None
            return row.heartbeat_at


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Held]:
    running = Held(tmp_path)
    yield running
    for pid in children():  # a failed test must not leave a child waiting on its pipe
        os.kill(pid, signal.SIGKILL)


def test_no_job_no_run(tmp_path: Path) -> None:
    settings = WorkerSettings(str(tmp_path / "jobs.db"), tmp_path / "data", tmp_path / "repo")
    assert Worker(settings).run_once() is False


def test_a_job_its_process_ends_is_left_as_it_ended(tmp_path: Path) -> None:
    """The child fails the job itself (no such dataset); the worker records nothing more."""
    store = JobStore(tmp_path / "jobs.db")
    job = finetune(store)
    settings = WorkerSettings(str(tmp_path / "jobs.db"), tmp_path / "data", tmp_path / "repo")
    worker = Worker(settings, name="w1")
    assert worker.run_once() is True
    ended = store.get(job.id)
    assert (ended.state, ended.worker, ended.attempts) == (JobState.FAILED, "w1", 1)
    assert ended.error is not None and ended.error.startswith(f"NotFound: dataset {DATASET}")
    assert worker.run_once() is False  # nothing else queued


def test_the_worker_beats_while_the_job_runs(held: Held) -> None:
    first = held.beat_at()
    assert first is not None
    wait_until(lambda: held.beat_at() != first, "a second heartbeat")
    assert held.get().state is JobState.RUNNING
    held.release("not json")  # the child fails the job itself and exits 1
    assert held.finish() is True
    ended = held.get()
    assert ended.state is JobState.FAILED and ended.error is not None
    assert ended.error.startswith("internal error: JSONDecodeError"), ended.error


def test_a_killed_job_process_fails_its_job_with_the_reason(held: Held) -> None:
    os.kill(held.child, signal.SIGKILL)
    assert held.finish() is True
    ended = held.get()
    assert ended.state is JobState.FAILED
    assert ended.error == (
        "the job process was killed by signal 9 (out of memory?): no error output"
    )


def test_a_job_process_that_exits_without_ending_its_job(held: Held) -> None:
    os.kill(held.child, signal.SIGTERM)  # default action: the child ends, the job does not
    assert held.finish() is True
    ended = held.get()
    assert ended.state is JobState.FAILED
    assert ended.error == "the job process was killed by signal 15: no error output"


def test_a_cancelled_job_whose_process_dies_ends_cancelled(held: Held) -> None:
    held.store.request_cancel(held.job.id)
    # Once the worker has seen the cancel (its next heartbeat), the child is killed
    beat = held.beat_at()
    wait_until(lambda: held.beat_at() != beat, "a heartbeat after the cancel")
    os.kill(held.child, signal.SIGKILL)
    assert held.finish() is True
    ended = held.get()
    assert (ended.state, ended.error) == (JobState.CANCELLED, None)


def test_a_stopping_worker_hands_its_job_back(held: Held) -> None:
    held.stop.set()
    assert held.finish() is True
    assert children() == []  # the child was killed, not left waiting
    again = held.get()
    assert (again.state, again.worker) == (JobState.QUEUED, "w1")
    assert held.store.claim("w2") is not None  # another worker takes it at once


def test_a_stopping_worker_cancels_a_cancelling_job(held: Held) -> None:
    held.store.request_cancel(held.job.id)
    held.stop.set()
    assert held.finish() is True
    assert children() == []
    assert held.get().state is JobState.CANCELLED


def test_a_stopping_worker_leaves_an_ended_job_alone(
    held: Held, caplog: pytest.LogCaptureFixture
) -> None:
    held.store.set_state(held.job.id, JobState.FAILED, error="ended elsewhere")
    with caplog.at_level("WARNING", logger="zoo"):
        held.stop.set()
        assert held.finish() is True
    assert children() == []
    assert (held.get().state, held.get().error) == (JobState.FAILED, "ended elsewhere")
    assert f"could not hand job {held.job.id} back" in caplog.text


def test_the_job_process_gets_the_workers_gpu(tmp_path: Path) -> None:
    running = Held(tmp_path, gpu="3")
    try:
        environ = dict(
            item.split("=", 1)
            for item in (Path("/proc") / str(running.child) / "environ").read_text().split("\0")
            if "=" in item
        )
        assert environ["CUDA_VISIBLE_DEVICES"] == "3"
        assert environ["PYTHONUNBUFFERED"] == "1"
    finally:
        os.kill(running.child, signal.SIGKILL)
        running.finish()


def test_run_forever_takes_queued_jobs_back_to_back(tmp_path: Path) -> None:
    """Between jobs the worker polls only when it found none: two queued jobs run at once,
    though the poll interval is five minutes."""
    store = JobStore(tmp_path / "jobs.db")
    jobs = [finetune(store), finetune(store)]
    settings = WorkerSettings(
        str(tmp_path / "jobs.db"), tmp_path / "data", tmp_path / "repo", poll_s=300
    )
    stop = threading.Event()
    thread = threading.Thread(target=Worker(settings).run_forever, args=(stop,), daemon=True)
    thread.start()
    wait_until(lambda: all(store.get(j.id).state is JobState.FAILED for j in jobs), "both jobs")
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def test_last_words_name_a_fatal_error_and_its_frame() -> None:
    fatal = [
        "Fatal Python error: Segmentation fault",
        "",
        "Current thread 0x1 (most recent call first):",
        '  File "/x/onnx.py", line 7 in convert',
        '  File "/x/child.py", line 3 in main',
    ]
    assert _last_words(fatal) == (
        'Fatal Python error: Segmentation fault at File "/x/onnx.py", line 7 in convert'
    )
    assert _last_words(["noise", "Fatal Python error: Aborted"]) == "Fatal Python error: Aborted"
    assert _last_words(["first", "second", "MemoryError"]) == "MemoryError"
    assert _last_words([]) == ""
