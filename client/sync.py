"""``ZooClient``: the blocking Python SDK."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from client import _wire
from client import jobs as job_api
from client.errors import from_rpc_error
from client.types import Classification, ModelInfo, ModelLabels
from protos import grpc_service_pb2 as pb
from protos import grpc_service_pb2_grpc as pb_grpc
from protos import zoo_service_pb2 as zpb
from protos import zoo_service_pb2_grpc as zpb_grpc

T = TypeVar("T")


class ZooClient:
    """Client of a keras-zoo server; use as a context manager.

    Args:
        address: ``host:port`` of the server. Defaults to ``localhost:8001``.
        token: bearer token for mutating calls. Defaults to none.
        tls: None/False for plaintext, True for TLS with the system's roots, or the path of
            a CA certificate to trust. Defaults to plaintext.
        timeout: seconds per call. Defaults to 30.
        retries: retries of idempotent calls on UNAVAILABLE, with exponential backoff.
            Defaults to 3.
    """

    def __init__(
        self,
        address: str = "localhost:8001",
        *,
        token: str | None = None,
        tls: bool | str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        max_message_bytes: int = _wire.DEFAULT_MAX_MESSAGE,
    ) -> None:
        self._channel = _wire.open_channel(grpc, address, tls, retries, max_message_bytes)
        self._inference = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._zoo = zpb_grpc.ModelZooStub(self._channel)
        self._datasets = zpb_grpc.DatasetsStub(self._channel)
        self._jobs = zpb_grpc.JobsStub(self._channel)
        self._metadata = _wire.metadata(token)
        self.timeout = timeout
        self._input_names: dict[str, str] = {}

    def __enter__(self) -> ZooClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def ready(self, model: str | None = None) -> bool:
        """Whether the server (or ``model``) is ready to serve."""
        if model is None:
            return self._call(self._inference.ServerReady, pb.ServerReadyRequest()).ready
        return self._call(self._inference.ModelReady, pb.ModelReadyRequest(name=model)).ready

    def models(self, pattern: str = "*", served_only: bool = False) -> list[ModelInfo]:
        request = zpb.ListModelsRequest(pattern=pattern, served_only=served_only)
        return [_wire.model_info(m) for m in self._call(self._zoo.ListModels, request).models]

    def model(self, name: str, version: int | None = None) -> ModelInfo:
        """One model; ``version`` (default: the newest) picks whose test report it carries."""
        request = zpb.GetModelRequest(name=name, version=version or 0)
        return _wire.model_info(self._call(self._zoo.GetModel, request))

    def classify(
        self, images: Any, model: str, top_k: int = 5, version: int | str | None = None
    ) -> Classification | list[Classification]:
        """Top-k labels of one image (returns one result) or a list (returns a list).

        Images are paths, bytes, PIL images or uint8 (H, W, 3) arrays.
        """
        encoded, single = _wire.image_list(images)
        request = _wire.classify_request(model, encoded, top_k, version)
        results = _wire.classifications(self._call(self._zoo.Classify, request))
        return results[0] if single else results

    def infer(
        self,
        model: str,
        array: np.ndarray,
        version: int | str | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the v2 ModelInfer on a batch-first array; returns the outputs by name."""
        if model not in self._input_names:
            request = pb.ModelMetadataRequest(name=model)
            self._input_names[model] = (
                self._call(self._inference.ModelMetadata, request).inputs[0].name
            )
        request = _wire.infer_request(model, array, self._input_names[model], version, outputs)
        return _wire.infer_result(self._call(self._inference.ModelInfer, request))

    def load(self, model: str) -> None:
        """Load (or reload) a model; needs the token when the server has one."""
        self._call(
            self._inference.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name=model)
        )

    def unload(self, model: str) -> None:
        self._call(
            self._inference.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=model)
        )

    # -- version labels ---------------------------------------------------------------
    def promote(
        self, model: str, version: int, label: str = "stable", by: str | None = None
    ) -> ModelLabels:
        """Point ``label`` at ``version``: requests without a version go to ``stable``'s.

        Needs the token. ``by``: who asks, for the label history; defaults to the local user
        name (a claim: the server's shared token does not prove who holds it).
        """
        request = _wire.promote_request(model, version, label, by)
        return _wire.model_labels(self._call(self._zoo.PromoteVersion, request))

    def rollback(self, model: str, label: str = "stable", by: str | None = None) -> ModelLabels:
        """Point ``label`` back at the version it had before; needs the token. Never retried:
        each call goes back one more step."""
        request = _wire.rollback_request(model, label, by)
        return _wire.model_labels(self._call(self._zoo.RollbackLabel, request))

    def labels(self, model: str) -> ModelLabels:
        """The model's labels, its default version and the history of label changes."""
        request = zpb.ListLabelsRequest(model=model)
        return _wire.model_labels(self._call(self._zoo.ListLabels, request))

    # -- datasets and jobs ------------------------------------------------------------
    def upload_dataset(
        self, path: str | os.PathLike[str], progress: bool = False
    ) -> job_api.DatasetInfo:
        """Upload a ``class_name/image`` folder (zipped on the fly) or a zip/tar archive.

        Uploading the same archive again returns the same dataset. No timeout applies.
        """
        bar: Any = None
        on_bytes = None
        if progress:
            from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

            bar = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
            task = bar.add_task(f"uploading {os.fspath(path)}", total=None)

            def on_bytes(sent: int, total: int) -> None:
                bar.update(task, completed=sent, total=total)

        requests = job_api.upload_requests(path, on_bytes)
        try:
            if bar is not None:
                bar.start()
            message = job_api.rpc_errors(
                lambda: self._datasets.UploadDataset(requests, metadata=self._metadata)
            )
        finally:
            if bar is not None:
                bar.stop()
        return job_api.dataset_from(message)

    def datasets(self) -> list[job_api.DatasetInfo]:
        response = self._call(self._datasets.ListDatasets, zpb.ListDatasetsRequest())
        return [job_api.dataset_from(d) for d in response.datasets]

    def delete_dataset(self, dataset_id: str) -> None:
        self._call(self._datasets.DeleteDataset, zpb.DeleteDatasetRequest(id=dataset_id))

    def finetune(
        self, base: str, dataset: str | job_api.DatasetInfo, output_model: str, **params: Any
    ) -> job_api.Job:
        """Start a fine-tuning job; ``params`` are FineTuneParams fields (epochs=..., ...)."""
        request = job_api.finetune_request(base, dataset, output_model, params)
        return job_api.job_from(self._call(self._jobs.CreateFineTuneJob, request), self)

    def search(
        self,
        base: str,
        dataset: str | job_api.DatasetInfo,
        output_model: str,
        space: dict[str, Any],
        *,
        strategy: str = "grid",
        trials: int = 0,
        promote: str = "never",
        seed: int = 0,
        early_stopping: str = "median",
        min_trials: int = 0,
        allow_other_source: bool = False,
        parallel: int = 0,
        **params: Any,
    ) -> job_api.Job:
        """Start a search over fine-tuning settings: one fine-tune job per trial, run by the
        server's workers; the returned job's ``result`` is the table of trials.

        ``space``: parameter -> a list of values, or (random only) a range
        ``{"low": x, "high": y, "log": bool}``; ``strategy``: "grid" (every combination),
        "random" (``trials`` draws, seeded by ``seed``) or "tpe" (Optuna's TPE, in waves of
        ``parallel`` trials, when the server has optuna); ``promote``: never, always or
        if_better, applied to the best trial only; ``early_stopping``: "median" (a trial
        below the median of ``min_trials`` or more others at the same epoch stops) or "none";
        ``params``: FineTuneParams fields, the base of every trial."""
        options = {
            "strategy": strategy,
            "trials": trials,
            "promote": promote,
            "seed": seed,
            "early_stopping": early_stopping,
            "min_trials": min_trials,
            "allow_other_source": allow_other_source,
            "parallel": parallel,
        }
        request = job_api.search_request(base, dataset, output_model, space, options, params)
        return job_api.job_from(self._call(self._jobs.CreateSearchJob, request), self)

    def export(
        self,
        model: str,
        weights: str = "imagenet",
        input: str = "uint8",
        output_model: str = "",
        version: int = 0,
        allow_other_source: bool = False,
    ) -> job_api.Job:
        """Start an export job (the server never blocks on an export).

        ``allow_other_source``: add the version even if ``output_model`` serves another model.
        """
        request = job_api.export_request(
            model, weights, input, output_model, version, allow_other_source
        )
        return job_api.job_from(self._call(self._jobs.CreateExportJob, request), self)

    def job(self, job_id: str) -> job_api.Job:
        return job_api.job_from(self._call(self._jobs.GetJob, zpb.GetJobRequest(id=job_id)), self)

    def training_logs(self, job_id: str) -> bytes:
        """A fine-tune job's TensorBoard event files, as a gzipped tar (phase1/, phase2/,
        evaluation/)."""
        request = zpb.GetTrainingLogsRequest(id=job_id)
        return bytes(self._call(self._jobs.GetTrainingLogs, request).tar_gz)

    def jobs(self, state: str = "", limit: int = 100) -> list[job_api.Job]:
        response = self._call(self._jobs.ListJobs, zpb.ListJobsRequest(state=state, limit=limit))
        return [job_api.job_from(j, self) for j in response.jobs]

    def _jobs_call(self, method: str, request: Any) -> job_api.Job:
        return job_api.job_from(self._call(getattr(self._jobs, method), request), self)

    def _watch(self, job_id: str, after: int) -> Any:
        stream = self._jobs.WatchJob(
            zpb.WatchJobRequest(id=job_id, after_event=after), metadata=self._metadata
        )
        try:
            for message in stream:
                yield job_api.event_from(message)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
