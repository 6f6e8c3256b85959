"""The v2 (KServe / Triton) inference protocol over REST, as ``tritonclient.http`` speaks it.

Each handler is one data plane call between a parse and a JSON answer, as the gRPC servicer
(``server.inference_service``) is; shared logic lives there or in ``server.convert``.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server import convert
from server.http import tensors
from server.http.errors import read_body, read_json_object
from server.http.services import Services
from server.inference_service import EXTENSIONS, statistics
from zoo import __version__
from zoo.errors import InvalidArgument
from zoo.serving.stats import Duration, ModelStats

GRPC = "/inference.GRPCInferenceService/"


def _ref(request: Request) -> tuple[str, int | str | None]:
    """The model name and version (a number, a label such as ``stable``, or None: the default
    version) of a /v2/models/{name}[/versions/{v}] path."""
    version = request.path_params.get("version", "")
    return request.path_params["name"], convert.parse_version(version)


async def _json_body(request: Request, services: Services) -> dict[str, Any]:
    """An optional JSON object body (an empty body is ``{}``)."""
    return await read_json_object(request, services.body_limit, empty_ok=True)


def _status(ok: bool) -> Response:
    """Triton's health answers: 200 when so, 400 when not, no body."""
    return Response(status_code=200 if ok else 400)


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def _model_stats(s: ModelStats) -> dict[str, Any]:
    return {
        "name": s.name,
        "version": str(s.version),
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": _duration(s.success),
            "fail": _duration(s.fail),
            "queue": _duration(s.queue),
            "compute_input": {"count": 0, "ns": 0},
            "compute_infer": _duration(s.compute_infer),
            "compute_output": {"count": 0, "ns": 0},
        },
        "batch_stats": [
            {"batch_size": size, "compute_infer": {"count": b.count, "ns": b.compute_ns}}
            for size, b in sorted(s.batches.items())
        ],
    }


def routes(services: Services) -> list[Route]:
    plane = services.plane

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            {
                "name": "keras-zoo",
                "version": __version__,
                "extensions": [*EXTENSIONS, "binary_tensor_data"],
            }
        )

    async def live(request: Request) -> Response:
        return _status(True)

    async def ready(request: Request) -> Response:
        return _status(plane.ready)

    async def model_ready(request: Request) -> Response:
        name, version = _ref(request)
        return _status(plane.model_ready(name, version))

    async def model_metadata(request: Request) -> Response:
        name, version = _ref(request)
        model = await plane.model(name, version)
        message = convert.model_metadata(model, plane.repository.versions(model.name))
        answer = json_format.MessageToDict(message, preserving_proto_field_name=True)
        for tensor in (*answer.get("inputs", ()), *answer.get("outputs", ())):
            tensor["shape"] = [int(d) for d in tensor["shape"]]  # int64: JSON strings
        return JSONResponse(answer)

    async def model_config(request: Request) -> Response:
        name, version = _ref(request)
        model = await plane.model(name, version)
        stable = plane.repository.labels(model.name).stable
        config = convert.model_config(model, plane.config.max_queue_delay_us, stable).config
        answer = json_format.MessageToDict(config, preserving_proto_field_name=True)
        for tensor in (*answer.get("input", ()), *answer.get("output", ())):
            tensor["dims"] = [int(d) for d in tensor["dims"]]
        return JSONResponse(answer)

    async def model_statistics(request: Request) -> Response:
        name = request.path_params.get("name", "")
        stats = statistics(plane, name, request.path_params.get("version", ""))
        return JSONResponse({"model_stats": [_model_stats(s) for s in stats]})

    async def repository_index(request: Request) -> Response:
        body = await _json_body(request, services)
        ready_only = body.get("ready", False)
        if not isinstance(ready_only, bool):
            raise InvalidArgument(f"ready must be true or false; received {ready_only!r}")
        entries = plane.repository_index(ready_only=ready_only)
        return JSONResponse(
            [
                {"name": e.name, "version": str(e.version), "state": e.state, "reason": e.reason}
                for e in entries
            ]
        )

    async def load(request: Request) -> Response:
        services.token(request, GRPC + "RepositoryModelLoad")
        parameters = (await _json_body(request, services)).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidArgument(f"parameters must be a JSON object; received {parameters!r}")
        convert.refuse_load_parameters(parameters)
        await plane.load(request.path_params["name"])
        return Response(status_code=200)

    async def unload(request: Request) -> Response:
        services.token(request, GRPC + "RepositoryModelUnload")
        await _json_body(request, services)  # parameters (unload_dependents) have no meaning here
        await plane.unload(request.path_params["name"])
        return Response(status_code=200)

    async def infer(request: Request) -> Response:
        name, version = _ref(request)
        await plane.model(name, version)  # an unknown model is 404 whatever the body holds
        body = await read_body(request, services.body_limit, "the inference request")
        parsed = tensors.parse_infer_request(body, request.headers.get(tensors.HEADER_LENGTH))
        deadline = time.monotonic() + parsed.timeout_us / 1e6 if parsed.timeout_us else None
        wanted = [o.name for o in parsed.outputs] or None
        model, outputs = await plane.infer(
            name, version, parsed.inputs, wanted, deadline, parsed.priority
        )
        header, binaries = tensors.infer_response(parsed, model, outputs)
        if not binaries:
            return Response(header, media_type="application/json")
        return Response(
            b"".join([header, *binaries]),
            media_type="application/octet-stream",
            headers={tensors.HEADER_LENGTH: str(len(header))},
        )

    model = "/v2/models/{name}"
    version = "/v2/models/{name}/versions/{version}"
    return [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/stats", model_statistics),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
        *(
            route
            for prefix in (model, version)
            for route in (
                Route(prefix, model_metadata),
                Route(prefix + "/ready", model_ready),
                Route(prefix + "/config", model_config),
                Route(prefix + "/stats", model_statistics),
                Route(prefix + "/infer", infer, methods=["POST"]),
            )
        ),
    ]
