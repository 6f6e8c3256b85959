"""``zoo.v1.Datasets`` and ``zoo.v1.Jobs``: uploads and jobs over the job manager."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from protos import zoo_service_pb2 as zpb
from protos import zoo_service_pb2_grpc as zpb_grpc
from server import convert
from zoo.errors import Cancelled, DeadlineExceeded, ResourceExhausted, Unavailable, ZooError
from zoo.jobs.datasets import Dataset, DatasetStore
from zoo.jobs.manager import JobManager
from zoo.jobs.records import JobEvent
from zoo.jobs.watch import EventHub

Context = Any  # grpc.aio.ServicerContext; grpc ships no type information
T = TypeVar("T")


async def off_loop(io: Executor, call: Callable[[], T]) -> T:
    """``call`` on ``io``'s threads: store and file I/O never runs on the serving loop."""
    return await asyncio.get_running_loop().run_in_executor(io, call)


@dataclass(eq=False)  # identity: kept in a set
class _Upload:
    queue: asyncio.Queue[bytes | BaseException | None]
    feeding: asyncio.Task[None] | None = None
    closing: asyncio.Task[None] | None = None
    received: bool = False  # the receiving thread has finished


class DatasetsService(zpb_grpc.DatasetsServicer):
    """Uploads run on threads of their own, at most ``max_uploads`` at once, so a stalled or
    slow upload never takes a thread that inference, Classify or a model load needs; one that
    sends nothing for ``idle_s`` is dropped, and shutdown ends every upload at once.
    Listing, reading and deleting datasets run on ``io``, never on the event loop."""

    def __init__(
        self, datasets: DatasetStore, io: Executor, max_uploads: int, idle_s: float
    ) -> None:
        self.datasets = datasets
        self.io = io
        self.max_uploads, self.idle_s = max_uploads, idle_s
        self._receivers = ThreadPoolExecutor(max_uploads, thread_name_prefix="upload")
        self._active: set[_Upload] = set()

    async def UploadDataset(
        self, request_iterator: AsyncIterator[zpb.UploadDatasetRequest], context: Context
    ) -> zpb.Dataset:
        pieces = ((m.filename, m.chunk) async for m in request_iterator)
        return convert.dataset(await self.receive(pieces))

    async def receive(self, pieces: AsyncIterator[tuple[str, bytes]]) -> Dataset:
        """One archive from ``pieces`` ((filename hint, chunk) pairs; the first non-empty
        hint counts), unpacked into a dataset: the upload path of gRPC and HTTP alike."""
        if len(self._active) >= self.max_uploads:
            raise ResourceExhausted(
                f"{len(self._active)} dataset uploads are in progress, the server's limit "
                "(max_uploads); retry when one has finished"
            )
        # The archive streams to disk as it arrives; unpacking and checking run on a thread.
        loop = asyncio.get_running_loop()
        upload = _Upload(asyncio.Queue(maxsize=8))
        filename = ""

        def chunks() -> Iterator[bytes]:
            while True:
                item = asyncio.run_coroutine_threadsafe(upload.queue.get(), loop).result()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        async def feed() -> None:
            nonlocal filename
            end: BaseException | None = None  # None: the archive is complete
            try:
                while True:
                    try:
                        name, chunk = await asyncio.wait_for(anext(pieces), self.idle_s)
                    except StopAsyncIteration:
                        break
                    filename = filename or name
                    if chunk:
                        await upload.queue.put(chunk)
            except TimeoutError:
                end = DeadlineExceeded(
                    f"the upload sent nothing for {self.idle_s:g} s (upload_idle_s); it was dropped"
                )
            except ZooError as e:  # an undecodable message
                end = e
            except asyncio.CancelledError:
                end = Unavailable("the upload was ended: the server is shutting down")
                raise
            except Exception as e:  # the client went away mid-stream
                end = Cancelled(f"the upload stream broke off: {type(e).__name__}")
            finally:
                # Unless the thread is done already, it must learn how the stream ended, even
                # with a full queue, so the end goes in by a task of its own.
                if not upload.received:
                    upload.closing = loop.create_task(upload.queue.put(end))

        self._active.add(upload)
        upload.feeding = loop.create_task(feed())
        try:
            dataset = await loop.run_in_executor(
                self._receivers, lambda: self.datasets.add(chunks(), filename)
            )
        finally:
            upload.received = True
            upload.feeding.cancel()
            self._active.discard(upload)
        return dataset

    def cancel_uploads(self) -> int:
        """End every upload in progress (server shutdown); returns how many there were."""
        for upload in list(self._active):
            if upload.feeding is not None:
                upload.feeding.cancel()  # its end (Unavailable) reaches the receiving thread
        return len(self._active)

    def close(self) -> None:
        self._receivers.shutdown(wait=False, cancel_futures=True)

    async def ListDatasets(self, request: Any, context: Context) -> zpb.ListDatasetsResponse:
        datasets = await off_loop(self.io, self.datasets.list)
        return zpb.ListDatasetsResponse(datasets=[convert.dataset(d) for d in datasets])

    async def GetDataset(self, request: zpb.GetDatasetRequest, context: Context) -> zpb.Dataset:
        return convert.dataset(await off_loop(self.io, lambda: self.datasets.get(request.id)))

    async def DeleteDataset(
        self, request: zpb.DeleteDatasetRequest, context: Context
    ) -> zpb.DeleteDatasetResponse:
        await off_loop(self.io, lambda: self.datasets.delete(request.id))
        return zpb.DeleteDatasetResponse()


class JobsService(zpb_grpc.JobsServicer):
    """Every job store call runs on ``io``: the store may be a remote PostgreSQL, and the
    event loop that runs it also serves inference."""

    def __init__(self, manager: JobManager, io: Executor, hub: EventHub) -> None:
        self.manager = manager
        self.io = io
        self.hub = hub

    async def CreateFineTuneJob(
        self, request: zpb.CreateFineTuneJobRequest, context: Context
    ) -> zpb.Job:
        params = convert.finetune_params(request.params)
        job = await off_loop(
            self.io,
            lambda: self.manager.create_finetune(
                request.base_model,
                request.dataset_id,
                request.output_model,
                params,
                request.allow_other_source,
            ),
        )
        return convert.job(job)

    async def CreateExportJob(
        self, request: zpb.CreateExportJobRequest, context: Context
    ) -> zpb.Job:
        job = await off_loop(
            self.io,
            lambda: self.manager.create_export(
                request.model,
                request.weights,
                request.input,
                request.output_model,
                request.version,
                request.allow_other_source,
            ),
        )
        return convert.job(job)

    async def CreateSearchJob(
        self, request: zpb.CreateSearchJobRequest, context: Context
    ) -> zpb.Job:
        params = convert.finetune_params(request.params)
        space = convert.search_space(request.space_json)
        job = await off_loop(
            self.io,
            lambda: self.manager.create_search(
                request.base_model,
                request.dataset_id,
                request.output_model,
                params,
                space,
                request.strategy,
                request.trials,
                request.promote,
                request.seed,
                request.early_stopping,
                request.min_trials,
                request.allow_other_source,
                request.parallel,
            ),
        )
        return convert.job(job)

    async def GetJob(self, request: zpb.GetJobRequest, context: Context) -> zpb.Job:
        return convert.job(await off_loop(self.io, lambda: self.manager.get(request.id)))

    async def ListJobs(
        self, request: zpb.ListJobsRequest, context: Context
    ) -> zpb.ListJobsResponse:
        jobs = await off_loop(self.io, lambda: self.manager.jobs(request.state, request.limit))
        return zpb.ListJobsResponse(jobs=[convert.job(j) for j in jobs])

    async def CancelJob(self, request: zpb.CancelJobRequest, context: Context) -> zpb.Job:
        return convert.job(await off_loop(self.io, lambda: self.manager.cancel(request.id)))

    async def WatchJob(
        self, request: zpb.WatchJobRequest, context: Context
    ) -> AsyncIterator[zpb.JobEvent]:
        async for event in self.events(request.id, request.after_event):
            yield convert.job_event(event)

    async def GetTrainingLogs(
        self, request: zpb.GetTrainingLogsRequest, context: Context
    ) -> zpb.TrainingLogs:
        archive, files = await off_loop(self.io, lambda: self.manager.training_logs(request.id))
        return zpb.TrainingLogs(job_id=request.id, tar_gz=archive, files=files)

    def events(self, job_id: str, after: int) -> AsyncIterator[JobEvent]:
        """A job's events after number ``after`` as they are written, until the job has
        ended: what WatchJob and the HTTP event stream send. At shutdown: Unavailable."""
        return self.hub.watch(job_id, after, self._read_events)

    def _read_events(self, job_id: str, after: int) -> tuple[bool, list[JobEvent]]:
        ended = self.manager.get(job_id).state.terminal  # read before the events
        return ended, self.manager.events(job_id, after)
