"""Server interceptors: domain errors -> status codes (the one table), tokens, metrics."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

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


MAX_DETAILS = 1000  # characters; trailing metadata past ~8 KiB turns into RESOURCE_EXHAUSTED

log = logging.getLogger("zoo.server")


def bounded(message: str, limit: int = MAX_DETAILS) -> str:
    """``message`` cut to ``limit`` characters: errors echo requests, which can be huge."""
    if len(message) <= limit:
        return message
    return f"{message[: limit - 40]}... ({len(message) - limit + 40:,} characters cut)"


@dataclass(frozen=True)
class MalformedRequest:
    """Stands in for a request whose bytes did not parse; the handler answers it."""

    message: str


class _Throttled:
    """One log line per ``interval`` seconds for a repeated event, with the count in between."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval, self._lock = interval, threading.Lock()
        self._last, self._count = -interval, 0

    def warning(self, text: str) -> None:
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            count, self._count, self._last = self._count, 0, now
        log.warning("%s (%d such in the last %.0f s at most)", text, count, self.interval)


_malformed_log = _Throttled()


def _tolerant(deserialize: Callable[[bytes], Any] | None, method: str) -> Any:
    """A deserializer that turns undecodable bytes into a MalformedRequest, not UNKNOWN."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as e:
            _malformed_log.warning(f"refused an undecodable {method} request: {e}")
            return MalformedRequest(
                bounded(f"the request body ({len(data)} bytes) does not parse as {method}'s "
                        f"request message: {e}", 300)
            )  # fmt: skip

    return parse


async def _storage_error(context: grpc.aio.ServicerContext, error: OSError) -> None:
    """A file system failure: logged in full here, told to the caller without server paths."""
    log.error("storage error: %s", error)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"the server could not read or write its storage ({error.strerror or type(error).__name__}"
        "); its operator sees the details in the server log",
    )


async def _refuse_malformed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, MalformedRequest):
            raise errors.InvalidArgument(request.message)
        yield request


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Every ZooError a servicer raises becomes its status code with its message (bounded);
    a request body that does not parse becomes INVALID_ARGUMENT, not UNKNOWN."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        handler = handler._replace(
            request_deserializer=_tolerant(handler.request_deserializer, details.method)
        )

        def around(behavior: Any) -> Any:
            client_streams = behavior in (handler.stream_unary, handler.stream_stream)
            # A stream of responses answers a bad message in the stream (ModelStreamInfer);
            # a single response refuses the call.
            if client_streams and behavior is handler.stream_unary:
                original = behavior

                def behavior(requests: Any, context: Any) -> Any:
                    return original(_refuse_malformed(requests), context)

            if _is_stream_response(behavior, handler):

                async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    if isinstance(request, MalformedRequest):
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                    try:
                        async for item in behavior(request, context):
                            yield item
                    except errors.ZooError as e:
                        await context.abort(status_code(e), bounded(str(e)))
                    except OSError as e:  # e.g. a data directory made read-only
                        await _storage_error(context, e)

                return stream

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, MalformedRequest):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                try:
                    return await behavior(request, context)
                except errors.ZooError as e:
                    await context.abort(status_code(e), bounded(str(e)))
                except OSError as e:  # e.g. a data directory made read-only
                    await _storage_error(context, e)

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
