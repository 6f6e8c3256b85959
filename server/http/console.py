"""The web console: static files from this package at ``/``, and the two things its pages
needed that the JSON API lacked: which catalog models have weights in the server's cache,
and whether mutating calls need the token (so a page asks for it before the call, not
after a 401).

Plain files and JavaScript modules, no build step and no CDN (deployments are air-gapped);
the chart library is vendored in ``console/vendor`` with its licence. The page's Content
Security Policy allows scripts from this server only, so a string from data that slipped
into markup could still not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from server.http.services import Services
from server.jobs_service import off_loop
from zoo import __version__
from zoo.catalog import list_models
from zoo.catalog.weights import cache_dir

STATIC = Path(__file__).resolve().parent / "console"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated, as the scripts are (ConsoleFiles)
}


class ConsoleFiles(StaticFiles):
    """The console's files, revalidated on each load (ETag): after an upgrade a browser
    runs the new server's scripts, not the ones it cached from the old."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def cached_weights(directory: Path) -> dict[str, dict[str, bool]]:
    """Per catalog model, whether its ImageNet weights files (with and without the top) are
    in ``directory``. Presence only: hashing every file on each page load would read
    gigabytes; ``zoo weights status`` verifies them."""
    return {
        spec.name: {
            "top": (directory / spec.weights_file(True).file_name).is_file(),
            "notop": (directory / spec.weights_file(False).file_name).is_file(),
        }
        for spec in list_models()
    }


def routes(services: Services) -> list[BaseRoute]:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    async def about(request: Request) -> Response:
        return JSONResponse(
            {"version": __version__, "token_required": services.token.expected is not None}
        )

    async def weights(request: Request) -> Response:
        models = await off_loop(services.io, lambda: cached_weights(cache_dir()))
        return JSONResponse({"models": models})

    return [
        Route("/", index),
        Route("/v1/console", about),
        Route("/v1/weights", weights),
        Mount("/console", ConsoleFiles(directory=STATIC), name="console"),
    ]
