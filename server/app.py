"""Assembling and running the gRPC server.

``create_server`` builds a started server bound to ``config.host:config.port`` (port 0 picks
a free one, for tests) and returns it with its port; ``serve`` adds signal handling: on
SIGTERM or SIGINT the server stops accepting, lets in-flight requests finish for up to
``grace_seconds``, then exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from protos import grpc_service_pb2, grpc_service_pb2_grpc, zoo_service_pb2, zoo_service_pb2_grpc
from protos.pool import POOL
from server.http.errors import TokenCheck
from server.http.server import HttpServer
from server.http.services import Services
from server.inference_service import InferenceService
from server.interceptors import Guard, bearer
from server.jobs_service import DatasetsService, JobsService
from server.metrics import Metrics
from server.zoo_service import ModelZooService
from zoo.catalog.weights import cache_dir as weights_cache_dir
from zoo.config import ServerConfig
from zoo.errors import NotFound
from zoo.jobs.datasets import DatasetLimits, DatasetStore
from zoo.jobs.manager import JobManager
from zoo.jobs.store import JobStore
from zoo.jobs.watch import EventHub
from zoo.jobs.worker import Worker, WorkerSettings, visible_gpus
from zoo.serving.dataplane import DataPlane

log = logging.getLogger("zoo.server")

SERVICE_NAMES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    *(s.full_name for s in zoo_service_pb2.DESCRIPTOR.services_by_name.values()),
)
Serving = health_pb2.HealthCheckResponse.ServingStatus


class HealthService(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 answered from live state: the server, each service, and each model.

    The service name "" and the two service names are SERVING once the server is ready;
    a model name is SERVING when that model is loaded and ready; other names are NOT_FOUND.
    """

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def _status(self, service: str) -> int | None:
        if service == "" or service in SERVICE_NAMES:
            return Serving.SERVING if self.plane.ready else Serving.NOT_SERVING
        try:
            return Serving.SERVING if self.plane.model_ready(service) else Serving.NOT_SERVING
        except NotFound:
            return None

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        last = None
        while True:
            status = self._status(request.service)
            if status is None:
                status = Serving.SERVICE_UNKNOWN
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(0.5)


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    plane: DataPlane
    metrics: Metrics
    workers: list[threading.Thread]
    stop_workers: threading.Event
    datasets: DatasetsService
    jobs_io: ThreadPoolExecutor
    hub: EventHub
    http: HttpServer | None = None

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http else None

    async def stop(self, grace: float | None) -> None:
        self.plane.ready = False
        self.stop_workers.set()  # a running job is queued again, to resume on restart
        # An upload can last as long as its client likes: end them rather than wait out grace.
        if cancelled := self.datasets.cancel_uploads():
            log.info("shutting down: ended %d dataset upload(s) in progress", cancelled)
        await self.hub.close()  # job streams end: their clients watch again elsewhere
        if self.http is None:
            await self.server.stop(grace)
        else:  # both drain at once, each up to grace
            await asyncio.gather(self.server.stop(grace), self.http.stop())
        self.datasets.close()
        self.jobs_io.shutdown(wait=False, cancel_futures=True)
        await self.plane.close()
        self.metrics.stop()
        for thread in self.workers:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 30)


def start_workers(config: ServerConfig, stop: threading.Event) -> list[threading.Thread]:
    """``config.workers`` job workers on threads; each job runs in its own process.

    With GPUs, worker i gives its jobs GPU i modulo their number (CUDA_VISIBLE_DEVICES).
    """
    gpus = visible_gpus()
    threads = []
    for i in range(config.workers):
        settings = WorkerSettings(
            database=config.database_url,
            data_dir=config.data_dir,
            repository=config.repository,
            stale_after_s=config.job_stale_after_s,
            gpu=gpus[i % len(gpus)] if gpus else None,
            mlflow_tracking_uri=config.mlflow_tracking_uri,
            mlflow_experiment=config.mlflow_experiment,
        )
        log.info("job worker %d uses %s", i, f"GPU {settings.gpu}" if gpus else "the CPU")
        worker = Worker(settings, name=f"{socket.gethostname()}-serve-{os.getpid()}-{i}")
        thread = threading.Thread(
            target=worker.run_forever, args=(stop,), name=f"worker-{i}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads


def _reflection_pool() -> Any:
    """Our protocol pool (see ``protos.pool``) plus the stock health and reflection files.

    Reflection answers from one pool; ours holds the inference and zoo services, while the
    stock services live in protobuf's default pool, so their files are copied in (once).
    """
    for stock in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        try:
            POOL.FindFileByName(stock.name)
        except KeyError:
            POOL.AddSerializedFile(stock.serialized_pb)
    return POOL


async def create_server(config: ServerConfig, plane: DataPlane | None = None) -> RunningServer:
    """A started server; ``config.port`` 0 binds a free port (see ``RunningServer.port``)."""
    plane = plane or DataPlane(config)
    metrics = Metrics()
    metrics.watch_models(plane.stats.all, plane.runtime.loaded)
    metrics.watch_labels(plane.label_changes)
    limit = config.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    # Every service but reflection goes through the guard (see server.interceptors);
    # reflection registers itself on the real server (it picks its servicer by server type).
    guarded = Guard(metrics, config.token).registering(server)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceService(plane), guarded
    )
    zoo_service_pb2_grpc.add_ModelZooServicer_to_server(ModelZooService(plane), guarded)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    datasets = DatasetStore(
        config.data_dir / "datasets", DatasetLimits(max_archive_bytes=config.max_upload_bytes)
    )
    store = JobStore(config.database_url)
    metrics.watch_jobs(store.census)
    manager = JobManager(
        store,
        datasets,
        plane.repository,
        weights_dirs=(weights_cache_dir(), config.data_dir / "weights"),
        work_dir=config.data_dir / "jobs",
    )
    # Job store and dataset calls get their own threads: a slow database or disk then
    # delays jobs and datasets, never inference (which uses the data plane's executor).
    jobs_io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jobs-io")
    datasets_service = DatasetsService(datasets, jobs_io, config.max_uploads, config.upload_idle_s)
    zoo_service_pb2_grpc.add_DatasetsServicer_to_server(datasets_service, guarded)
    hub = EventHub(manager.store, jobs_io, poll_s=config.watch_poll_s)
    jobs_service = JobsService(manager, jobs_io, hub)
    zoo_service_pb2_grpc.add_JobsServicer_to_server(jobs_service, guarded)
    health_pb2_grpc.add_HealthServicer_to_server(HealthService(plane), guarded)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
        pool=_reflection_pool(),
    )
    address = f"{config.host}:{config.port}"
    if config.tls_cert and config.tls_key:
        credentials = grpc.ssl_server_credentials(
            [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    metrics_port = None
    if config.metrics_port >= 0:
        metrics_port = metrics.serve(config.host, config.metrics_port)
    await server.start()
    http = None
    if config.http_port >= 0:
        services = Services(
            plane,
            datasets_service,
            jobs_service,
            jobs_io,
            TokenCheck(bearer(config.token)),
            config.max_message_bytes,
        )
        http = HttpServer(config, services, metrics)
        await http.start()
    await plane.start()
    stop_workers = threading.Event()
    workers = start_workers(config, stop_workers)
    log.info(
        "serving on %s:%d (HTTP on %s, metrics on %s), repository %s, models %s",
        config.host,
        port,
        http.port if http else None,
        metrics_port,
        config.repository,
        plane.repository.models(),
    )
    return RunningServer(
        server,
        port,
        metrics_port,
        plane,
        metrics,
        workers,
        stop_workers,
        datasets_service,
        jobs_io,
        hub,
        http,
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


async def serve(config: ServerConfig, ready_file: str | None = None) -> None:
    """Run until SIGTERM/SIGINT, then drain in-flight requests and exit."""
    running = await create_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file:  # written whole, then renamed: a reader never sees half of it
        tmp = f"{ready_file}.tmp"
        with open(tmp, "w") as f:
            ports = {"metrics_port": running.metrics_port, "http_port": running.http_port}
            json.dump({"port": running.port, **ports}, f)
        os.replace(tmp, ready_file)
    print(
        f"keras-zoo serving on {config.host}:{running.port}"
        + (f", HTTP on :{running.http_port}" if running.http_port else "")
        + (f", metrics on :{running.metrics_port}" if running.metrics_port else ""),
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    log.info("shutting down: draining in-flight requests for up to %.0f s", config.grace_seconds)
    await running.stop(config.grace_seconds)
    log.info("stopped")
