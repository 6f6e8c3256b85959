"""The HTTP server: a Starlette app on uvicorn, in the gRPC server's event loop.

uvicorn's ``Server.serve`` would install its own SIGINT/SIGTERM handlers over the ones
``server.app.serve`` set, so its steps are called directly: bind (our socket, so port 0
tells the port it got), accept until ``stop``, then drain like the gRPC server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware

from server.http import console, v1, v2
from server.http.errors import EXCEPTION_HANDLERS
from server.http.metrics import RequestMetrics
from server.http.services import Services
from server.metrics import Metrics
from zoo.config import ServerConfig

log = logging.getLogger("zoo.server")


def create_app(services: Services, metrics: Metrics | None = None) -> Starlette:
    handlers: dict[Any, Any] = dict(EXCEPTION_HANDLERS)
    return Starlette(
        routes=[*v2.routes(services), *v1.routes(services), *console.routes(services)],
        exception_handlers=handlers,
        middleware=[Middleware(RequestMetrics, metrics=metrics)] if metrics else None,
    )


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A bound, listening, non-blocking TCP socket (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it every answer (headers, then body) waited out a 40 ms delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class HttpServer:
    def __init__(
        self, config: ServerConfig, services: Services, metrics: Metrics | None = None
    ) -> None:
        self.services = services
        self._config = uvicorn.Config(
            create_app(services, metrics),
            host=config.host,
            port=config.http_port,
            ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
            ssl_keyfile=str(config.tls_key) if config.tls_key else None,
            log_config=None,  # the server's logging, configured once (server.app)
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=math.ceil(config.grace_seconds),
            server_header=False,
        )
        self._server = uvicorn.Server(self._config)
        self._main: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind and start accepting; returns the port (``http_port`` 0 picks a free one)."""
        self._config.load()
        sock = listening_socket(self._config.host, self._config.port, self._config.backlog)
        self.port = sock.getsockname()[1]
        self._server.lifespan = self._config.lifespan_class(self._config)  # as serve() does
        await self._server.startup(sockets=[sock])
        self._main = asyncio.get_running_loop().create_task(self._server.main_loop())
        return self.port

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace_seconds``, then they
        are cancelled). Job event streams have ended by then (``EventHub.close``)."""
        self._server.should_exit = True
        if self._main is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        await self._server.shutdown()
