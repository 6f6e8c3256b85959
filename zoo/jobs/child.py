"""One job in its own process: ``python -m zoo.jobs.child '<json>'``.

Started by a worker (``zoo.jobs.worker``), it reads the job from the store, runs it (fine-tuning
then export, or export alone) and records every event and the final state there itself.
SIGUSR1 asks it to stop (a cancel): training stops at the next batch, an export kills its
own child process and publishes nothing; the job then ends CANCELLED.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog import ModelSpec, get_spec
from zoo.errors import Cancelled, FailedPrecondition, ZooError
from zoo.jobs.datasets import Dataset, DatasetStore
from zoo.jobs.promotion import label_published
from zoo.jobs.records import (
    EventType,
    ExportJobSpec,
    FineTuneJobSpec,
    FineTuneResult,
    Job,
    JobKind,
    JobState,
)
from zoo.jobs.search import (
    SearchJobSpec,
    SearchResult,
    best_trial,
    epoch_accuracies,
    median_rule,
    read_trials,
    tpe_history,
    tpe_wave,
)
from zoo.jobs.splits import DatasetSplit
from zoo.jobs.store import JobStore
from zoo.jobs.tracking import Tracker, open_tracker
from zoo.lifetime import die_with_parent
from zoo.manifest import Evaluation, Manifest
from zoo.repository import ModelVersion, Repository

if TYPE_CHECKING:
    from zoo.export.exporter import ExportResult

_stop_requested = False
_stopped_early: str | None = None  # why a search's median rule stopped this trial


def _request_stop(_signum: int, _frame: Any) -> None:
    global _stop_requested
    _stop_requested = True


def should_stop() -> bool:
    return _stop_requested or _stopped_early is not None


def _median_rule_check(
    store: JobStore, job_id: str, search_id: str, payload: dict[str, Any]
) -> None:
    """After an epoch of a search's trial: stop it if the search's median rule says so."""
    global _stopped_early
    if "val_accuracy" not in payload or _stopped_early is not None:
        return
    search = SearchJobSpec.from_dict(store.get(search_id).params)
    if search.early_stopping != "median":
        return
    point = (int(payload["phase"]), int(payload["epoch"]))
    peers = []
    for trial in store.children(search_id):
        if trial.id == job_id:
            continue
        epochs = [e.payload for e in store.events(trial.id) if e.type is EventType.EPOCH]
        reported = epoch_accuracies(epochs)
        if point in reported:
            peers.append(reported[point])
    where = f"phase {point[0]} epoch {point[1]}"
    _stopped_early = median_rule(float(payload["val_accuracy"]), peers, search.min_trials, where)
    if _stopped_early is not None:
        store.add_event(job_id, EventType.LOG, {"message": _stopped_early})


def run_finetune(job: Job, store: JobStore, setup: dict[str, Any]) -> FineTuneResult:
    job_spec = FineTuneJobSpec.from_dict(job.params)
    spec = get_spec(job_spec.base_model)
    params = job_spec.params
    dataset = DatasetStore(Path(setup["data_dir"]) / "datasets").get(job_spec.dataset_id)
    workdir = Path(setup["data_dir"]) / "jobs" / job.id
    workdir.mkdir(parents=True, exist_ok=True)
    tracker = open_tracker(
        setup.get("mlflow_tracking_uri"),
        setup.get("mlflow_experiment") or "keras-zoo",
        job.id,
        {"base_model": spec.name, "dataset_id": dataset.id, **params.to_dict()},
        {"zoo.output_model": job_spec.output_model, "zoo.base_model": spec.name},
        lambda message: store.add_event(job.id, EventType.LOG, {"message": message}),
    )
    try:
        result = _finetune(job, store, setup, job_spec, spec, dataset, workdir, tracker)
    except Cancelled:
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return result


def _finetune(
    job: Job,
    store: JobStore,
    setup: dict[str, Any],
    job_spec: FineTuneJobSpec,
    spec: ModelSpec,
    dataset: Dataset,
    workdir: Path,
    tracker: Tracker,
) -> FineTuneResult:
    from zoo.export.exporter import export_model
    from zoo.jobs.evaluation import evaluate_onnx, write_tensorboard
    from zoo.jobs.training import TENSORBOARD_DIR, train

    params = job_spec.params
    datasets = DatasetStore(Path(setup["data_dir"]) / "datasets")
    split = datasets.split(
        dataset.id, params.validation_split, params.test_split, params.split_seed
    )
    parts = datasets.split_files(dataset.id, split)

    def report(kind: str, payload: dict[str, Any]) -> None:
        store.add_event(job.id, EventType(kind), payload)
        if kind == "epoch":
            figures = {k: v for k, v in payload.items() if k not in ("phase", "epoch", "seconds")}
            tracker.epoch(payload["phase"], payload["epoch"], figures)
            if job_spec.search_id is not None:
                _median_rule_check(store, job.id, job_spec.search_id, payload)

    report(
        "log",
        {
            "message": f"split {split.id}: {len(parts['train'])} train, "
            f"{len(parts['validation'])} validation, {len(parts['test'])} test images"
        },
    )
    result = train(
        spec,
        parts["train"],
        parts["validation"],
        list(dataset.classes),
        params,
        workdir,
        report,
        should_stop,
        weights_dir=setup.get("weights_dir"),
    )
    report("log", {"message": f"validation accuracy {result.val_accuracy:.3f}; exporting"})

    def evaluate(model_file: Path, manifest: Manifest) -> Evaluation | None:
        report("log", {"message": f"testing the exported model on {len(parts['test'])} images"})
        evaluation = evaluate_onnx(
            model_file, manifest, split.id, parts["test"], dataset.path, result.class_names
        )
        if evaluation is None:
            report("log", {"message": "no test report: Classify decodes none of the test images"})
            return None
        write_tensorboard(workdir / TENSORBOARD_DIR / "evaluation", evaluation)
        tracker.evaluation(evaluation)
        report("log", {"message": f"test accuracy {evaluation.accuracy:.3f}"})
        return evaluation

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
            "split": split.id,
            "params": params.to_dict(),
            "history": result.history,
            "val_accuracy": result.val_accuracy,
            "confusion_matrix": result.confusion_matrix,
            "class_names": result.class_names,
            "images_per_second": result.images_per_second,
        },
        progress=lambda _stage, message: report("log", {"message": message}),
        should_stop=should_stop,
        evaluate=evaluate,
        verification_images=_verification_images(parts["test"] or parts["validation"]),
    )

    evaluation = exported.manifest.evaluation
    promotion = label_published(
        Repository(setup["repository"]),
        exported.model,
        exported.version,
        params.promote,
        job.id,
        accuracy=evaluation.accuracy if evaluation else None,
        stable_accuracy=_stable_accuracy(datasets, dataset.id, split, result.class_names, report),
    )
    report("log", {"message": promotion.reason})
    return FineTuneResult(
        model=exported.model,
        version=exported.version,
        val_accuracy=result.val_accuracy,
        confusion_matrix=result.confusion_matrix,
        class_names=result.class_names,
        images_per_second=result.images_per_second,
        verification=exported.verification,
        split=split.id,
        evaluation=evaluation,
        labels=list(promotion.labels),
        promotion=promotion.reason,
    )


VERIFICATION_IMAGES = 8


def _verification_images(files: list[tuple[Path, int]]) -> list[Path]:
    """Up to ``VERIFICATION_IMAGES`` held-out images, spread over the list (and so over the
    classes): the export is verified on the inputs the model is for (zoo.export.verify)."""
    step = max(1, len(files) // VERIFICATION_IMAGES)
    return [path for path, _ in files[::step][:VERIFICATION_IMAGES]]


def _stable_accuracy(
    datasets: DatasetStore,
    dataset_id: str,
    split: DatasetSplit,
    class_names: list[str],
    report: Callable[[str, dict[str, Any]], None],
) -> Callable[[ModelVersion], float | None]:
    """How ``if_better`` measures the stable version on a job's test images: its stored
    report when it was tested on the same split, else computed now; None when its classes
    differ."""

    def stable_accuracy(stable: ModelVersion) -> float | None:
        from zoo.jobs.evaluation import evaluate_onnx

        manifest = stable.manifest()
        if list(manifest.labels) != list(class_names):
            return None
        if manifest.evaluation is not None and manifest.evaluation.split == split.id:
            return manifest.evaluation.accuracy
        report("log", {"message": f"testing stable version {stable.version} on the same images"})
        dataset = datasets.get(dataset_id)
        test = datasets.split_files(dataset_id, split)["test"]
        evaluation = evaluate_onnx(
            stable.model_file, manifest, split.id, test, dataset.path, class_names
        )
        return evaluation.accuracy if evaluation else None

    return stable_accuracy


def run_search(job: Job, store: JobStore, setup: dict[str, Any]) -> SearchResult | None:
    """A search whose trials have ended: its table, and the promote rule on the best trial;
    or, for tpe with trials still to come, the next wave queued (None: not ended)."""
    search = SearchJobSpec.from_dict(job.params)
    rows = read_trials(store, job)
    if search.strategy == "tpe" and len(search.trials) < search.planned:
        count = min(search.parallel, search.planned - len(search.trials))
        wave = tpe_wave(search.dimensions(), tpe_history(rows), count, search.seed, search.parallel)
        grown = dataclasses.replace(search, trials=[*search.trials, *wave])
        specs = [
            FineTuneJobSpec(
                search.base_model, search.dataset_id, search.output_model,
                grown.trial_params(i), job.id, i,
            ).to_dict()
            for i in range(len(search.trials), len(grown.trials))
        ]  # fmt: skip
        store.extend_search(job.id, str(job.worker), grown.to_dict(), specs)
        return None
    best = best_trial(rows)
    if best is None or best.version is None:
        states = ", ".join(f"trial {t.trial} {t.state}" for t in rows) or "no trials"
        raise FailedPrecondition(f"no trial of the search succeeded ({states})")
    if should_stop():
        raise Cancelled("cancelled by request")
    trial_result = store.get(best.job_id).finetune_result()
    assert trial_result is not None  # it succeeded
    params = search.trial_params(best.trial)
    datasets = DatasetStore(Path(setup["data_dir"]) / "datasets")
    split = datasets.split(
        search.dataset_id, params.validation_split, params.test_split, params.split_seed
    )

    def report(kind: str, payload: dict[str, Any]) -> None:
        store.add_event(job.id, EventType(kind), payload)

    report("log", {"message": f"trial {best.trial} is the best: version {best.version}"})
    promotion = label_published(
        Repository(setup["repository"]),
        search.output_model,
        best.version,
        search.promote,
        job.id,
        accuracy=best.test_accuracy,
        stable_accuracy=_stable_accuracy(
            datasets, search.dataset_id, split, trial_result.class_names, report
        ),
    )
    report("log", {"message": promotion.reason})
    return SearchResult(
        rows,
        best.trial,
        search.output_model,
        best.version,
        list(promotion.labels),
        promotion.reason,
    )


def run_export(job: Job, store: JobStore, setup: dict[str, Any]) -> ExportResult:
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
    return result


def main() -> int:
    die_with_parent()
    faulthandler.enable()  # a crash in native code leaves its stack in the job's error
    setup = json.loads(sys.argv[1])
    signal.signal(signal.SIGUSR1, _request_stop)
    store = JobStore(setup["database"])
    job = store.get(setup["job_id"])
    try:
        if job.kind is JobKind.FINETUNE:
            result = run_finetune(job, store, setup).to_dict()
        elif job.kind is JobKind.SEARCH:
            ended = run_search(job, store, setup)
            if ended is None:  # a tpe wave queued: the search goes on
                return 0
            result = ended.to_dict()
        else:
            result = run_export(job, store, setup).to_dict()
    except Cancelled:
        if _stopped_early is not None and store.get(job.id).state is JobState.RUNNING:
            # the search cancels its trial, through the same states as a user's cancel
            store.set_state(job.id, JobState.CANCELLING)
        store.set_state(job.id, JobState.CANCELLED, error=_stopped_early)
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
