"""Job records as the store hands them out: frozen, and their JSON shape (the HTTP API's).

The transition table is checked against an explicit list in tests/test_jobs.py.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import pytest

from zoo.catalog.weights import WeightsSource
from zoo.jobs.records import (
    EventType,
    ExportJobSpec,
    FineTuneJobSpec,
    JobKind,
    JobState,
)
from zoo.jobs.store import JobStore
from zoo.jobs.training import FineTuneParams


def test_a_queued_job_has_no_start_or_end_and_a_finished_one_has_both(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    job = store.create(JobKind.EXPORT, {"model": "MobileNetV2"})
    queued = job.to_dict()
    assert queued == {
        "id": job.id, "kind": "export", "state": "QUEUED", "params": {"model": "MobileNetV2"},
        "created_at": job.created_at.isoformat(), "updated_at": job.updated_at.isoformat(),
        "started_at": None, "finished_at": None, "attempts": 0, "worker": None, "error": None,
        "result": None,
    }  # fmt: skip
    store.claim("worker-a")
    done = store.set_state(job.id, JobState.FAILED, error="out of memory").to_dict()
    assert (done["state"], done["attempts"], done["worker"], done["error"]) == (
        "FAILED", 1, "worker-a", "out of memory",
    )  # fmt: skip
    started, finished = (datetime.fromisoformat(done[k]) for k in ("started_at", "finished_at"))
    assert datetime.fromisoformat(queued["created_at"]) <= started <= finished
    assert finished.tzinfo is not None  # a time a client can compare, not a naive one
    store.close()


def test_records_are_frozen(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    job = store.create(JobKind.EXPORT, {"model": "MobileNetV2"})
    (event,) = store.events(job.id)
    assert event.type is EventType.STATE
    finetune = FineTuneJobSpec("MobileNetV2", "d-1", "mine", FineTuneParams())
    export = ExportJobSpec("MobileNetV2", WeightsSource.parse("imagenet"))
    for record, field in [
        (job, "state"), (event, "payload"), (finetune, "output_model"), (export, "version"),
    ]:  # fmt: skip
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, field, None)
    store.close()
