"""Server interceptors: domain errors -> status codes (the one table), tokens, metrics."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.metrics import Metrics
from zoo import errors

STATUS_CODES: dict[type[errors.ZooError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.IntegrityError: grpc.StatusCode.DATA_LOSS,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}

# RPCs that change server state need the bearer token when one is configured.
MUTATING_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
        "/zoo.v1.Datasets/UploadDataset",
        "/zoo.v1.Datasets/DeleteDataset",
        "/zoo.v1.Jobs/CreateFineTuneJob",
        "/zoo.v1.Jobs/CreateExportJob",
        "/zoo.v1.Jobs/CancelJob",
    }
)

Check = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]


def status_code(error: errors.ZooError) -> grpc.StatusCode:
    """The status code of ``error``: its class's entry, else its nearest base class's."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.UNKNOWN


def _wrap(handler: grpc.RpcMethodHandler, around: Callable[[Any], Any]) -> grpc.RpcMethodHandler:
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return handler._replace(**{kind: around(behavior)})
    return handler


def _is_stream_response(behavior: Any, handler: grpc.RpcMethodHandler) -> bool:
    return behavior in (handler.unary_stream, handler.stream_stream)


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Every ZooError a servicer raises becomes its status code with its message."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None

        def around(behavior: Any) -> Any:
            if _is_stream_response(behavior, handler):

                async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    try:
                        async for item in behavior(request, context):
                            yield item
                    except errors.ZooError as e:
                        await context.abort(status_code(e), str(e))

                return stream

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await behavior(request, context)
                except errors.ZooError as e:
                    await context.abort(status_code(e), str(e))

            return unary

        return _wrap(handler, around)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Mutating RPCs need ``authorization: Bearer <token>`` metadata."""

    def __init__(self, token: str, methods: frozenset[str] = MUTATING_METHODS) -> None:
        self._expected = f"Bearer {token}".encode()
        self._methods = methods

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected)
        return False

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method not in self._methods:
            return handler
        if self._authorized(details.invocation_metadata):
            return handler
        method = details.method

        def around(behavior: Any) -> Any:
            async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"{method} needs 'authorization: Bearer <token>' metadata with the "
                    "server's token; it was missing or wrong",
                )

            return refuse

        return _wrap(handler, around)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts requests and their latency per RPC method and status code."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        metrics = self._metrics

        def around(behavior: Any) -> Any:
            if _is_stream_response(behavior, handler):
                return behavior  # streams are long-lived; their messages are not requests

            async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                code = "OK"
                try:
                    return await behavior(request, context)
                except BaseException:
                    code = context.code().name if context.code() else "UNKNOWN"
                    raise
                finally:
                    metrics.observe_request(method, code, time.perf_counter() - started)

            return timed

        return _wrap(handler, around)
