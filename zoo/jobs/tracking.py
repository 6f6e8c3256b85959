"""Optional MLflow tracking of fine-tune jobs: never required, never fatal.

When the server is configured with a tracking URI (``mlflow_tracking_uri``) and MLflow is
installed (the ``mlflow`` extra), each fine-tune job is one MLflow run in the configured
experiment: its parameters, each epoch's metrics (the names the job's history uses, such as
``phase1_val_accuracy``, with the epoch as the step), the test report's figures
(``test_accuracy``, ``test_top5_accuracy``, ``test_macro_f1``, ``test_weighted_f1``) and the
whole report as ``evaluation.json``. A job resumed on another worker continues the same run
(found by its ``zoo.job_id`` tag).

Anything MLflow raises (not installed, tracking server down, a refused write) becomes one line
in the job's log, and the job goes on without tracking: the job's own history, report and
TensorBoard logs stay the record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from zoo.manifest import Evaluation

log = logging.getLogger("zoo.jobs.tracking")

JOB_TAG = "zoo.job_id"
Say = Callable[[str], object]  # one line into the job's log


class Tracker:
    """Where a job's figures go besides its own record; this one drops them."""

    def epoch(self, phase: int, epoch: int, metrics: Mapping[str, float]) -> None:
        """The metrics Keras reported at the end of ``epoch`` (1-based) of ``phase``."""

    def evaluation(self, evaluation: Evaluation) -> None:
        """The exported model's test report."""

    def finish(self, status: str) -> None:
        """The job ended: ``FINISHED``, ``FAILED`` or ``KILLED`` (MLflow's run states)."""


class MlflowTracker(Tracker):
    """One MLflow run per job, written through ``MlflowClient`` (no global active run)."""

    def __init__(self, client: Any, run_id: str, say: Say) -> None:
        self.client, self.run_id, self.say = client, run_id, say

    def _guarded(self, what: str, write: Callable[[], object]) -> None:
        if self.client is None:
            return
        try:
            write()
        except Exception as e:  # MLflow down or refusing: the job goes on without it
            self.say(f"MLflow: {what} failed ({type(e).__name__}: {str(e)[:200]}); "
                     "no more MLflow logging for this job")  # fmt: skip
            self.client = None

    def epoch(self, phase: int, epoch: int, metrics: Mapping[str, float]) -> None:
        figures = {f"phase{phase}_{k}": float(v) for k, v in metrics.items()}
        self._guarded("logging epoch metrics", lambda: self._log_metrics(figures, epoch))

    def _log_metrics(self, figures: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = _now_ms()
        metrics = [Metric(k, v, now, step) for k, v in figures.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def evaluation(self, evaluation: Evaluation) -> None:
        figures = {
            "test_accuracy": evaluation.accuracy,
            "test_macro_f1": evaluation.macro.f1,
            "test_weighted_f1": evaluation.weighted.f1,
        }
        if evaluation.top5_accuracy is not None:
            figures["test_top5_accuracy"] = evaluation.top5_accuracy
        self._guarded("logging the test report", lambda: self._log_metrics(figures, 0))
        self._guarded(
            "storing evaluation.json",
            lambda: self.client.log_dict(self.run_id, evaluation.to_dict(), "evaluation.json"),
        )

    def finish(self, status: str) -> None:
        self._guarded("ending the run", lambda: self.client.set_terminated(self.run_id, status))


def _now_ms() -> int:
    return int(time.time() * 1000)


def open_tracker(
    uri: str | None,
    experiment: str,
    job_id: str,
    params: Mapping[str, object],
    tags: Mapping[str, str],
    say: Say,
) -> Tracker:
    """The job's tracker: MLflow's when ``uri`` is set and MLflow works, else one that drops
    everything (having said why in the job's log when a URI was set)."""
    if not uri:
        return Tracker()
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        say("MLflow: a tracking URI is set but mlflow is not installed (install the "
            "'mlflow' extra); not logging to MLflow")  # fmt: skip
        return Tracker()
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        earlier = client.search_runs(
            [experiment_id], f"tags.`{JOB_TAG}` = '{job_id}'", max_results=1
        )
        if earlier:  # resumed on another worker: the same run goes on
            run_id = earlier[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            say(f"MLflow: continuing run {run_id} in experiment {experiment!r}")
        else:
            run = client.create_run(experiment_id, run_name=job_id, tags={JOB_TAG: job_id, **tags})
            run_id = run.info.run_id
            client.log_batch(run_id, params=_params(params))
            say(f"MLflow: run {run_id} in experiment {experiment!r} at {uri}")
    except Exception as e:  # unreachable, refused, misconfigured: go on without it
        say(f"MLflow: cannot start a run at {uri} ({type(e).__name__}: {str(e)[:200]}); "
            "not logging to MLflow")  # fmt: skip
        return Tracker()
    return MlflowTracker(client, run_id, say)


def _params(params: Mapping[str, object]) -> list[Any]:
    """MLflow params (strings of at most 6000 characters; nested values flattened a.b)."""
    from mlflow.entities import Param

    flat: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = str(value)[:6000]

    walk("", params)
    return [Param(k, v) for k, v in sorted(flat.items())]
