"""Datasets and jobs in the SDK: uploads, fine-tuning and export jobs, watching them."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from client.errors import Unavailable, from_rpc_error
from protos import zoo_service_pb2 as zpb

CHUNK = 1 << 20
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    classes: tuple[str, ...]
    counts: tuple[int, ...]
    images: int
    skipped: tuple[tuple[str, str], ...]
    created_at: str


@dataclass(frozen=True)
class JobEvent:
    seq: int
    time: str
    type: str  # state, epoch, progress, log, result
    payload: dict[str, Any]


@dataclass
class Job:
    """A job on the server; ``refresh()``, ``watch()``, ``wait()`` and ``cancel()`` talk to it."""

    id: str
    kind: str
    state: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str
    attempts: int
    created_at: str
    finished_at: str
    started_at: str = ""
    worker: str = ""  # the worker that ran it last
    _client: Any = field(repr=False, compare=False, default=None)

    @property
    def output_model(self) -> str:
        """The model this job publishes into (a fine-tune's output, an export's name)."""
        for key in ("output_model", "model_name"):
            if self.params.get(key):
                return str(self.params[key])
        return str(self.params.get("model", "")).lower()  # an export under its catalog name

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"

    def _sync_client(self) -> Any:
        if getattr(self._client, "is_async", False) or self._client is None:
            raise TypeError(
                "this Job came from AsyncZooClient: use `await zoo.job(id)`, "
                "`await zoo.cancel_job(id)`, `zoo.watch_job(id)` or `await zoo.wait_job(id)`"
            )
        return self._client

    def refresh(self) -> Job:
        fresh = self._sync_client().job(self.id)
        self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "_client"})
        return self

    def cancel(self) -> Job:
        fresh = self._sync_client()._jobs_call("CancelJob", zpb.CancelJobRequest(id=self.id))
        self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k != "_client"})
        return self

    def watch(self, after_event: int = 0) -> Iterator[JobEvent]:
        """Every event after ``after_event`` until the job ends; reconnects where it left off."""
        client, last, pause = self._sync_client(), after_event, 0.1
        while True:
            try:
                for event in client._watch(self.id, last):
                    last, pause = event.seq, 0.1
                    yield event
                return
            except Unavailable:
                pass
            # the server restarted: pick up after the last event seen, without spinning
            time.sleep(pause)
            pause = min(2.0, pause * 2)

    def wait(self, progress: bool = False) -> Job:
        """Block until the job ends; with ``progress`` a progress bar shows epochs and batches."""
        if not progress:
            for _ in self.watch():
                pass
            return self.refresh()
        from rich.progress import Progress

        with Progress(transient=False) as bar:
            task = bar.add_task(f"job {self.id[:8]}", total=None)
            for event in self.watch():
                p = event.payload
                if event.type == "progress":
                    bar.update(
                        task,
                        total=p["batches"],
                        completed=p["batch"],
                        description=f"phase {p['phase']} epoch {p['epoch']}/{p['epochs']}",
                    )
                elif event.type == "epoch":
                    accuracy = p.get("val_accuracy")
                    note = f" val_accuracy {accuracy:.3f}" if accuracy is not None else ""
                    bar.console.print(f"phase {p['phase']} epoch {p['epoch']}{note}")
                elif event.type in ("log", "state"):
                    bar.console.print(p.get("message") or f"state {p.get('state')}")
        return self.refresh()


def finetune_request(
    base: str, dataset: str | DatasetInfo, output_model: str, params: dict[str, Any]
) -> zpb.CreateFineTuneJobRequest:
    """``params`` are FineTuneParams fields (epochs=..., base_kwargs={...}), and
    ``allow_other_source``."""
    fields = dict(params)
    allow_other_source = bool(fields.pop("allow_other_source", False))
    base_kwargs = fields.pop("base_kwargs", {})
    message = zpb.FineTuneParams(**fields)
    message.base_kwargs.update(base_kwargs)
    return zpb.CreateFineTuneJobRequest(
        base_model=base,
        dataset_id=dataset if isinstance(dataset, str) else dataset.id,
        output_model=output_model,
        params=message,
        allow_other_source=allow_other_source,
    )


def search_request(
    base: str,
    dataset: str | DatasetInfo,
    output_model: str,
    space: dict[str, Any],
    options: dict[str, Any],
    params: dict[str, Any],
) -> zpb.CreateSearchJobRequest:
    """``space``: parameter -> list of values or {"low", "high", "log"}; ``options``: the
    search's strategy, trials, promote, seed, early_stopping, min_trials, allow_other_source
    and parallel; ``params``: the FineTuneParams base of every trial."""
    base_request = finetune_request(base, dataset, output_model, params)
    return zpb.CreateSearchJobRequest(
        base_model=base_request.base_model,
        dataset_id=base_request.dataset_id,
        output_model=output_model,
        params=base_request.params,
        space_json=json.dumps(space),
        **options,
    )


def export_request(
    model: str,
    weights: str = "imagenet",
    input: str = "uint8",
    output_model: str = "",
    version: int = 0,
    allow_other_source: bool = False,
) -> zpb.CreateExportJobRequest:
    return zpb.CreateExportJobRequest(
        model=model,
        weights=weights,
        input=input,
        output_model=output_model,
        version=version,
        allow_other_source=allow_other_source,
    )


def job_from(message: zpb.Job, client: Any) -> Job:
    return Job(
        id=message.id,
        kind=message.kind,
        state=message.state,
        params=json.loads(message.params_json or "{}"),
        result=json.loads(message.result_json) if message.result_json else None,
        error=message.error,
        attempts=message.attempts,
        created_at=message.created_at,
        finished_at=message.finished_at,
        started_at=message.started_at,
        worker=message.worker,
        _client=client,
    )


def dataset_from(message: zpb.Dataset) -> DatasetInfo:
    return DatasetInfo(
        id=message.id,
        classes=tuple(message.classes),
        counts=tuple(message.counts),
        images=message.images,
        skipped=tuple((s.path, s.reason) for s in message.skipped),
        created_at=message.created_at,
    )


def event_from(message: zpb.JobEvent) -> JobEvent:
    return JobEvent(message.seq, message.time, message.type, json.loads(message.payload_json))


def archive_of(path: str | os.PathLike[str]) -> tuple[io.BufferedReader, int, str]:
    """An open archive: the file itself, or a zip of a ``class_name/image`` folder."""
    source = Path(path)
    if source.is_file():
        return source.open("rb"), source.stat().st_size, source.name
    if not source.is_dir():
        raise FileNotFoundError(f"no such file or directory: {source}")
    spool = tempfile.TemporaryFile()  # noqa: SIM115  (returned open, closed by the caller)
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            archive.write(file, file.relative_to(source).as_posix())
    size = spool.tell()
    spool.seek(0)
    return io.BufferedReader(spool), size, f"{source.name}.zip"


def upload_requests(
    path: str | os.PathLike[str], on_bytes: Callable[[int, int], None] | None
) -> Iterator[zpb.UploadDatasetRequest]:
    stream, size, name = archive_of(path)
    sent = 0
    with stream:
        first = True
        while chunk := stream.read(CHUNK):
            sent += len(chunk)
            if on_bytes:
                on_bytes(sent, size)
            yield zpb.UploadDatasetRequest(chunk=chunk, filename=name if first else "")
            first = False


def rpc_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except grpc.RpcError as e:
        raise from_rpc_error(e) from None
