"""``zoo.v1.Datasets`` and ``zoo.v1.Jobs``: uploads and jobs over the job manager."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from protos import zoo_service_pb2 as zpb
from protos import zoo_service_pb2_grpc as zpb_grpc
from server import convert
from zoo.datasets import DatasetStore
from zoo.jobmanager import JobManager

Context = Any  # grpc.aio.ServicerContext; grpc ships no type information
WATCH_POLL_S = 0.5


class DatasetsService(zpb_grpc.DatasetsServicer):
    def __init__(self, datasets: DatasetStore, executor: Any) -> None:
        self.datasets = datasets
        self.executor = executor

    async def UploadDataset(
        self, request_iterator: AsyncIterator[zpb.UploadDatasetRequest], context: Context
    ) -> zpb.Dataset:
        # The archive streams to disk as it arrives; unpacking and checking run on a thread.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
        filename = ""

        def chunks() -> Iterator[bytes]:
            while (
                chunk := asyncio.run_coroutine_threadsafe(queue.get(), loop).result()
            ) is not None:
                yield chunk

        async def feed() -> None:
            nonlocal filename
            try:
                async for message in request_iterator:
                    filename = filename or message.filename
                    if message.chunk:
                        await queue.put(message.chunk)
            finally:
                await queue.put(None)

        feeding = loop.create_task(feed())
        try:
            dataset = await loop.run_in_executor(
                self.executor, lambda: self.datasets.add(chunks(), filename)
            )
        finally:
            feeding.cancel()
        return convert.dataset(dataset)

    async def ListDatasets(self, request: Any, context: Context) -> zpb.ListDatasetsResponse:
        return zpb.ListDatasetsResponse(datasets=[convert.dataset(d) for d in self.datasets.list()])

    async def GetDataset(self, request: zpb.GetDatasetRequest, context: Context) -> zpb.Dataset:
        return convert.dataset(self.datasets.get(request.id))

    async def DeleteDataset(
        self, request: zpb.DeleteDatasetRequest, context: Context
    ) -> zpb.DeleteDatasetResponse:
        self.datasets.delete(request.id)
        return zpb.DeleteDatasetResponse()


class JobsService(zpb_grpc.JobsServicer):
    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    async def CreateFineTuneJob(
        self, request: zpb.CreateFineTuneJobRequest, context: Context
    ) -> zpb.Job:
        job = self.manager.create_finetune(
            request.base_model,
            request.dataset_id,
            request.output_model,
            convert.finetune_params(request.params),
        )
        return convert.job(job)

    async def CreateExportJob(
        self, request: zpb.CreateExportJobRequest, context: Context
    ) -> zpb.Job:
        job = self.manager.create_export(
            request.model, request.weights, request.input, request.output_model, request.version
        )
        return convert.job(job)

    async def GetJob(self, request: zpb.GetJobRequest, context: Context) -> zpb.Job:
        return convert.job(self.manager.get(request.id))

    async def ListJobs(
        self, request: zpb.ListJobsRequest, context: Context
    ) -> zpb.ListJobsResponse:
        jobs = self.manager.jobs(request.state, request.limit)
        return zpb.ListJobsResponse(jobs=[convert.job(j) for j in jobs])

    async def CancelJob(self, request: zpb.CancelJobRequest, context: Context) -> zpb.Job:
        return convert.job(self.manager.cancel(request.id))

    async def WatchJob(
        self, request: zpb.WatchJobRequest, context: Context
    ) -> AsyncIterator[zpb.JobEvent]:
        after = request.after_event
        while True:
            ended = self.manager.get(request.id).state.terminal  # read before the events
            for event in self.manager.events(request.id, after):
                yield convert.job_event(event)
                after = event.seq
            if ended:
                return
            await asyncio.sleep(WATCH_POLL_S)
