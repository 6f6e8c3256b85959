"""``AsyncZooClient``: the same surface as ``ZooClient`` for asyncio code."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from client import _wire
from client.errors import from_rpc_error
from client.types import Classification, ModelInfo
from protos import grpc_service_pb2 as pb
from protos import grpc_service_pb2_grpc as pb_grpc
from protos import zoo_service_pb2 as zpb
from protos import zoo_service_pb2_grpc as zpb_grpc


class AsyncZooClient:
    """Asyncio client; ``async with AsyncZooClient(...) as zoo: await zoo.classify(...)``."""

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

    async def model(self, name: str) -> ModelInfo:
        response = await self._call(self._zoo.GetModel, zpb.GetModelRequest(name=name))
        return _wire.model_info(response)

    async def classify(
        self, images: Any, model: str, top_k: int = 5, version: int | None = None
    ) -> Classification | list[Classification]:
        encoded, single = _wire.image_list(images)
        request = _wire.classify_request(model, encoded, top_k, version)
        results = _wire.classifications(await self._call(self._zoo.Classify, request))
        return results[0] if single else results

    async def infer(
        self,
        model: str,
        array: np.ndarray,
        version: int | None = None,
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
