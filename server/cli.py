"""The ``zoo`` command line: catalog, weights cache, and (from later issues) export and serving.

Every domain error ends the command with one line on stderr and exit status 1; usage errors
exit with 2 (click's convention). Nothing prints a traceback for bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

import zoo
from zoo import weights as weights_cache
from zoo.catalog import ModelSpec
from zoo.errors import FailedPrecondition, ZooError

app = typer.Typer(
    help="keras-zoo: Keras application models as ONNX, served over gRPC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
weights_app = typer.Typer(
    help="The pretrained-weights cache (offline first).", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")
jobs_app = typer.Typer(help="Fine-tuning and export jobs on a server.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
SERVER_OPTION = typer.Option("localhost:8001", "--server", help="Server address host:port.")
TOKEN_OPTION = typer.Option(None, "--token", envvar="ZOO_TOKEN", help="Bearer token.")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print stable JSON instead of a table.")
WEIGHTS_DIR_OPTION = typer.Option(
    None, "--dir", help="Weights cache directory. Defaults to $KERAS_HOME/models."
)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _fmt(value: object, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


@app.command()
def models(
    pattern: str = typer.Argument("*", help="fnmatch pattern, e.g. 'ResNet*'."),
    exclude: list[str] = typer.Option([], "--exclude", "-x", help="Pattern to leave out."),
    family: str | None = typer.Option(None, "--family", help="Only this family."),
    server: str | None = typer.Option(
        None, "--server", help="Ask a running server (host:port) what it serves instead."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the catalog: size, parameters, depth, accuracy and input of each model."""
    if server is not None:
        _served_models(server, pattern, as_json)
        return
    specs = zoo.list_models(pattern, exclude=exclude, family=family)
    if as_json:
        print_json([s.to_dict() for s in specs])
        return
    table = Table(title=f"{len(specs)} models", box=box.SIMPLE_HEAD)
    for column in ("Model", "Family", "Input", "Preproc."):
        table.add_column(column, no_wrap=True)
    for column in ("MB", "Parameters", "Depth", "Param layers", "Top-1", "Top-5"):
        table.add_column(column, justify="right", no_wrap=True)
    for s in specs:
        table.add_row(
            s.name,
            s.family,
            f"{s.input_size}x{s.input_size}",
            s.preprocessing.value,
            _fmt(s.size_mb, "g"),
            f"{s.parameters:,}",
            _fmt(s.depth_keras_table),
            _fmt(s.depth_param_layers),
            _pct(s.top1_accuracy),
            _pct(s.top5_accuracy),
        )
    out.print(table)


def _served_models(address: str, pattern: str, as_json: bool) -> None:
    import dataclasses

    from client import ZooClient

    with ZooClient(address) as remote:
        served = remote.models(pattern, served_only=True)
    if as_json:
        print_json([dataclasses.asdict(m) for m in served])
        return
    table = Table(title=f"{len(served)} models served by {address}", box=box.SIMPLE_HEAD)
    for column in ("Model", "Catalog model", "Versions", "Loaded", "Input", "Classes", "Provider"):
        table.add_column(column, no_wrap=True)
    for m in served:
        table.add_row(
            m.name,
            m.catalog_model or "-",
            ",".join(map(str, m.versions)),
            ",".join(map(str, m.loaded_versions)) or "-",
            "x".join(map(str, m.input_shape)),
            str(m.num_classes),
            m.execution_provider or "-",
        )
    out.print(table)


def _info_rows(spec: ModelSpec) -> list[tuple[str, str]]:
    rows = [
        ("Name", spec.name),
        ("Family", spec.family),
        ("Constructor", f"keras.applications.{spec.constructor}"),
        ("Preprocess module", spec.keras_module),
        (
            "Input shape",
            f"{spec.input_shape} (minimum {spec.min_input_size}x{spec.min_input_size})",
        ),
        ("Preprocessing", spec.preprocessing.value),
        ("Channel order", spec.channel_order.value),
        ("Size", f"{_fmt(spec.size_mb, 'g')} MB"),
        ("Parameters", f"{spec.parameters:,}"),
        ("Depth (Keras table)", _fmt(spec.depth_keras_table)),
        ("Depth (param layers)", _fmt(spec.depth_param_layers)),
        ("Top-1 / Top-5", f"{_pct(spec.top1_accuracy)} / {_pct(spec.top5_accuracy)}"),
        ("Classes", str(spec.num_classes)),
        ("License", spec.license),
    ]
    for label, wf in (("Weights", spec.weights_top), ("Weights (no top)", spec.weights_notop)):
        hashed = f"{wf.hash_algorithm} {wf.file_hash}" if wf.file_hash else "no published hash"
        rows.append((label, f"{wf.file_name} ({hashed})"))
    return rows


@app.command()
def info(name: str = typer.Argument(..., help="Model name."), as_json: bool = JSON_OPTION) -> None:
    """Everything the catalog knows about one model."""
    spec = zoo.get_spec(name)
    if as_json:
        print_json(spec.to_dict())
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in _info_rows(spec):
        table.add_row(key, value)
    out.print(table)


@weights_app.command("status")
def weights_status(
    pattern: str = typer.Argument("*", help="fnmatch pattern of model names."),
    directory: Path | None = WEIGHTS_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Which models have their weights files present and verified."""
    rows = weights_cache.status(zoo.list_models(pattern), directory)
    if as_json:
        print_json(
            {
                "directory": str(weights_cache.cache_dir(directory)),
                "files": [r.to_dict() for r in rows],
            }
        )
        return
    table = Table(title=f"weights in {weights_cache.cache_dir(directory)}")
    for column in ("Model", "Top", "File", "State"):
        table.add_column(column)
    for r in rows:
        colour = {"verified": "green", "missing": "dim", "hash mismatch": "red"}.get(
            r.state.value, "yellow"
        )
        table.add_row(
            r.model,
            "yes" if r.include_top else "no",
            r.file.file_name,
            f"[{colour}]{r.state.value}[/]",
        )
    out.print(table)


@weights_app.command("seed")
def weights_seed(
    source: Path = typer.Argument(..., help="Directory holding Keras weights files."),
    directory: Path | None = WEIGHTS_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Copy weights files into the cache, refusing any whose hash does not match."""
    report = weights_cache.seed(source, directory)
    if as_json:
        print_json(report.to_dict())
    else:
        for name in report.copied:
            out.print(f"verified and copied  {name}")
        for name in report.unverified:
            out.print(f"copied (no published hash to check)  {name}")
        for name in report.ignored:
            out.print(f"[dim]ignored (no catalog model uses it)  {name}[/]")
        if not (report.copied or report.unverified or report.refused):
            err.print(f"zoo: no weights files of catalog models found under {source}")
    for message in report.refused:
        err.print(f"zoo: refused {message}")
    if report.refused:
        raise typer.Exit(1)


@weights_app.command("fetch")
def weights_fetch(
    names: list[str] = typer.Argument(..., help="Model names or patterns."),
    directory: Path | None = WEIGHTS_DIR_OPTION,
) -> None:
    """Download weights (with and without top) with hash checks; needs internet."""
    specs: list[ModelSpec] = []
    for name in names:
        found = zoo.list_models(name) if any(c in name for c in "*?[") else [zoo.get_spec(name)]
        specs.extend(s for s in found if s not in specs)
    for path in weights_cache.fetch(specs, directory):
        out.print(f"ok  {path}")


@app.command("export")
def export(
    name: str = typer.Argument(..., help="Catalog model name."),
    repository: Path = typer.Option(
        Path("model_repository"), "--repository", "-r", help="Model repository directory."
    ),
    version: int | None = typer.Option(None, "--version", help="Version to write (default: next)."),
    weights: str = typer.Option("imagenet", "--weights", help="imagenet | none | PATH."),
    input_mode: str = typer.Option("uint8", "--input", help="uint8 (pixels) | float32 (bare)."),
    input_size: int | None = typer.Option(None, "--input-size", help="Square input size."),
    model_name: str | None = typer.Option(None, "--name", help="Name in the repository."),
    max_batch_size: int = typer.Option(32, "--max-batch-size", help="For config.pbtxt."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Export a catalog model to ONNX into the repository, verified against Keras."""
    from zoo.export import export_model

    spec = zoo.get_spec(name)
    with err.status(f"exporting {spec.name}", spinner="dots") as status:
        result = export_model(
            spec,
            repository,
            model_name=model_name,
            version=version,
            weights=None if weights == "none" else weights,
            input=input_mode,
            input_shape=(input_size, input_size, 3) if input_size else None,
            max_batch_size=max_batch_size,
            progress=lambda _stage, message: status.update(f"{spec.name}: {message}"),
        )
    if as_json:
        print_json(result.to_dict())
        return
    v = result.verification
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in (
        ("Model", f"{result.model} version {result.version}"),
        ("Path", str(result.path / "model.onnx")),
        ("Size", f"{result.onnx_bytes / 2**20:.1f} MiB"),
        ("Export time", f"{result.seconds:.1f} s"),
        ("Peak memory", f"{result.peak_rss_bytes / 2**30:.2f} GiB"),
        (
            "Check",
            f"max |logit diff| {v['max_abs_logit_diff']:.2e} <= {v['tolerance']:.2e}, "
            f"top-1 agreement {v['top1_agreement']:.0%} on {v['inputs']} inputs",
        ),
    ):
        table.add_row(key, value)
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
        raise ZooError(f"no such image file: {', '.join(missing)}")
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


@app.command()
def serve(
    host: str | None = typer.Option(None, "--host", help="Listen address [127.0.0.1]."),
    port: int | None = typer.Option(None, "--port", help="gRPC port [8001]; 0 picks one."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Prometheus port [8002]; -1 turns metrics off."
    ),
    repository: Path | None = typer.Option(None, "--repository", "-r", help="Model repository."),
    config_file: Path | None = typer.Option(None, "--config", help="TOML settings file."),
    token: str | None = typer.Option(
        None, "--token", help="Bearer token for mutating RPCs (or ZOO_TOKEN)."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="TLS certificate (PEM)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="TLS private key (PEM)."),
    eager: list[str] = typer.Option([], "--eager", help="Model to load at start ('*': all)."),
    no_batching: bool = typer.Option(False, "--no-batching", help="Turn dynamic batching off."),
    bootstrap: str | None = typer.Option(
        None,
        "--bootstrap",
        help="If the repository holds no model, export this one first (ImageNet weights "
        "when cached, else random weights with a warning).",
    ),
    ready_file: Path | None = typer.Option(None, "--ready-file", hidden=True),
) -> None:
    """Serve the repository over gRPC (v2 inference protocol + zoo.v1) until SIGTERM."""
    import asyncio

    from zoo.extras import require

    require("serving")

    from server.app import configure_logging
    from server.app import serve as run_server
    from zoo.config import ServerConfig

    config = ServerConfig.load(
        config_file,
        overrides={
            "host": host,
            "port": port,
            "metrics_port": metrics_port,
            "repository": repository,
            "token": token,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "eager_models": tuple(eager) or None,
            "dynamic_batching": False if no_batching else None,
        },
    )
    configure_logging(config.log_format)
    if bootstrap:
        _bootstrap(config.repository, bootstrap)
    asyncio.run(run_server(config, str(ready_file) if ready_file else None))


def _bootstrap(repository: Path, name: str) -> None:
    """Export ``name`` into an empty repository so a first `make serve` has a model."""
    from zoo.errors import WeightsNotFound
    from zoo.export import export_model
    from zoo.repository import Repository
    from zoo.weights import locate

    if Repository(repository).models():
        return
    spec = zoo.get_spec(name)
    weights: str | None = "imagenet"
    try:
        locate(spec, include_top=True)
    except WeightsNotFound as e:
        weights = None
        err.print(
            f"[yellow]warning:[/] {e}\n[yellow]warning:[/] exporting {spec.name} with RANDOM "
            "weights so the server has something to serve; its predictions are meaningless. "
            "Seed the weights, then run `zoo export` again."
        )
    with err.status(f"repository is empty: exporting {spec.name}", spinner="dots") as status:
        result = export_model(
            spec,
            repository,
            weights=weights,
            progress=lambda _stage, message: status.update(f"{spec.name}: {message}"),
        )
    err.print(f"exported {result.model} version {result.version} to {result.path}")


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
            raise ZooError(f"{option} takes KEY=VALUE; received {item!r}")
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
        raise ZooError(f"no such file or directory: {path}")
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

    params = _pairs(param, "--param")
    if base_arg:
        params["base_kwargs"] = _pairs(base_arg, "--base-arg")
    if allow_other_source:
        params["allow_other_source"] = True
    with ZooClient(server, token=token) as remote:
        job = remote.finetune(base, dataset, output, **params)
        out.print(f"job {job.id} {job.state}")
        if wait:
            _finish(job.wait(progress=True))


def _finish(job: Any) -> None:
    out.print(f"job {job.id} {job.state}")
    if job.error:
        err.print(f"zoo: job failed: {job.error}", markup=False)
    if job.result:
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
        model = j.params.get("output_model") or j.params.get("model") or ""
        table.add_row(j.id, j.kind, j.state, j.created_at[:19], model)
    out.print(table)


def _job_dict(job: Any) -> dict[str, Any]:
    return {k: v for k, v in job.__dict__.items() if not k.startswith("_")}


@jobs_app.command("show")
def jobs_show(job_id: str, server: str = SERVER_OPTION) -> None:
    """One job in full, as JSON."""
    from client import ZooClient

    with ZooClient(server) as remote:
        print_json(_job_dict(remote.job(job_id)))


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


@app.command()
def worker(
    db: str = typer.Option(
        ...,
        "--db",
        envvar="ZOO_DATABASE",
        help="Job store URL, e.g. postgresql://user@host/db.",
    ),
    data_dir: Path = typer.Option(
        Path(".data"), "--data-dir", envvar="ZOO_DATA_DIR", help="Datasets and job files."
    ),
    repository: Path = typer.Option(
        Path("model_repository"), "--repository", "-r", envvar="ZOO_REPOSITORY"
    ),
    stale_after: float = typer.Option(
        30.0,
        "--stale-after",
        envvar="ZOO_JOB_STALE_AFTER_S",
        help="Seconds before a silent job is resumed.",
    ),
    # No envvar: in a container the GPUs a worker sees come from its device reservation.
    gpu: str | None = typer.Option(None, "--gpu", help="CUDA_VISIBLE_DEVICES for jobs."),
) -> None:
    """Run jobs from a shared job store until SIGTERM (several workers may share one)."""
    import signal
    import threading

    from server.app import configure_logging
    from zoo.extras import require
    from zoo.worker import Worker, WorkerSettings

    require("export")
    configure_logging("text")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    settings = WorkerSettings(db, data_dir, repository, stale_after_s=stale_after, gpu=gpu)
    Worker(settings).run_forever(stop)


@app.command()
def health(
    server: str = typer.Option("localhost:8001", "--server", help="Server address host:port."),
    service: str = typer.Option(
        "", "--service", help="Service or model name; empty for the whole server."
    ),
    timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait for the answer."),
) -> None:
    """Ask a server's grpc.health.v1 Check: exit 0 when SERVING, else 1 (container healthchecks)."""
    import grpc

    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        raise FailedPrecondition(
            "zoo health needs grpcio-health-checking, which this installation lacks; install "
            "the server extra: pip install 'keras-zoo[server]'"
        ) from None

    what = f"{server} service {service!r}" if service else server
    with grpc.insecure_channel(server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as e:
            # The server is down, not ready to answer, or does not know the service.
            reason = (e.details() or "").splitlines()[0] if e.details() else ""
            err.print(f"zoo: health: {what}: {e.code().name} {reason}".rstrip(), markup=False)
            raise typer.Exit(1) from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        err.print(f"zoo: health: {what}: {status}", markup=False)
        raise typer.Exit(1)
    out.print(f"{what}: {status}")


def main(argv: list[str] | None = None) -> None:
    from client.errors import ZooError as ServerError

    try:
        app(args=argv, prog_name="zoo")
    except ZooError as e:
        err.print(f"zoo: error: {e}", markup=False)
        sys.exit(1)
    except ServerError as e:  # an error the server answered with, or an unreachable server
        err.print(f"zoo: error: {type(e).__name__}: {e.message}", markup=False)
        sys.exit(1)
    except OSError as e:  # a directory or file this process cannot use: one line, no traceback
        where = f": {e.filename}" if e.filename else ""
        err.print(f"zoo: error: {e.strerror or e}{where}", markup=False)
        sys.exit(1)
