"""What the HTTP handlers call: the same objects the gRPC servicers hold."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

from server.http.errors import TokenCheck
from server.jobs_service import DatasetsService, JobsService
from zoo.serving.dataplane import DataPlane


@dataclass(frozen=True)
class Services:
    plane: DataPlane
    datasets: DatasetsService
    jobs: JobsService
    io: Executor  # job store and dataset calls, never on the event loop
    token: TokenCheck
    body_limit: int  # bytes, every body but a dataset archive's
