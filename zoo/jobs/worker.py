"""Job workers: claim a job, run it in a child process, keep its heartbeat, pass on cancels.

Any number of workers, on any number of machines, can share one job store (PostgreSQL). A
worker killed outright stops beating; after ``stale_after_s`` another worker (or the same
one restarted) claims the job again and its child resumes from the last checkpoint. A child
that crashes ends its job FAILED with the reason, and the worker goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from zoo.jobs.records import JobState
from zoo.jobs.store import JobStore
from zoo.lifetime import child_env

log = logging.getLogger("zoo.jobs.worker")


@dataclass(frozen=True)
class WorkerSettings:
    database: str
    data_dir: Path
    repository: Path
    weights_dir: str | None = None
    poll_s: float = 1.0
    heartbeat_s: float = 2.0
    stale_after_s: float = 30.0
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for this worker's jobs
    mlflow_tracking_uri: str = ""  # optional: zoo.jobs.tracking
    mlflow_experiment: str = "keras-zoo"


def visible_gpus() -> list[str]:
    """GPU ids jobs may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [g.strip() for g in declared.split(",") if g.strip() and g.strip() != "-1"]
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    # One "GPU i: ..." line per device, with its MIG devices' lines (if any) under it
    devices = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
    return [str(i) for i in range(len(devices))]


def _last_words(lines: list[str]) -> str:
    """The most telling line of a dead child's stderr: a fatal error's, else the last."""
    for i, line in enumerate(lines):
        if line.startswith("Fatal Python error"):
            frames = [f.strip() for f in lines[i + 1 :] if f.strip().startswith("File ")]
            return f"{line.strip()} at {frames[0]}" if frames else line.strip()
    return lines[-1] if lines else ""


class Worker:
    def __init__(self, settings: WorkerSettings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = JobStore(settings.database)

    def run_forever(self, stop: threading.Event) -> None:
        log.info("worker %s polling %s", self.name, self.store.url.split("@")[-1])
        while not stop.is_set():
            try:
                ran = self.run_once(stop)
            except Exception:  # a database outage must not end the worker: log, wait, retry
                log.exception("worker %s: claiming or settling a job failed; retrying", self.name)
                ran = False
            if not ran:
                stop.wait(self.settings.poll_s)

    def run_once(self, stop: threading.Event | None = None) -> bool:
        """Claim and run one job to its end; False when there was none."""
        job = self.store.claim(self.name, self.settings.stale_after_s)
        if job is None:
            return False
        log.info("worker %s runs %s job %s (attempt %d)", self.name, job.kind, job.id, job.attempts)
        setup = {
            "job_id": job.id,
            "database": self.settings.database,
            "data_dir": str(self.settings.data_dir),
            "repository": str(self.settings.repository),
            "weights_dir": self.settings.weights_dir,
            "mlflow_tracking_uri": self.settings.mlflow_tracking_uri,
            "mlflow_experiment": self.settings.mlflow_experiment,
        }
        env = {**os.environ, **child_env(), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        if self.settings.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.settings.gpu
        with tempfile.TemporaryFile() as stderr:
            child = subprocess.Popen(
                [sys.executable, "-m", "zoo.jobs.child", json.dumps(setup)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
            cancel_sent = False
            while child.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(self.settings.heartbeat_s)
                state = self.store.heartbeat(job.id, self.name)
                if state is JobState.CANCELLING and not cancel_sent:
                    child.send_signal(signal.SIGUSR1)  # stop at the next batch
                    cancel_sent = True
                if stop is not None and stop.is_set():
                    self._hand_back(job.id, child)
                    return True
            stderr.seek(0)
            tail = [ln for ln in stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        self._settle(job.id, child.returncode, _last_words(tail), cancel_sent)
        return True

    def _hand_back(self, job_id: str, child: subprocess.Popen[bytes]) -> None:
        """Worker shutdown: stop the child and queue the job again to resume elsewhere."""
        child.kill()
        child.wait()
        try:
            cancelling = self.store.get(job_id).state is JobState.CANCELLING
            self.store.set_state(job_id, JobState.CANCELLED if cancelling else JobState.QUEUED)
        except Exception as e:  # ended meanwhile, or the store is down: say so and stop anyway
            log.warning(
                "worker %s stopping: could not hand job %s back (%s); if it is still running "
                "another worker claims it once its heartbeat is stale",
                self.name, job_id, e,
            )  # fmt: skip
            return
        log.info("worker %s stopping: job %s queued again to resume", self.name, job_id)

    def _settle(self, job_id: str, code: int, last_line: str, cancel_sent: bool) -> None:
        """A child that died without ending its job: FAILED (or CANCELLED) with the reason."""
        job = self.store.get(job_id)
        if job.state.terminal or job.worker != self.name:
            return  # ended, let go (a search's next wave), or another worker's now
        if cancel_sent or job.state is JobState.CANCELLING:
            self.store.set_state(job_id, JobState.CANCELLED)
            return
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        hint = " (out of memory?)" if code == -signal.SIGKILL else ""
        self.store.set_state(
            job_id,
            JobState.FAILED,
            error=f"the job process {how}{hint}: {last_line or 'no error output'}",
        )
        log.error("job %s failed: process %s", job_id, how)
