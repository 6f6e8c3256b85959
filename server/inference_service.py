"""``inference.GRPCInferenceService``: the Triton/KServe v2 protocol over the data plane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from protos import grpc_service_pb2 as pb
from protos import grpc_service_pb2_grpc as pb_grpc
from server import convert
from server.interceptors import MalformedRequest, bounded
from zoo import __version__
from zoo.errors import ZooError
from zoo.serving.dataplane import DataPlane
from zoo.serving.stats import ModelStats

EXTENSIONS = ["model_repository", "model_configuration", "statistics", "classification"]
Context = Any  # grpc.aio.ServicerContext; grpc ships no type information


def statistics(plane: DataPlane, name: str, version: str) -> list[ModelStats]:
    """The statistics of every model, of model ``name``, or of one version of it ('' for
    all): what ModelStatistics and the REST statistics answer. An unknown model: NotFound."""
    stats = plane.stats.all()
    if name:
        plane.repository.versions(name)  # NotFound for unknown models
        stats = [s for s in stats if s.name == name]
    if version:
        number = convert.parse_version(version)
        if isinstance(number, str):  # a label: the version it points at
            number = plane.repository.get(name, number).version
        stats = [s for s in stats if s.version == number]
    return stats


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        version = convert.parse_version(request.version)
        return pb.ModelReadyResponse(ready=self.plane.model_ready(request.name, version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name="keras-zoo", version=__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        model = await self.plane.model(request.name, convert.parse_version(request.version))
        return convert.model_metadata(model, self.plane.repository.versions(model.name))

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        model = await self.plane.model(request.name, convert.parse_version(request.version))
        stable = self.plane.repository.labels(model.name).stable
        return convert.model_config(model, self.plane.config.max_queue_delay_us, stable)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        version = convert.parse_version(request.model_version)
        wanted = [o.name for o in request.outputs] or None
        model, outputs = await self.plane.infer(
            request.model_name,
            version,
            convert.infer_inputs(request),
            wanted,
            convert.deadline(context.time_remaining()),
            convert.priority(request),
        )
        return convert.infer_response(request, model, outputs)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # Errors travel in the stream, as Triton does, so one bad request does not end it.
        async for request in request_iterator:
            if isinstance(request, MalformedRequest):
                yield pb.ModelStreamInferResponse(error_message=request.message)
                continue
            try:
                response = await self.ModelInfer(request, context)
            except ZooError as e:
                yield pb.ModelStreamInferResponse(error_message=bounded(str(e)))
            else:
                yield pb.ModelStreamInferResponse(infer_response=response)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        return convert.model_statistics(statistics(self.plane, request.name, request.version))

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        return convert.repository_index(self.plane.repository_index(ready_only=request.ready))

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        convert.refuse_load_parameters(request.parameters)
        await self.plane.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        await self.plane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()
