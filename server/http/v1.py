"""The JSON API (``/v1``): catalog, served models, classify, datasets, jobs and job events.

The same calls as the ``zoo.v1`` gRPC services, over the same objects; answers are the
records' ``to_dict`` forms. A job's events stream as server-sent events, numbered by their
``seq``, so a client that reconnects with ``Last-Event-ID`` resumes after the last it saw.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from server import convert
from server.http.errors import bounded_stream, read_body, read_json_object
from server.http.services import Services
from server.jobs_service import off_loop
from zoo.errors import InvalidArgument, NotFound, Unavailable
from zoo.jobs.datasets import Dataset
from zoo.jobs.records import JobEvent
from zoo.serving.dataplane import MAX_REQUEST_BATCH, ModelLabels, ModelSummary

ZOO = "/zoo.v1."
# POST /v1/jobs/search: each field's JSON type and default (JobManager.create_search's).
SEARCH_FIELDS: dict[str, tuple[type, Any]] = {
    "base_model": (str, ""),
    "dataset_id": (str, ""),
    "output_model": (str, ""),
    "params": (dict, {}),
    "space": (dict, None),
    "strategy": (str, "grid"),
    "trials": (int, 0),
    "promote": (str, ""),
    "seed": (int, 0),
    "early_stopping": (str, ""),
    "min_trials": (int, 0),
    "allow_other_source": (bool, False),
    "parallel": (int, 0),
}


def _summary(s: ModelSummary) -> dict[str, Any]:
    spec = s.spec
    return {
        "name": s.name,
        "catalog_model": s.catalog_model,
        "family": spec.family if spec else None,
        "versions": list(s.versions),
        "loaded_versions": list(s.loaded_versions),
        "input_shape": [int(d) for d in s.input_shape],
        "preprocessing": spec.preprocessing.value if spec else None,
        "num_classes": s.num_classes,
        "parameters": spec.parameters if spec else None,
        "depth": spec.depth_param_layers if spec else None,
        "size_mb": spec.size_mb if spec else None,
        "top1_accuracy": spec.top1_accuracy if spec else None,
        "top5_accuracy": spec.top5_accuracy if spec else None,
        "execution_provider": s.provider or None,
        "labels": dict(s.labels),
    }


def _labels(state: ModelLabels) -> dict[str, Any]:
    return {
        "model": state.model,
        **state.labels.to_dict(),
        "default_version": state.default_version,
    }


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else ""


def _dataset(d: Dataset) -> dict[str, Any]:
    answer = d.to_dict()
    del answer["path"]  # a server path is the operator's business
    return answer


def _query_int(request: Request, key: str, default: int) -> int:
    text = request.query_params.get(key)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise InvalidArgument(
            f"query parameter {key} must be a whole number; received {text[:40]!r}"
        )
    return int(text)


def _query_flag(request: Request, key: str) -> bool:
    text = request.query_params.get(key, "").lower()
    if text not in ("", "0", "1", "true", "false"):
        raise InvalidArgument(
            f"query parameter {key} must be true or false; received {text[:40]!r}"
        )
    return text in ("1", "true")


async def _json_object(request: Request, services: Services) -> dict[str, Any]:
    return await read_json_object(request, services.body_limit)


def _field(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgument(
            f"{key} must be a JSON {kind.__name__.replace('dict', 'object')}; "
            f"received {convert.clip(repr(value))}"
        )
    return value


def _known(body: dict[str, Any], keys: set[str]) -> None:
    unknown = sorted(set(body) - keys)
    if unknown:
        raise InvalidArgument(f"unknown fields {unknown}; known: {sorted(keys)}")


def _sse(event: JobEvent) -> bytes:
    data = json.dumps(
        {"seq": event.seq, "time": event.time.isoformat(), "type": event.type.value,
         "payload": event.payload}
    )  # fmt: skip
    return f"id: {event.seq}\nevent: {event.type.value}\ndata: {data}\n\n".encode()


def routes(services: Services) -> list[Route]:
    plane, manager, io, token = services.plane, services.jobs.manager, services.io, services.token

    async def catalog(request: Request) -> Response:
        pattern = request.query_params.get("pattern") or "*"
        family = request.query_params.get("family", "").lower()
        summaries = plane.list_models(pattern)
        if family:
            summaries = [s for s in summaries if s.spec and s.spec.family == family]
        if _query_flag(request, "served"):
            summaries = [s for s in summaries if s.versions]
        return JSONResponse({"models": [_summary(s) for s in summaries]})

    async def models(request: Request) -> Response:
        summaries = plane.list_models(request.query_params.get("pattern") or "*")
        return JSONResponse({"models": [_summary(s) for s in summaries if s.versions]})

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        for summary in plane.list_models(name):
            answer = _summary(summary)
            if summary.versions:
                version = convert.parse_version(request.query_params.get("version", ""))
                try:
                    number, report = plane.evaluation(summary.name, version)
                except NotFound as e:
                    if version is not None:
                        raise
                    # the default version is gone (a label left pointing at a version
                    # deleted by hand): the model and its versions are still worth showing
                    answer.update(evaluated_version=None, evaluation=None, error=str(e))
                    return JSONResponse(answer)
                answer["evaluated_version"] = number
                answer["evaluation"] = report.to_dict() if report else None
            return JSONResponse(answer)
        raise NotFound(f"no model named {name!r} in the catalog or the repository")

    async def classify(request: Request) -> Response:
        version = convert.parse_version(request.query_params.get("version", ""))
        top_k = _query_int(request, "top_k", 5)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await MultiPartParser(
                request.headers,
                bounded_stream(request, services.body_limit, "the upload"),
                max_files=MAX_REQUEST_BATCH,
                max_fields=16,
            ).parse()
            images = [
                await value.read()
                for _, value in form.multi_items()
                if isinstance(value, UploadFile)
            ]
            await form.close()
        else:
            images = [await read_body(request, services.body_limit, "the image")]
            images = [i for i in images if i]
        model, results = await plane.classify(request.path_params["name"], version, images, top_k)
        return JSONResponse(
            {
                "model": model.name,
                "version": model.version,
                "results": [
                    [{"label": p.label, "index": p.index, "score": p.score} for p in row]
                    for row in results
                ],
            }
        )

    async def labels(request: Request) -> Response:
        return JSONResponse(_labels(await plane.labels(request.path_params["name"])))

    async def promote(request: Request) -> Response:
        token(request, ZOO + "ModelZoo/PromoteVersion")
        body = await _json_object(request, services)
        _known(body, {"version", "label", "by"})
        if "version" not in body:
            raise InvalidArgument('promote needs a version: a JSON body such as {"version": 2}')
        state = await plane.promote(
            request.path_params["name"],
            _field(body, "version", int, 0),
            _field(body, "label", str, ""),
            _field(body, "by", str, ""),
            _peer(request),
        )
        return JSONResponse(_labels(state))

    async def rollback(request: Request) -> Response:
        token(request, ZOO + "ModelZoo/RollbackLabel")
        body = await read_json_object(request, services.body_limit, empty_ok=True)
        _known(body, {"label", "by"})
        state = await plane.rollback(
            request.path_params["name"],
            _field(body, "label", str, ""),
            _field(body, "by", str, ""),
            _peer(request),
        )
        return JSONResponse(_labels(state))

    async def list_datasets(request: Request) -> Response:
        datasets = await off_loop(io, services.datasets.datasets.list)
        return JSONResponse({"datasets": [_dataset(d) for d in datasets]})

    async def upload_dataset(request: Request) -> Response:
        token(request, ZOO + "Datasets/UploadDataset")
        filename = request.query_params.get("filename", "")
        limit = services.datasets.datasets.limits.max_archive_bytes
        chunks = bounded_stream(request, limit, "the dataset archive")
        dataset = await services.datasets.receive((filename, c) async for c in chunks)
        return JSONResponse(_dataset(dataset), status_code=201)

    async def get_dataset(request: Request) -> Response:
        dataset_id = request.path_params["id"]
        return JSONResponse(
            _dataset(await off_loop(io, lambda: services.datasets.datasets.get(dataset_id)))
        )

    async def delete_dataset(request: Request) -> Response:
        token(request, ZOO + "Datasets/DeleteDataset")
        dataset_id = request.path_params["id"]
        await off_loop(io, lambda: services.datasets.datasets.delete(dataset_id))
        return Response(status_code=204)

    async def list_jobs(request: Request) -> Response:
        state = request.query_params.get("state", "")
        limit = _query_int(request, "limit", 100)
        jobs = await off_loop(io, lambda: manager.jobs(state, limit))
        return JSONResponse({"jobs": [j.to_dict() for j in jobs]})

    async def create_finetune(request: Request) -> Response:
        token(request, ZOO + "Jobs/CreateFineTuneJob")
        body = await _json_object(request, services)
        _known(body, {"base_model", "dataset_id", "output_model", "params", "allow_other_source"})
        job = await off_loop(
            io,
            lambda: manager.create_finetune(
                _field(body, "base_model", str, ""),
                _field(body, "dataset_id", str, ""),
                _field(body, "output_model", str, ""),
                _field(body, "params", dict, {}),
                _field(body, "allow_other_source", bool, False),
            ),
        )
        return JSONResponse(job.to_dict(), status_code=201)

    async def create_export(request: Request) -> Response:
        token(request, ZOO + "Jobs/CreateExportJob")
        body = await _json_object(request, services)
        _known(body, {"model", "weights", "input", "output_model", "version", "allow_other_source"})
        job = await off_loop(
            io,
            lambda: manager.create_export(
                _field(body, "model", str, ""),
                _field(body, "weights", str, "imagenet"),
                _field(body, "input", str, "uint8"),
                _field(body, "output_model", str, ""),
                _field(body, "version", int, 0),
                _field(body, "allow_other_source", bool, False),
            ),
        )
        return JSONResponse(job.to_dict(), status_code=201)

    async def create_search(request: Request) -> Response:
        token(request, ZOO + "Jobs/CreateSearchJob")
        body = await _json_object(request, services)
        _known(body, set(SEARCH_FIELDS))
        fields = {
            key: _field(body, key, kind, default) for key, (kind, default) in SEARCH_FIELDS.items()
        }
        job = await off_loop(io, lambda: manager.create_search(**fields))
        return JSONResponse(job.to_dict(), status_code=201)

    async def get_job(request: Request) -> Response:
        job_id = request.path_params["id"]
        return JSONResponse((await off_loop(io, lambda: manager.get(job_id))).to_dict())

    async def training_logs(request: Request) -> Response:
        job_id = request.path_params["id"]
        archive, _ = await off_loop(io, lambda: manager.training_logs(job_id))
        return Response(
            archive,
            media_type="application/gzip",
            headers={"content-disposition": f'attachment; filename="{job_id}-tensorboard.tar.gz"'},
        )

    async def cancel_job(request: Request) -> Response:
        token(request, ZOO + "Jobs/CancelJob")
        job_id = request.path_params["id"]
        return JSONResponse((await off_loop(io, lambda: manager.cancel(job_id))).to_dict())

    async def job_events(request: Request) -> Response:
        job_id = request.path_params["id"]
        resume = request.headers.get("last-event-id") or request.query_params.get("after", "")
        if resume and not (resume.isascii() and resume.isdigit() and len(resume) <= 12):
            raise InvalidArgument(
                f"Last-Event-ID (or after) must be an event number; received {resume[:40]!r}"
            )
        after = int(resume or 0)
        await off_loop(io, lambda: manager.get(job_id))  # NotFound before the stream starts

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for event in services.jobs.events(job_id, after):
                    yield _sse(event)
            except Unavailable:  # the server is stopping: the client resumes elsewhere
                return

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return [
        Route("/v1/catalog", catalog),
        Route("/v1/models", models),
        Route("/v1/models/{name}", model),
        Route("/v1/models/{name}/classify", classify, methods=["POST"]),
        Route("/v1/models/{name}/labels", labels),
        Route("/v1/models/{name}/promote", promote, methods=["POST"]),
        Route("/v1/models/{name}/rollback", rollback, methods=["POST"]),
        Route("/v1/datasets", list_datasets),
        Route("/v1/datasets", upload_dataset, methods=["POST"]),
        Route("/v1/datasets/{id}", get_dataset),
        Route("/v1/datasets/{id}", delete_dataset, methods=["DELETE"]),
        Route("/v1/jobs", list_jobs),
        Route("/v1/jobs/finetune", create_finetune, methods=["POST"]),
        Route("/v1/jobs/export", create_export, methods=["POST"]),
        Route("/v1/jobs/search", create_search, methods=["POST"]),
        Route("/v1/jobs/{id}", get_job),
        Route("/v1/jobs/{id}/cancel", cancel_job, methods=["POST"]),
        Route("/v1/jobs/{id}/events", job_events),
        Route("/v1/jobs/{id}/tensorboard", training_logs),
    ]
