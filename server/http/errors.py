"""Domain errors -> HTTP answers, the token check and bounded request bodies.

A ``ZooError`` takes its gRPC status code from the one table (``server.interceptors``), then
that code's HTTP status below (Triton's and Google's mapping); the body is
``{"error": "<message>"}``, which ``tritonclient.http`` shows as the exception's text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

import grpc
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from server.interceptors import MUTATING_METHODS, bounded, status_code, token_matches
from zoo import errors

log = logging.getLogger("zoo.server")

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class BodyTooLarge(errors.ResourceExhausted):
    """A request body over the server's limit: 413, not the 429 of other exhausted limits."""


def http_status(error: errors.ZooError) -> int:
    if isinstance(error, BodyTooLarge):
        return 413
    return HTTP_STATUS.get(status_code(error), 500)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": bounded(message)}, status_code=status)


async def zoo_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, errors.ZooError)
    return error_response(http_status(error), str(error))


async def storage_error(request: Request, error: Exception) -> Response:
    """A file system failure: logged in full here, told to the caller without server paths."""
    log.error("storage error: %s", error)
    reason = getattr(error, "strerror", None) or type(error).__name__
    return error_response(
        500,
        f"the server could not read or write its storage ({reason}); its operator sees the "
        "details in the server log",
    )


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own refusals (no such route: 404, wrong method: 405) in the same shape."""
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path[:200]}"
    else:
        message = f"{error.detail}: {request.method} {request.url.path[:200]}"
    return error_response(error.status_code, message)


async def client_gone(request: Request, error: Exception) -> Response:
    return error_response(499, "the client closed the connection before the body was read")


EXCEPTION_HANDLERS = {
    errors.ZooError: zoo_error,
    OSError: storage_error,
    HTTPException: http_error,
    ClientDisconnect: client_gone,
}


class TokenCheck:
    """The gRPC guard's rule over HTTP: an operation that is a mutating gRPC method needs
    ``Authorization: Bearer <token>`` when the server has a token."""

    def __init__(self, expected: bytes | None) -> None:
        self.expected = expected

    def __call__(self, request: Request, method: str) -> None:
        if self.expected is None or method not in MUTATING_METHODS:
            return
        if not token_matches(request.headers.get("authorization"), self.expected):
            raise errors.Unauthenticated(
                f"{request.method} {request.url.path[:200]} ({method}) needs an "
                "'Authorization: Bearer <token>' header with the server's token; it was "
                "missing or wrong"
            )


def declared_length(request: Request, limit: int, what: str) -> None:
    """Refuse a body whose Content-Length is over ``limit`` before reading any of it."""
    text = request.headers.get("content-length")
    if text is None:
        return
    if not (text.isascii() and text.isdigit()):
        raise errors.InvalidArgument(f"Content-Length must be a number; received {text[:40]!r}")
    if int(text) > limit:
        raise BodyTooLarge(f"{what} of {int(text):,} bytes is over the limit of {limit:,} bytes")


async def bounded_stream(request: Request, limit: int, what: str) -> AsyncGenerator[bytes, None]:
    """The body's chunks, refused once more than ``limit`` bytes have come (a chunked body
    declares no length)."""
    declared_length(request, limit, what)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(f"{what} is over the limit of {limit:,} bytes")
        yield chunk


async def read_body(request: Request, limit: int, what: str = "the request body") -> bytes:
    return b"".join([chunk async for chunk in bounded_stream(request, limit, what)])


async def read_json_object(
    request: Request, limit: int, *, empty_ok: bool = False
) -> dict[str, Any]:
    """The body as a JSON object; with ``empty_ok`` an empty body is ``{}``."""
    body = await read_body(request, limit)
    if empty_ok and not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise errors.InvalidArgument(f"the request body does not parse as JSON: {e}") from None
    if not isinstance(value, dict):
        raise errors.InvalidArgument(
            f"the request body must be a JSON object; received {type(value).__name__}"
        )
    return value
