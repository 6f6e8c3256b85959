"""Service commands: run a server or a job worker, and ask a server's health."""

from __future__ import annotations

from pathlib import Path

import typer

import zoo
from server.cli.common import app, err, out
from zoo.errors import FailedPrecondition


@app.command()
def serve(
    host: str | None = typer.Option(None, "--host", help="Listen address [127.0.0.1]."),
    port: int | None = typer.Option(None, "--port", help="gRPC port [8001]; 0 picks one."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Prometheus port [8002]; -1 turns metrics off."
    ),
    http_port: int | None = typer.Option(
        None, "--http-port", help="HTTP port (v2 REST, JSON API) [8000]; 0 picks one, -1 off."
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
            "http_port": http_port,
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
    from zoo.catalog.weights import locate
    from zoo.errors import WeightsNotFound
    from zoo.export.exporter import export_model
    from zoo.repository import Repository

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


@app.command()
def worker(
    db: str | None = typer.Option(
        None, "--db", help="Job store URL, e.g. postgresql://user@host/db [ZOO_DATABASE]."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Datasets and job files [ZOO_DATA_DIR]."
    ),
    repository: Path | None = typer.Option(
        None, "--repository", "-r", help="Model repository [ZOO_REPOSITORY]."
    ),
    stale_after: float | None = typer.Option(
        None,
        "--stale-after",
        help="Seconds before a silent job is resumed [ZOO_JOB_STALE_AFTER_S].",
    ),
    config_file: Path | None = typer.Option(None, "--config", help="TOML settings file."),
    # Not a setting: in a container the GPUs a worker sees come from its device reservation.
    gpu: str | None = typer.Option(None, "--gpu", help="CUDA_VISIBLE_DEVICES for jobs."),
) -> None:
    """Run jobs from a shared job store until SIGTERM (several workers may share one).

    Settings are the server's (``zoo serve``): the same file, variables and defaults, so a
    worker beside a server finds the same job store, data directory and repository.
    """
    import signal
    import threading

    from server.app import configure_logging
    from zoo.config import ServerConfig
    from zoo.extras import require
    from zoo.jobs.worker import Worker, WorkerSettings

    require("export")
    config = ServerConfig.load(
        config_file,
        overrides={
            "database": db,
            "data_dir": data_dir,
            "repository": repository,
            "job_stale_after_s": stale_after,
        },
    )
    configure_logging(config.log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    settings = WorkerSettings(
        config.database_url,
        config.data_dir,
        config.repository,
        stale_after_s=config.job_stale_after_s,
        gpu=gpu,
        mlflow_tracking_uri=config.mlflow_tracking_uri,
        mlflow_experiment=config.mlflow_experiment,
    )
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
