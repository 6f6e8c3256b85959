"""One job in its own process: ``python -m zoo.jobs.child '<json>'``.

Started by a worker (``zoo.jobs.worker``), it reads the job from the store, runs it (fine-tuning
then export, or export alone) and records every event and the final state there itself.
SIGUSR1 asks it to stop (a cancel): training stops at the next batch, an export kills its
own child process and publishes nothing; the job then ends CANCELLED.
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from zoo.catalog import get_spec
from zoo.errors import Cancelled, ZooError
from zoo.jobs.datasets import DatasetStore
from zoo.jobs.promotion import label_published
from zoo.jobs.records import EventType, ExportJobSpec, FineTuneJobSpec, Job, JobKind, JobState
from zoo.jobs.store import JobStore
from zoo.lifetime import die_with_parent
from zoo.repository import Repository

_stop_requested = False


def _request_stop(_signum: int, _frame: Any) -> None:
    global _stop_requested
    _stop_requested = True


def should_stop() -> bool:
    return _stop_requested


def run_finetune(job: Job, store: JobStore, setup: dict[str, Any]) -> dict[str, Any]:
    from zoo.export.exporter import export_model
    from zoo.jobs.training import train

    job_spec = FineTuneJobSpec.from_dict(job.params)
    spec = get_spec(job_spec.base_model)
    params = job_spec.params
    datasets = DatasetStore(Path(setup["data_dir"]) / "datasets")
    dataset = datasets.get(job_spec.dataset_id)
    files = datasets.image_files(dataset.id)
    workdir = Path(setup["data_dir"]) / "jobs" / job.id
    workdir.mkdir(parents=True, exist_ok=True)

    def report(kind: str, payload: dict[str, Any]) -> None:
        store.add_event(job.id, EventType(kind), payload)

    result = train(
        spec,
        files,
        list(dataset.classes),
        params,
        workdir,
        report,
        should_stop,
        weights_dir=setup.get("weights_dir"),
    )
    report("log", {"message": f"validation accuracy {result.val_accuracy:.3f}; exporting"})
    exported = export_model(
        result.model_path,
        setup["repository"],
        model_name=job_spec.output_model,
        preprocessing=spec.preprocessing,
        labels=result.class_names,
        training={
            "job_id": job.id,
            "base_model": spec.name,
            "dataset_id": dataset.id,
            "params": params.to_dict(),
            "history": result.history,
            "val_accuracy": result.val_accuracy,
            "confusion_matrix": result.confusion_matrix,
            "class_names": result.class_names,
            "images_per_second": result.images_per_second,
        },
        progress=lambda _stage, message: report("log", {"message": message}),
        should_stop=should_stop,
    )
    promotion = label_published(
        Repository(setup["repository"]), exported.model, exported.version, params.promote, job.id
    )
    report("log", {"message": promotion.reason})
    return {
        "model": exported.model,
        "version": exported.version,
        "labels": list(promotion.labels),
        "promotion": promotion.reason,
        "val_accuracy": result.val_accuracy,
        "confusion_matrix": result.confusion_matrix,
        "class_names": result.class_names,
        "images_per_second": result.images_per_second,
        "verification": exported.verification,
    }


def run_export(job: Job, store: JobStore, setup: dict[str, Any]) -> dict[str, Any]:
    from zoo.export.exporter import export_model

    job_spec = ExportJobSpec.from_dict(job.params)

    def log(_stage: str, message: str) -> None:
        store.add_event(job.id, EventType.LOG, {"message": message})

    result = export_model(
        job_spec.model,
        setup["repository"],
        model_name=job_spec.output_model,
        version=job_spec.version,
        weights=job_spec.weights,
        input=job_spec.input,
        weights_dir=setup.get("weights_dir"),
        progress=log,
        should_stop=should_stop,
    )
    return result.to_dict()


def main() -> int:
    die_with_parent()
    faulthandler.enable()  # a crash in native code leaves its stack in the job's error
    setup = json.loads(sys.argv[1])
    signal.signal(signal.SIGUSR1, _request_stop)
    store = JobStore(setup["database"])
    job = store.get(setup["job_id"])
    try:
        run = run_finetune if job.kind is JobKind.FINETUNE else run_export
        result = run(job, store, setup)
    except Cancelled:
        store.set_state(job.id, JobState.CANCELLED)
        return 0
    except ZooError as e:
        store.set_state(job.id, JobState.FAILED, error=f"{type(e).__name__}: {e}")
        return 0
    except Exception as e:  # a bug or a library failure: the job says so, the worker goes on
        traceback.print_exc()
        store.set_state(job.id, JobState.FAILED, error=f"internal error: {type(e).__name__}: {e}")
        return 1
    store.add_event(job.id, EventType.RESULT, result)
    # also from CANCELLING: the work finished before it noticed the request
    store.set_state(job.id, JobState.SUCCEEDED, result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
