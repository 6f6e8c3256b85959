"""Errors raised by the SDK: the same class names as the server's domain errors.

A status code from the server maps back to the class the server raised, so
``except client.errors.NotFound`` reads the same as it does in-process.
"""

from __future__ import annotations

import grpc


class ZooError(Exception):
    """Base class; ``code`` is the gRPC status code, ``message`` the server's text."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NotFound(ZooError): ...


class InvalidArgument(ZooError): ...


class AlreadyExists(ZooError): ...


class FailedPrecondition(ZooError): ...


class IntegrityError(ZooError): ...


class ResourceExhausted(ZooError): ...


class Unauthenticated(ZooError): ...


class Unavailable(ZooError): ...


class Cancelled(ZooError): ...


class DeadlineExceeded(ZooError): ...


class Internal(ZooError): ...


ERRORS_BY_CODE: dict[grpc.StatusCode, type[ZooError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.DATA_LOSS: IntegrityError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
}


def from_rpc_error(error: grpc.RpcError) -> ZooError:
    code = error.code()
    cls = ERRORS_BY_CODE.get(code, ZooError)
    return cls(error.details() or str(code), code)
