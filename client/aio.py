"""``AsyncZooClient``: the same surface as ``ZooClient`` for asyncio code.

Jobs differ in one way: a ``Job`` returned here holds no live connection (its ``refresh``,
``cancel``, ``watch`` and ``wait`` are blocking calls of the sync client), so the async
client has ``job``, ``cancel_job``, ``watch_job`` and ``wait_job`` taking the job's id.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import numpy as np

from client import _wire
from client import jobs as job_api
from client.errors import Unavailable, from_rpc_error
from client.types import Classification, ModelInfo, ModelLabels
from protos import grpc_service_pb2 as pb
from protos import grpc_service_pb2_grpc as pb_grpc
from protos import zoo_service_pb2 as zpb
from protos import zoo_service_pb2_grpc as zpb_grpc


class AsyncZooClient:
    """Asyncio client; ``async with AsyncZooClient(...) as zoo: await zoo.classify(...)``."""

    is_async = True

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
        self._channel = _wire.open_channel(grpc.aio, address, tls, retries, max_message_bytes)
        self._inference = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._zoo = zpb_grpc.ModelZooStub(self._channel)
        self._datasets = zpb_grpc.DatasetsStub(self._channel)
        self._jobs = zpb_grpc.JobsStub(self._channel)
        self._metadata = _wire.metadata(token)
        self.timeout = timeout
        self._input_names: dict[str, str] = {}

    async def __aenter__(self) -> AsyncZooClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def ready(self, model: str | None = None) -> bool:
        if model is None:
            return (await self._call(self._inference.ServerReady, pb.ServerReadyRequest())).ready
        request = pb.ModelReadyRequest(name=model)
        return (await self._call(self._inference.ModelReady, request)).ready

    async def models(self, pattern: str = "*", served_only: bool = False) -> list[ModelInfo]:
        request = zpb.ListModelsRequest(pattern=pattern, served_only=served_only)
        response = await self._call(self._zoo.ListModels, request)
        return [_wire.model_info(m) for m in response.models]

    async def model(self, name: str, version: int | None = None) -> ModelInfo:
        request = zpb.GetModelRequest(name=name, version=version or 0)
        response = await self._call(self._zoo.GetModel, request)
        return _wire.model_info(response)

    async def classify(
        self, images: Any, model: str, top_k: int = 5, version: int | str | None = None
    ) -> Classification | list[Classification]:
        encoded, single = _wire.image_list(images)
        request = _wire.classify_request(model, encoded, top_k, version)
        results = _wire.classifications(await self._call(self._zoo.Classify, request))
        return results[0] if single else results

    async def infer(
        self,
        model: str,
        array: np.ndarray,
        version: int | str | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        if model not in self._input_names:
            response = await self._call(
                self._inference.ModelMetadata, pb.ModelMetadataRequest(name=model)
            )
            self._input_names[model] = response.inputs[0].name
        request = _wire.infer_request(model, array, self._input_names[model], version, outputs)
        return _wire.infer_result(await self._call(self._inference.ModelInfer, request))

    async def load(self, model: str) -> None:
        request = pb.RepositoryModelLoadRequest(model_name=model)
        await self._call(self._inference.RepositoryModelLoad, request)

    async def unload(self, model: str) -> None:
        request = pb.RepositoryModelUnloadRequest(model_name=model)
        await self._call(self._inference.RepositoryModelUnload, request)

    # -- version labels ---------------------------------------------------------------
    async def promote(
        self, model: str, version: int, label: str = "stable", by: str | None = None
    ) -> ModelLabels:
        """Point ``label`` at ``version``: requests without a version go to ``stable``'s.

        Needs the token. ``by``: who asks, for the label history; defaults to the local user
        name (a claim: the server's shared token does not prove who holds it).
        """
        request = _wire.promote_request(model, version, label, by)
        return _wire.model_labels(await self._call(self._zoo.PromoteVersion, request))

    async def rollback(
        self, model: str, label: str = "stable", by: str | None = None
    ) -> ModelLabels:
        """Point ``label`` back at the version it had before; needs the token. Never retried:
        each call goes back one more step."""
        request = _wire.rollback_request(model, label, by)
        return _wire.model_labels(await self._call(self._zoo.RollbackLabel, request))

    async def labels(self, model: str) -> ModelLabels:
        """The model's labels, its default version and the history of label changes."""
        request = zpb.ListLabelsRequest(model=model)
        return _wire.model_labels(await self._call(self._zoo.ListLabels, request))

    # -- datasets and jobs ------------------------------------------------------------
    async def upload_dataset(self, path: str | os.PathLike[str]) -> job_api.DatasetInfo:
        """Upload a ``class_name/image`` folder (zipped on the fly) or a zip/tar archive.

        Uploading the same archive again returns the same dataset. No timeout applies.
        """
        requests = job_api.upload_requests(path, None)
        try:
            message = await self._datasets.UploadDataset(requests, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return job_api.dataset_from(message)

    async def datasets(self) -> list[job_api.DatasetInfo]:
        response = await self._call(self._datasets.ListDatasets, zpb.ListDatasetsRequest())
        return [job_api.dataset_from(d) for d in response.datasets]

    async def delete_dataset(self, dataset_id: str) -> None:
        await self._call(self._datasets.DeleteDataset, zpb.DeleteDatasetRequest(id=dataset_id))

    async def finetune(
        self, base: str, dataset: str | job_api.DatasetInfo, output_model: str, **params: Any
    ) -> job_api.Job:
        """Start a fine-tuning job; ``params`` are FineTuneParams fields (epochs=..., ...)."""
        request = job_api.finetune_request(base, dataset, output_model, params)
        return job_api.job_from(await self._call(self._jobs.CreateFineTuneJob, request), self)

    async def search(
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
        return job_api.job_from(await self._call(self._jobs.CreateSearchJob, request), self)

    async def export(
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
        return job_api.job_from(await self._call(self._jobs.CreateExportJob, request), self)

    async def job(self, job_id: str) -> job_api.Job:
        message = await self._call(self._jobs.GetJob, zpb.GetJobRequest(id=job_id))
        return job_api.job_from(message, self)

    async def training_logs(self, job_id: str) -> bytes:
        request = zpb.GetTrainingLogsRequest(id=job_id)
        return bytes((await self._call(self._jobs.GetTrainingLogs, request)).tar_gz)

    async def jobs(self, state: str = "", limit: int = 100) -> list[job_api.Job]:
        request = zpb.ListJobsRequest(state=state, limit=limit)
        response = await self._call(self._jobs.ListJobs, request)
        return [job_api.job_from(j, self) for j in response.jobs]

    async def cancel_job(self, job_id: str) -> job_api.Job:
        message = await self._call(self._jobs.CancelJob, zpb.CancelJobRequest(id=job_id))
        return job_api.job_from(message, self)

    async def watch_job(self, job_id: str, after_event: int = 0) -> AsyncIterator[job_api.JobEvent]:
        """Every event after ``after_event`` until the job ends; reconnects where it left off."""
        last, pause = after_event, 0.1
        while True:
            request = zpb.WatchJobRequest(id=job_id, after_event=last)
            try:
                async for message in self._jobs.WatchJob(request, metadata=self._metadata):
                    event = job_api.event_from(message)
                    last, pause = event.seq, 0.1
                    yield event
                return
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                if not isinstance(error, Unavailable):
                    raise error from None
            # the server restarted: pick up after the last event seen, without spinning
            await asyncio.sleep(pause)
            pause = min(2.0, pause * 2)

    async def wait_job(self, job_id: str) -> job_api.Job:
        """Wait until the job ends; returns it in its final state."""
        async for _ in self.watch_job(job_id):
            pass
        return await self.job(job_id)
