"""``zoo.v1.ModelZoo``: the catalog joined with the repository, and image classification."""

from __future__ import annotations

from typing import Any

from protos import zoo_service_pb2 as zpb
from protos import zoo_service_pb2_grpc as zpb_grpc
from server import convert
from zoo.errors import NotFound
from zoo.serving.dataplane import DataPlane

Context = Any  # grpc.aio.ServicerContext; grpc ships no type information


class ModelZooService(zpb_grpc.ModelZooServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    async def ListModels(
        self, request: zpb.ListModelsRequest, context: Context
    ) -> zpb.ListModelsResponse:
        summaries = self.plane.list_models(request.pattern or "*")
        if request.served_only:
            summaries = [s for s in summaries if s.versions]
        return zpb.ListModelsResponse(models=[convert.zoo_model(s) for s in summaries])

    async def GetModel(self, request: zpb.GetModelRequest, context: Context) -> zpb.Model:
        for summary in self.plane.list_models(request.name):
            if not summary.versions:
                return convert.zoo_model(summary)
            version = convert.parse_version(request.version)
            return convert.zoo_model(summary, self.plane.evaluation(summary.name, version))
        raise NotFound(f"no model named {request.name!r} in the catalog or the repository")

    async def Classify(
        self, request: zpb.ClassifyRequest, context: Context
    ) -> zpb.ClassifyResponse:
        model, results = await self.plane.classify(
            request.model,
            convert.classify_version(request.version, request.version_label),
            list(request.images),
            request.top_k or 5,
        )
        return convert.classify_response(model, results)

    async def PromoteVersion(
        self, request: zpb.PromoteVersionRequest, context: Context
    ) -> zpb.ModelLabels:
        state = await self.plane.promote(
            request.model, request.version, request.label, request.by, context.peer()
        )
        return convert.model_labels(state)

    async def RollbackLabel(
        self, request: zpb.RollbackLabelRequest, context: Context
    ) -> zpb.ModelLabels:
        state = await self.plane.rollback(request.model, request.label, request.by, context.peer())
        return convert.model_labels(state)

    async def ListLabels(self, request: zpb.ListLabelsRequest, context: Context) -> zpb.ModelLabels:
        return convert.model_labels(await self.plane.labels(request.model))
