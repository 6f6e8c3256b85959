"""Optional MLflow tracking (zoo.jobs.tracking): a job's run read back from MLflow's own store,
and a tracking server that is down or missing never failing a job."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from conftest import TOKEN
from helpers import DIGITS_BASE, DIGITS_FAST

from client import ZooClient

mlflow = pytest.importorskip("mlflow")

# MLflow 3 keeps its file store only on request; it is the store a test can read back without a
# tracking server (a deployment points the URI at its server: http://...).
FILE_STORE = {"MLFLOW_ALLOW_FILE_STORE": "true"}


@pytest.fixture
def file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in FILE_STORE.items():
        monkeypatch.setenv(key, value)
    return (tmp_path / "mlruns").as_uri()


def test_a_finetune_job_is_one_mlflow_run(tmp_path: Path, digits, file_store: str) -> None:
    from mlflow.tracking import MlflowClient
    from serving import start_server

    folder, _ = digits
    (tmp_path / "repo").mkdir()
    env = {
        "ZOO_DATA_DIR": str(tmp_path / "data"),
        "ZOO_MLFLOW_TRACKING_URI": file_store,
        "ZOO_MLFLOW_EXPERIMENT": "digits-trials",
        **FILE_STORE,
    }
    server = start_server(tmp_path / "repo", tmp_path, "--token", TOKEN, env=env)
    try:
        with ZooClient(server.address, token=TOKEN) as zoo:
            dataset = zoo.upload_dataset(folder)
            job = zoo.finetune(DIGITS_BASE, dataset, "digits", **DIGITS_FAST)
            logs = [e.payload.get("message", "") for e in job.watch() if e.type == "log"]
            job.refresh()
            assert job.state == "SUCCEEDED", job.error
    finally:
        assert server.stop() == 0
    manifest = json.loads((tmp_path / "repo/digits/1/zoo.json").read_text())
    history, evaluation = manifest["training"]["history"], manifest["evaluation"]

    tracking = MlflowClient(tracking_uri=file_store)
    experiment = tracking.get_experiment_by_name("digits-trials")
    assert experiment is not None
    (run,) = tracking.search_runs([experiment.experiment_id])
    assert any(f"MLflow: run {run.info.run_id} in experiment 'digits-trials'" in m for m in logs)
    assert run.info.run_name == job.id and run.info.status == "FINISHED"
    assert run.data.tags["zoo.job_id"] == job.id and run.data.tags["zoo.output_model"] == "digits"
    params = run.data.params
    assert params["base_model"] == DIGITS_BASE and params["dataset_id"] == dataset.id
    for key in ("learning_rate", "batch_size", "image_size", "unfreeze", "epochs"):
        assert params[key] == str(manifest["training"]["params"][key]), key
    # every epoch of both phases, under the history's own names, the epoch as the step
    for key, values in history.items():
        logged = tracking.get_metric_history(run.info.run_id, key)
        assert [m.step for m in logged] == list(range(1, len(values) + 1)), key
        assert [m.value for m in logged] == pytest.approx(values, rel=1e-6), key
    assert set(history) >= {"phase1_accuracy", "phase1_val_loss", "phase2_val_accuracy"}
    metrics = run.data.metrics
    assert metrics["test_accuracy"] == pytest.approx(evaluation["accuracy"])
    assert metrics["test_macro_f1"] == pytest.approx(evaluation["macro"]["f1"])
    assert metrics["test_weighted_f1"] == pytest.approx(evaluation["weighted"]["f1"])
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / "evaluation.json"
    assert json.loads(stored.read_text()) == evaluation


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_tracking_server_that_is_down_is_one_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.jobs.tracking import MlflowTracker, open_tracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    said: list[str] = []
    uri = f"http://127.0.0.1:{closed_port()}"
    tracker = open_tracker(uri, "keras-zoo", "job-1", {"epochs": 1}, {}, said.append)
    assert not isinstance(tracker, MlflowTracker)
    (line,) = said
    assert line.startswith(f"MLflow: cannot start a run at {uri} (") and "not logging" in line
    tracker.epoch(1, 1, {"loss": 0.5})  # the rest of the job goes on, silently
    tracker.finish("FINISHED")
    assert len(said) == 1


def test_without_mlflow_installed_a_uri_is_one_log_line(
    monkeypatch: pytest.MonkeyPatch, file_store: str
) -> None:
    from zoo.jobs.tracking import MlflowTracker, open_tracker

    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow... raises ImportError
    said: list[str] = []
    tracker = open_tracker(file_store, "keras-zoo", "job-1", {}, {}, said.append)
    assert not isinstance(tracker, MlflowTracker)
    assert said == [
        "MLflow: a tracking URI is set but mlflow is not installed (install the 'mlflow' "
        "extra); not logging to MLflow"
    ]
    said.clear()
    assert not isinstance(
        open_tracker("", "keras-zoo", "job-1", {}, {}, said.append), MlflowTracker
    )
    assert said == []  # no URI: nothing to say


def test_a_resumed_job_continues_its_run_and_a_failed_write_stops_tracking(
    file_store: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from zoo.jobs.tracking import MlflowTracker, open_tracker

    said: list[str] = []
    first = open_tracker(file_store, "exp", "job-7", {"a": {"b": 1}}, {"t": "x"}, said.append)
    assert isinstance(first, MlflowTracker)
    first.epoch(1, 1, {"loss": 2.0})
    # the worker died; another one runs the job again from its checkpoint
    again = open_tracker(file_store, "exp", "job-7", {"a": {"b": 1}}, {"t": "x"}, said.append)
    assert isinstance(again, MlflowTracker) and again.run_id == first.run_id
    assert said[-1] == f"MLflow: continuing run {first.run_id} in experiment 'exp'"
    again.epoch(1, 2, {"loss": 1.0})
    again.finish("FINISHED")
    tracking = MlflowClient(tracking_uri=file_store)
    run = tracking.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"a.b": "1"}
    history = tracking.get_metric_history(first.run_id, "phase1_loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]
    # a write MLflow refuses (its store gone): one line, then the tracker stays quiet
    import shutil

    shutil.rmtree(Path(file_store.removeprefix("file://")))
    said.clear()
    again.epoch(2, 1, {"loss": 0.5})
    again.finish("FAILED")
    assert len(said) == 1 and said[0].startswith("MLflow: logging epoch metrics failed (")
