"""Remote commands: a running server's models, classification, datasets and jobs.

They talk to the server through the SDK (``client``) alone, so they work from a client-only
install (``pip install keras-zoo``) without TensorFlow or the domain.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Table

from server.cli.common import (
    JSON_OPTION,
    SERVER_OPTION,
    TOKEN_OPTION,
    CommandError,
    app,
    err,
    jobs_app,
    models_app,
    out,
    print_json,
)


def served_models(address: str, pattern: str, as_json: bool) -> None:
    import dataclasses

    from client import ZooClient

    with ZooClient(address) as remote:
        served = remote.models(pattern, served_only=True)
    if as_json:
        print_json([dataclasses.asdict(m) for m in served])
        return
    table = Table(title=f"{len(served)} models served by {address}", box=box.SIMPLE_HEAD)
    columns = ("Model", "Catalog model", "Versions", "Labels", "Loaded", "Input", "Classes")
    for column in (*columns, "Provider"):
        table.add_column(column, no_wrap=True)
    for m in served:
        table.add_row(
            m.name,
            m.catalog_model or "-",
            ",".join(map(str, m.versions)),
            ",".join(f"{k}={v}" for k, v in sorted(m.labels.items())) or "-",
            ",".join(map(str, m.loaded_versions)) or "-",
            "x".join(map(str, m.input_shape)),
            str(m.num_classes),
            m.execution_provider or "-",
        )
    out.print(table)


@app.command()
def classify(
    images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG, WebP)."),
    model: str = typer.Option(..., "--model", "-m", help="Model name on the server."),
    server: str = typer.Option("localhost:8001", "--server", help="Server address host:port."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Labels per image."),
    version: int | None = typer.Option(None, "--version", help="Model version (default newest)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Classify images with a model on a running server."""
    from client import ZooClient

    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise CommandError(f"no such image file: {', '.join(missing)}")
    with ZooClient(server) as remote:
        results = remote.classify(list(images), model, top_k=top_k, version=version)
    assert isinstance(results, list)
    if as_json:
        print_json(
            [
                {
                    "image": str(path),
                    "model": r.model,
                    "version": r.version,
                    "predictions": [
                        {"label": p.label, "index": p.index, "score": p.score}
                        for p in r.predictions
                    ],
                }
                for path, r in zip(images, results, strict=True)
            ]
        )
        return
    for path, result in zip(images, results, strict=True):
        table = Table(title=f"{path} ({result.model} v{result.version})", box=box.SIMPLE_HEAD)
        for column, justify in (("Label", "left"), ("Index", "right"), ("Score", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for p in result.predictions:
            table.add_row(p.label, str(p.index), f"{p.score:.4f}")
        out.print(table)


def _value(text: str) -> Any:
    """'5' -> 5, '0.1' -> 0.1, 'true' -> True, else the text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _pairs(items: list[str], option: str) -> dict[str, Any]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"{option} takes KEY=VALUE; received {item!r}")
        pairs[key.strip()] = _value(value.strip())
    return pairs


@app.command()
def upload(
    path: Path = typer.Argument(..., help="A class_name/image folder, or a zip/tar archive."),
    server: str = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Upload a labelled image set for fine-tuning; prints its id."""
    import dataclasses

    from client import ZooClient

    if not path.exists():
        raise CommandError(f"no such file or directory: {path}")
    with ZooClient(server, token=token) as remote:
        dataset = remote.upload_dataset(path, progress=not as_json and sys.stderr.isatty())
    if as_json:
        print_json(dataclasses.asdict(dataset))
        return
    out.print(f"dataset {dataset.id}")
    for name, count in zip(dataset.classes, dataset.counts, strict=True):
        out.print(f"  {name}: {count} images")
    for member, reason in dataset.skipped:
        out.print(f"  [yellow]skipped[/] {member}: {reason}")


def _training_params(param: list[str], base_arg: list[str]) -> dict[str, Any]:
    """Fine-tune parameters from ``--param KEY=VALUE`` and ``--base-arg KEY=VALUE``."""
    params = _pairs(param, "--param")
    if base_arg:
        params["base_kwargs"] = _pairs(base_arg, "--base-arg")
    return params


@app.command()
def finetune(
    base: str = typer.Option(..., "--base", help="Catalog model to start from."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset id (from zoo upload)."),
    output: str = typer.Option(..., "--output", help="Name of the new model in the repository."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Training parameter KEY=VALUE, e.g. epochs=10 (repeatable)."
    ),
    base_arg: list[str] = typer.Option(
        [], "--base-arg", help="Keras constructor argument KEY=VALUE, e.g. alpha=0.35."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the job until it ends."),
    allow_other_source: bool = typer.Option(
        False,
        "--allow-other-source",
        help="Add the version even if the output model serves another base or model.",
    ),
    server: str = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Start a fine-tuning job; its result becomes a new model version on the server."""
    from client import ZooClient

    params = _training_params(param, base_arg)
    if allow_other_source:
        params["allow_other_source"] = True
    with ZooClient(server, token=token) as remote:
        job = remote.finetune(base, dataset, output, **params)
        out.print(f"job {job.id} {job.state}")
        if wait:
            _finish(job.wait(progress=True))


@app.command()
def search(
    base: str = typer.Option(..., "--base", help="Catalog model to start from."),
    dataset: str = typer.Option(..., "--dataset", help="Dataset id (from zoo upload)."),
    output: str = typer.Option(..., "--output", help="Name of the new model in the repository."),
    space: Path = typer.Option(
        ...,
        "--space",
        help='JSON file: parameter -> list of values, or {"low", "high", "log"} (random).',
    ),
    strategy: str = typer.Option("grid", "--strategy", help="grid, random or tpe (optuna)."),
    parallel: int = typer.Option(0, "--parallel", help="tpe: trials per wave (0: 2)."),
    trials: int = typer.Option(0, "--trials", help="Random draws (grid: 0 or the grid's size)."),
    promote: str = typer.Option(
        "never", "--promote", help="never, always or if_better, for the best trial only."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random draws."),
    early_stopping: str = typer.Option(
        "median", "--early-stopping", help="median (stop trials below the median) or none."
    ),
    min_trials: int = typer.Option(
        0, "--min-trials", help="Other trials the median rule waits for (0: 2)."
    ),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Base training parameter KEY=VALUE (repeatable)."
    ),
    base_arg: list[str] = typer.Option(
        [], "--base-arg", help="Keras constructor argument KEY=VALUE, e.g. alpha=0.35."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the search until it ends."),
    allow_other_source: bool = typer.Option(
        False,
        "--allow-other-source",
        help="Add the versions even if the output model serves another base or model.",
    ),
    server: str = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Start a search over fine-tuning settings: one fine-tune job per trial, the best promoted."""
    from client import ZooClient

    try:
        grid = json.loads(space.read_text())
    except (OSError, ValueError) as e:
        raise CommandError(f"--space must be a readable JSON file; {space}: {e}") from None
    params = _training_params(param, base_arg)
    with ZooClient(server, token=token) as remote:
        job = remote.search(
            base, dataset, output, grid, strategy=strategy, trials=trials, promote=promote,
            seed=seed, early_stopping=early_stopping, min_trials=min_trials,
            allow_other_source=allow_other_source, parallel=parallel, **params,
        )  # fmt: skip
        out.print(f"job {job.id} {job.state}: {len(job.params.get('trials', []))} trials")
        if wait:
            job = job.wait(progress=True)
            print_trials(job.result or {})
            _finish(job, show_result=False)


def print_trials(result: dict[str, Any]) -> None:
    """A search's table of trials (``zoo.jobs.search.SearchResult.to_dict``)."""
    table = Table(title="trials", box=box.SIMPLE_HEAD)
    for column in ("Trial", "Params", "State", "Val acc per epoch", "Best", "Final", "Test"):
        table.add_column(column)
    for column in ("Version", "Seconds", "Note"):
        table.add_column(column)

    def figure(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    best = result.get("best_trial")
    for t in result.get("trials", []):
        mark = " *" if t["trial"] == best else ""
        table.add_row(
            f"{t['trial']}{mark}",
            ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in t["params"].items()),
            t["state"],
            " ".join(f"{v:.2f}" for v in t["val_accuracy"]) or "-",
            figure(t["best_val_accuracy"]),
            figure(t["final_val_accuracy"]),
            figure(t["test_accuracy"]),
            "-" if t["version"] is None else str(t["version"]),
            "-" if t["duration_s"] is None else f"{t['duration_s']:.1f}",
            t["note"] or "",
        )  # fmt: skip
    out.print(table)
    if best is not None:
        out.print(f"best: trial {best} (*), by {result.get('selected_by', '')}", markup=False)
    if result.get("promotion"):
        out.print(f"{result.get('model')} version {result.get('version')}: "
                  f"{result['promotion']}", markup=False)  # fmt: skip


def _finish(job: Any, show_result: bool = True) -> None:
    out.print(f"job {job.id} {job.state}")
    if job.error:
        err.print(f"zoo: job failed: {job.error}", markup=False)
    if job.result and show_result:
        print_json(job.result)
    if job.state != "SUCCEEDED":
        raise typer.Exit(1)


@jobs_app.command("list")
def jobs_list(
    state: str = typer.Option("", "--state", help="Only jobs in this state."),
    server: str = SERVER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Jobs on the server, newest first."""
    from client import ZooClient

    with ZooClient(server) as remote:
        found = remote.jobs(state)
    if as_json:
        print_json([_job_dict(j) for j in found])
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("Job", "Kind", "State", "Created", "Model"):
        table.add_column(column, no_wrap=True)
    for j in found:
        table.add_row(j.id, j.kind, j.state, j.created_at[:19], j.output_model)
    out.print(table)


def _job_dict(job: Any) -> dict[str, Any]:
    return {k: v for k, v in job.__dict__.items() if not k.startswith("_")}


@jobs_app.command("show")
def jobs_show(job_id: str, server: str = SERVER_OPTION, as_json: bool = JSON_OPTION) -> None:
    """One job: its state, result and test report (--json: everything, as JSON)."""
    from client import ZooClient

    with ZooClient(server) as remote:
        job = remote.job(job_id)
    if as_json:
        print_json(_job_dict(job))
        return
    out.print(f"job {job.id}  {job.kind}  {job.state}  created {job.created_at[:19]}", markup=False)
    if job.error:
        out.print(f"error: {job.error}", markup=False)
    result = job.result or {}
    if job.kind == "search":
        print_trials(result)
        return
    if "version" in result:
        accuracy = result.get("val_accuracy")
        line = f"published {result.get('model')} version {result['version']}"
        out.print(line + (f"; validation accuracy {accuracy:.3f}" if accuracy is not None else ""))
    if result.get("evaluation"):
        print_evaluation(result["evaluation"])


def print_evaluation(report: dict[str, Any]) -> None:
    """A version's test report (``zoo.manifest.Evaluation.to_dict``) as tables."""
    top5 = report.get("top5_accuracy")
    out.print(
        f"test split {report['split']}: {report['images']} images, accuracy "
        f"{report['accuracy']:.3f}" + (f", top-5 {top5:.3f}" if top5 is not None else ""),
        markup=False,
    )
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("Class", no_wrap=True)
    for column in ("Precision", "Recall", "F1", "Support"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in [*report["classes"], report["macro"], report["weighted"]]:
        table.add_row(
            row["name"], f"{row['precision']:.3f}", f"{row['recall']:.3f}",
            f"{row['f1']:.3f}", str(row["support"]),
        )  # fmt: skip
    out.print(table)
    names = [c["name"] for c in report["classes"]]
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)", box=box.SIMPLE_HEAD)
    matrix.add_column("", no_wrap=True)
    for name in names:
        matrix.add_column(name, justify="right", no_wrap=True)
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        matrix.add_row(name, *map(str, row))
    out.print(matrix)
    if report["most_confused"]:
        pairs = ", ".join(
            f"{p['true_label']} as {p['predicted_label']} ({p['count']})"
            for p in report["most_confused"]
        )
        out.print(f"most confused: {pairs}", markup=False)
    if report["worst_mistakes"]:
        worst = Table(title="most confident mistakes", box=box.SIMPLE_HEAD)
        for column in ("Image", "True", "Predicted", "Confidence"):
            worst.add_column(column, no_wrap=True)
        for m in report["worst_mistakes"]:
            worst.add_row(
                m["path"], m["true_label"], m["predicted_label"], f"{m['confidence']:.3f}"
            )
        out.print(worst)


@jobs_app.command("logs")
def jobs_logs(
    job_id: str,
    tensorboard: Path = typer.Option(
        ..., "--tensorboard", help="Folder to copy the job's TensorBoard event files into."
    ),
    server: str = SERVER_OPTION,
) -> None:
    """Copy a fine-tune job's TensorBoard logs (both phases' epochs and the test report)."""
    import io
    import tarfile

    from client import ZooClient

    with ZooClient(server) as remote:
        archive = remote.training_logs(job_id)
    tensorboard.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = tar.getmembers()
        tar.extractall(tensorboard, filter="data")  # refuses links and paths outside the folder
    out.print(f"{len(members)} files into {tensorboard}; view: tensorboard --logdir {tensorboard}")


def model_show(name: str, version: int | None, server: str, as_json: bool) -> None:
    """One served model and a version's test report (default: the newest version)."""
    import dataclasses

    from client import ZooClient

    with ZooClient(server) as remote:
        model = remote.model(name, version)
    if as_json:
        print_json(dataclasses.asdict(model))
        return
    out.print(
        f"{model.name}: versions {', '.join(map(str, model.versions)) or 'none'}; input "
        f"{'x'.join(map(str, model.input_shape))}; {model.num_classes} classes",
        markup=False,
    )
    if model.evaluation:
        out.print(f"version {model.evaluated_version}:", markup=False)
        print_evaluation(model.evaluation)
    elif model.versions:
        out.print(f"version {model.evaluated_version} has no test report", markup=False)


@models_app.command("show")
def models_show(
    name: str = typer.Argument(..., help="Model name on the server."),
    version: int | None = typer.Option(None, "--version", help="Version (default newest)."),
    server: str = SERVER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """A served model and one version's test report (a fine-tune's evaluation)."""
    model_show(name, version, server, as_json)


@jobs_app.command("watch")
def jobs_watch(
    job_id: str,
    after: int = typer.Option(0, "--after", help="Start after this event number."),
    server: str = SERVER_OPTION,
) -> None:
    """Print a job's events until it ends (reconnects if the server restarts)."""
    from client import ZooClient

    with ZooClient(server) as remote:
        job = remote.job(job_id)
        for event in job.watch(after):
            sys.stdout.write(
                json.dumps({"seq": event.seq, "type": event.type, **event.payload}) + "\n"
            )
            sys.stdout.flush()
        _finish(job.refresh())


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, server: str = SERVER_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """Cancel a job: a queued one at once, a running one within one batch."""
    from client import ZooClient

    with ZooClient(server, token=token) as remote:
        job = remote.job(job_id).cancel()
    out.print(f"job {job.id} {job.state}")


def _print_labels(state: Any, as_json: bool) -> None:
    import dataclasses

    if as_json:
        print_json(dataclasses.asdict(state))
        return
    labels = ", ".join(f"{k} -> {v}" for k, v in sorted(state.labels.items())) or "none"
    out.print(f"{state.model}: default version {state.default_version}; labels: {labels}")
    if state.history:
        table = Table(title="label history", box=box.SIMPLE_HEAD)
        for column in ("When", "Label", "Version", "Was", "Action", "By", "Peer"):
            table.add_column(column, no_wrap=True)
        for c in state.history:
            was = "-" if c.previous is None else str(c.previous)
            table.add_row(c.at, c.label, str(c.version), was, c.action, c.by or "-", c.peer or "-")
        out.print(table)


# who asks, recorded in a label's history (the token proves possession, not identity)
BY_OPTION = typer.Option(
    None, "--by", help="Who asks, for the history. Defaults to your user name."
)


@models_app.command("promote")
def promote(
    name: str = typer.Argument(..., help="Model name on the server."),
    version: int = typer.Argument(..., help="Version to label."),
    label: str = typer.Option("stable", "--label", help="Label to point at the version."),
    by: str | None = BY_OPTION,
    server: str = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Point a label (default stable) at a version: requests without a version go to stable."""
    from client import ZooClient

    with ZooClient(server, token=token) as remote:
        _print_labels(remote.promote(name, version, label, by), as_json)


@models_app.command("rollback")
def rollback(
    name: str = typer.Argument(..., help="Model name on the server."),
    label: str = typer.Option("stable", "--label", help="Label to move back."),
    by: str | None = BY_OPTION,
    server: str = SERVER_OPTION,
    token: str | None = TOKEN_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Point a label (default stable) back at the version it had before."""
    from client import ZooClient

    with ZooClient(server, token=token) as remote:
        _print_labels(remote.rollback(name, label, by), as_json)


@models_app.command("labels")
def labels(
    name: str = typer.Argument(..., help="Model name on the server."),
    server: str = SERVER_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """A model's labels, its default version and who changed which label when."""
    from client import ZooClient

    with ZooClient(server) as remote:
        _print_labels(remote.labels(name), as_json)
