"""What every RPC goes through: domain errors -> status codes (the one table), the token,
undecodable requests, bounded messages, metrics. Applied once per method (``Guard``)."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
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
        "/zoo.v1.Jobs/CreateSearchJob",
        "/zoo.v1.Jobs/CancelJob",
        "/zoo.v1.ModelZoo/PromoteVersion",
        "/zoo.v1.ModelZoo/RollbackLabel",
    }
)


def bearer(token: str | None) -> bytes | None:
    """What an authorization header or metadata must hold for ``token`` (None: no token)."""
    return f"Bearer {token}".encode() if token else None


def token_matches(given: str | bytes | None, expected: bytes | None) -> bool:
    """Whether ``given`` (an authorization value) is ``expected``, in constant time."""
    if given is None:
        return False
    given = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(given, expected or b"")


def status_code(error: errors.ZooError) -> grpc.StatusCode:
    """The status code of ``error``: its class's entry, else its nearest base class's."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.UNKNOWN


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


KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class Guard:
    """What every RPC goes through, in one place: the token check on mutating methods,
    undecodable bodies answered INVALID_ARGUMENT, ZooErrors mapped by ``STATUS_CODES`` (their
    messages bounded), storage errors as INTERNAL, and request counts and latencies.

    It wraps each method's handler once, when the services are registered (``registering``),
    not as grpc.aio interceptors, which run a chain of coroutines and closures on every call:
    measured with h2load on a no-op model (docs/benchmarks/requests.md), three interceptors
    cost 0.08 ms of server CPU per request, a seventh of all the server spent.
    """

    def __init__(self, metrics: Metrics, token: str | None = None) -> None:
        self._metrics = metrics
        self._expected = bearer(token)

    def registering(self, server: grpc.aio.Server) -> Any:
        """A stand-in for ``server`` to pass to generated ``add_..._to_server`` functions."""
        return _Registering(server, self)

    def _authorized(self, context: grpc.aio.ServicerContext) -> bool:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                return token_matches(value, self._expected)
        return False

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        handler = handler._replace(
            request_deserializer=_tolerant(handler.request_deserializer, method)
        )
        kind = next(k for k in KINDS if getattr(handler, k) is not None)
        behavior = getattr(handler, kind)
        guarded = self._expected is not None and method in MUTATING_METHODS
        name = method.rsplit("/", 1)[-1]
        metrics = self._metrics

        async def admit(request: Any, context: grpc.aio.ServicerContext) -> None:
            """Abort a call without the token, or whose body did not parse."""
            if guarded and not self._authorized(context):
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"{method} needs 'authorization: Bearer <token>' metadata with the "
                    "server's token; it was missing or wrong",
                )
            if isinstance(request, MalformedRequest):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

        if kind == "stream_unary":  # a client stream: an undecodable message ends the call
            inner = behavior

            def behavior(requests: Any, context: Any) -> Any:
                return inner(_refuse_malformed(requests), context)

        if kind in ("unary_stream", "stream_stream"):
            # A stream of responses (WatchJob, ModelStreamInfer) is long-lived: its messages
            # are not requests, so it is not timed. ModelStreamInfer answers undecodable
            # messages in the stream itself.
            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(request, context)
                try:
                    async for item in behavior(request, context):
                        yield item
                except errors.ZooError as e:
                    await context.abort(status_code(e), bounded(str(e)))
                except OSError as e:  # e.g. a data directory made read-only
                    await _storage_error(context, e)

            return handler._replace(**{kind: stream})

        in_flight = metrics.in_flight.labels(name)

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            in_flight.inc()
            try:
                await admit(request, context)
                try:
                    return await behavior(request, context)
                except errors.ZooError as e:
                    code = status_code(e).name
                    await context.abort(status_code(e), bounded(str(e)))
                except OSError as e:  # e.g. a data directory made read-only
                    code = "INTERNAL"
                    await _storage_error(context, e)
            except BaseException:
                if code == "OK":
                    code = context.code().name if context.code() else "UNKNOWN"
                raise
            finally:
                in_flight.dec()
                metrics.observe_request(name, code, time.perf_counter() - started)

        return handler._replace(**{kind: unary})


class _GuardedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped by the guard, once per method."""

    def __init__(self, inner: grpc.GenericRpcHandler, guard: Guard) -> None:
        self._inner, self._guard = inner, guard
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method not in self._wrapped:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            self._wrapped[method] = self._guard.wrap(method, handler)
        return self._wrapped[method]


class _Registering:
    """Passes the handlers that generated code registers through the guard to the server."""

    def __init__(self, server: grpc.aio.Server, guard: Guard) -> None:
        self._server, self._guard = server, guard

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_GuardedGeneric(h, self._guard) for h in handlers)
        )

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self._server.add_registered_method_handlers(
            service, {n: self._guard.wrap(f"/{service}/{n}", h) for n, h in handlers.items()}
        )
