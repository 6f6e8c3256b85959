"""Pure conversions between protocol messages and domain values. No I/O, no state."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection
from typing import Any

import numpy as np

from protos import grpc_service_pb2 as pb
from protos import model_config_pb2 as mc
from protos import zoo_service_pb2 as zpb
from zoo.errors import InvalidArgument
from zoo.jobs.datasets import Dataset
from zoo.jobs.records import Job, JobEvent
from zoo.labels import LABEL_PATTERN
from zoo.manifest import Evaluation
from zoo.repository import MAX_VERSION
from zoo.serving.dataplane import ModelIndexEntry, ModelLabels, ModelSummary, Prediction
from zoo.serving.runtime import LoadedModel, TensorInfo
from zoo.serving.stats import Duration, ModelStats

# v2 protocol datatype -> (numpy dtype, InferTensorContents field for typed contents)
DATATYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "BOOL": (np.dtype(np.bool_), "bool_contents"),
    "UINT8": (np.dtype(np.uint8), "uint_contents"),
    "UINT16": (np.dtype(np.uint16), "uint_contents"),
    "UINT32": (np.dtype(np.uint32), "uint_contents"),
    "UINT64": (np.dtype(np.uint64), "uint64_contents"),
    "INT8": (np.dtype(np.int8), "int_contents"),
    "INT16": (np.dtype(np.int16), "int_contents"),
    "INT32": (np.dtype(np.int32), "int_contents"),
    "INT64": (np.dtype(np.int64), "int64_contents"),
    "FP16": (np.dtype(np.float16), ""),
    "FP32": (np.dtype(np.float32), "fp32_contents"),
    "FP64": (np.dtype(np.float64), "fp64_contents"),
}
# v2 datatype -> ModelConfig's DataType, as config.pbtxt names it (zoo.export.triton_config)
CONFIG_TYPES = {name: mc.DataType.Value(f"TYPE_{name}") for name in DATATYPES}


def deadline(time_remaining: float | None) -> float | None:
    """The client's gRPC deadline as a ``time.monotonic()`` instant (None: it set none)."""
    return None if time_remaining is None else time.monotonic() + time_remaining


def parse_version(version: str | int) -> int | str | None:
    """'' or 0 -> the default version (None); ASCII digits of a number in 1..MAX_VERSION -> that
    version; a label (``stable``, a-z 0-9 _ -, starting with a letter) -> the label.

    int() alone would also take " 1", "+1" and other scripts' digits.
    """
    if version in ("", 0):
        return None
    text = str(version)
    if LABEL_PATTERN.fullmatch(text):
        return text
    digits = text.isascii() and text.isdigit() and len(text) <= len(str(MAX_VERSION))
    if not digits or not 1 <= int(text) <= MAX_VERSION:
        raise InvalidArgument(
            f"model version must be empty or a whole number from 1 to {MAX_VERSION}, or a "
            f"label (a-z 0-9 _ -, starting with a letter, e.g. stable); received {clip(text)!r}"
        )
    return int(text)


def classify_version(version: int, label: str) -> int | str | None:
    """Classify's version: a number (0: the default) or a label, not both."""
    if version and label:
        raise InvalidArgument(
            f"set version or version_label, not both; received {version} and {clip(label)!r}"
        )
    return parse_version(label or version)


MAX_DIMS = 32  # ONNX Runtime, like numpy, handles at most 64; no image model needs over 4
MAX_DIM = 2**31 - 1


def element_count(name: str, dims: Any) -> tuple[tuple[int, ...], int]:
    """A tensor's shape and element count, refused before anything is allocated.

    Python integers cannot overflow, so ``[2**62, 4]`` is counted exactly and then compared
    with the bytes actually sent, instead of wrapping around in int64.
    """
    shape = tuple(int(d) for d in dims)
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(
            f"input {clip(name)!r} has {len(shape)} dimensions; at most {MAX_DIMS} are accepted"
        )
    if any(not 0 <= d <= MAX_DIM for d in shape):
        raise InvalidArgument(
            f"input {clip(name)!r} has shape {clip(str(list(shape)))}; each dimension must be "
            f"from 0 to {MAX_DIM}"
        )
    return shape, math.prod(shape)


def priority(request: pb.ModelInferRequest) -> int:
    """The request's ``priority`` parameter (Triton's; tritonclient's ``priority=``), or 0."""
    if "priority" not in request.parameters:
        return 0
    parameter = request.parameters["priority"]
    kind = parameter.WhichOneof("parameter_choice")
    if kind not in ("uint64_param", "int64_param"):
        raise InvalidArgument(f"the priority parameter must be an integer; received {kind}")
    return int(getattr(parameter, kind))


def infer_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's tensors as arrays, from raw_input_contents or typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; expected one each"
        )
    if raw and any(t.HasField("contents") for t in request.inputs):
        raise InvalidArgument(
            "the request has both raw_input_contents and typed contents; send one or the other"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.datatype not in DATATYPES:
            raise InvalidArgument(
                f"input {clip(tensor.name)!r} has datatype {clip(tensor.datatype)!r}; "
                f"expected one of {sorted(DATATYPES)}"
            )
        dtype, field = DATATYPES[tensor.datatype]
        shape, count = element_count(tensor.name, tensor.shape)
        if raw:
            expected = count * dtype.itemsize
            if len(raw[i]) != expected:
                raise InvalidArgument(
                    f"input {clip(tensor.name)!r}: raw contents have {len(raw[i])} bytes; shape "
                    f"{list(shape)} of {tensor.datatype} needs {expected}"
                )
            array = np.frombuffer(raw[i], dtype=dtype.newbyteorder("<")).reshape(shape)
        else:
            if not field:
                raise InvalidArgument(
                    f"input {clip(tensor.name)!r}: {tensor.datatype} must be sent as "
                    "raw_input_contents"
                )
            values = getattr(tensor.contents, field)
            if len(values) != count:
                raise InvalidArgument(
                    f"input {clip(tensor.name)!r}: {len(values)} values in contents.{field}; "
                    f"shape {list(shape)} needs {count}"
                )
            array = typed_array(tensor.name, values, dtype).reshape(shape)
        if tensor.name in arrays:
            raise InvalidArgument(f"input {clip(tensor.name)!r} appears twice")
        arrays[tensor.name] = array
    return arrays


def typed_array(name: str, values: Any, dtype: np.dtype[Any]) -> np.ndarray:
    """Typed contents as ``dtype``; integers outside its range are refused, not wrapped."""
    if dtype.kind not in "iu":
        return np.asarray(values, dtype=dtype)
    wide = np.asarray(values, dtype=np.uint64 if dtype.kind == "u" else np.int64)
    info = np.iinfo(dtype)
    if wide.size and (wide.min() < info.min or wide.max() > info.max):
        raise InvalidArgument(
            f"input {clip(name)!r}: contents hold {wide.min()}..{wide.max()}, outside "
            f"{dtype.name}'s range {info.min}..{info.max}"
        )
    return wide.astype(dtype)


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters for an error message (requests can be huge)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def infer_response(
    request: pb.ModelInferRequest, model: LoadedModel, outputs: dict[str, np.ndarray]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=str(model.version), id=request.id
    )
    class_counts = {
        o.name: o.parameters["classification"] for o in request.outputs
        if "classification" in o.parameters
    }  # fmt: skip
    for name, array in outputs.items():
        if name in class_counts:
            top = classification(name, array, class_counts[name], model.labels)
            response.outputs.add(name=name, datatype="BYTES", shape=list(top.shape))
            response.raw_output_contents.append(
                b"".join(len(s).to_bytes(4, "little") + s for s in top.ravel())
            )
            continue
        info = next(o for o in model.outputs if o.name == name)
        response.outputs.add(name=name, datatype=info.datatype, shape=list(array.shape))
        response.raw_output_contents.append(
            np.ascontiguousarray(array, "<" + array.dtype.str[1:]).tobytes()
        )
    return response


def classification(
    name: str, array: np.ndarray, parameter: pb.InferParameter, labels: list[str]
) -> np.ndarray:
    """Triton's classification extension: the top k of each row as "value:index[:label]"."""
    k = parameter.int64_param if parameter.WhichOneof("parameter_choice") == "int64_param" else 0
    classes = array.shape[-1] if array.ndim == 2 else 0
    if not classes or not 1 <= k <= classes:
        raise InvalidArgument(
            f"output {clip(name)!r}: classification needs an int64 class count from 1 to "
            f"{classes} on a [batch, classes] output; received {clip(str(parameter).strip())!r} "
            f"for shape {list(array.shape)}"
        )
    rows = []
    for row in array:
        top = np.argsort(-row, kind="stable")[:k]
        rows.append(
            [
                (f"{row[i]:f}:{i}" + (f":{labels[i]}" if i < len(labels) else "")).encode()
                for i in top
            ]
        )
    return np.array(rows, dtype=object)


def refuse_load_parameters(parameters: Collection[str]) -> None:
    """Triton's load parameters (``config`` overrides, ``file:...`` contents), given by name,
    are refused, not ignored: models come from the repository as exported, with their own
    config."""
    if parameters:
        names = ", ".join(repr(clip(k, 40)) for k in sorted(parameters)[:5])
        raise InvalidArgument(
            f"RepositoryModelLoad parameters are not supported (received {names}); this server "
            "loads the model's default version (stable, else the newest) from its repository as "
            "exported"
        )


def tensor_metadata(info: TensorInfo) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=info.name, datatype=info.datatype, shape=list(info.shape)
    )


def model_metadata(model: LoadedModel, versions: list[int]) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=model.name,
        versions=[str(v) for v in versions],
        platform="onnxruntime_onnx",
        inputs=[tensor_metadata(t) for t in model.inputs],
        outputs=[tensor_metadata(t) for t in model.outputs],
    )


def model_config(
    model: LoadedModel, max_queue_delay_us: int, stable: int | None = None
) -> pb.ModelConfigResponse:
    """The model's configuration; ``stable``: the version labelled stable, which the version
    policy then names alone, as config.pbtxt does (``zoo.labels.triton_version_policy``)."""

    def tensors(infos: tuple[TensorInfo, ...], cls: Any) -> list[Any]:
        return [
            cls(name=t.name, data_type=CONFIG_TYPES[t.datatype], dims=t.shape[1:]) for t in infos
        ]

    config = mc.ModelConfig(
        name=model.name,
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=model.max_batch_size,
        input=tensors(model.inputs, mc.ModelInput),
        output=tensors(model.outputs, mc.ModelOutput),
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=max_queue_delay_us),
        version_policy=mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1))
        if stable is None
        else mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=[stable])),
    )
    return pb.ModelConfigResponse(config=config)


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def model_statistics(stats: list[ModelStats]) -> pb.ModelStatisticsResponse:
    response = pb.ModelStatisticsResponse()
    for s in stats:
        entry = response.model_stats.add(
            name=s.name,
            version=str(s.version),
            last_inference=s.last_inference_ms,
            inference_count=s.inference_count,
            execution_count=s.execution_count,
        )
        entry.inference_stats.success.CopyFrom(_duration(s.success))
        entry.inference_stats.fail.CopyFrom(_duration(s.fail))
        entry.inference_stats.queue.CopyFrom(_duration(s.queue))
        entry.inference_stats.compute_infer.CopyFrom(_duration(s.compute_infer))
        for size, batch in sorted(s.batches.items()):
            entry.batch_stats.add(
                batch_size=size,
                compute_infer=pb.StatisticDuration(count=batch.count, ns=batch.compute_ns),
            )
    return response


def repository_index(entries: list[ModelIndexEntry]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=e.name, version=str(e.version), state=e.state, reason=e.reason
            )
            for e in entries
        ]
    )


def zoo_model(
    summary: ModelSummary, evaluation: tuple[int, Evaluation | None] | None = None
) -> zpb.Model:
    """``evaluation``: (version, its test report) for GetModel."""
    spec = summary.spec
    version, report = evaluation or (0, None)
    return zpb.Model(
        name=summary.name,
        catalog_model=summary.catalog_model or "",
        family=spec.family if spec else "",
        versions=list(summary.versions),
        loaded_versions=list(summary.loaded_versions),
        input_shape=[int(d) for d in summary.input_shape],
        preprocessing=spec.preprocessing.value if spec else "",
        num_classes=summary.num_classes,
        parameters=spec.parameters if spec else 0,
        size_mb=(spec.size_mb or 0.0) if spec else 0.0,
        top1_accuracy=(spec.top1_accuracy or 0.0) if spec else 0.0,
        top5_accuracy=(spec.top5_accuracy or 0.0) if spec else 0.0,
        execution_provider=summary.provider,
        labels=[zpb.VersionLabel(label=k, version=v) for k, v in summary.labels],
        evaluation_json=json.dumps(report.to_dict()) if report else "",
        evaluated_version=version,
    )


def model_labels(state: ModelLabels) -> zpb.ModelLabels:
    labels = state.labels
    return zpb.ModelLabels(
        model=state.model,
        labels=[zpb.VersionLabel(label=k, version=v) for k, v in sorted(labels.labels.items())],
        history=[
            zpb.LabelChange(
                label=c.label,
                version=c.version,
                previous=c.previous or 0,
                action=c.action,
                by=c.by,
                peer=c.peer,
                at=c.at,
            )
            for c in labels.history
        ],
        default_version=state.default_version,
    )


def classify_response(model: LoadedModel, results: list[list[Prediction]]) -> zpb.ClassifyResponse:
    return zpb.ClassifyResponse(
        model=model.name,
        version=model.version,
        results=[
            zpb.Classification(
                predictions=[
                    zpb.Prediction(label=p.label, index=p.index, score=p.score) for p in row
                ]
            )
            for row in results
        ],
    )


def dataset(d: Dataset) -> zpb.Dataset:
    return zpb.Dataset(
        id=d.id,
        classes=list(d.classes),
        counts=list(d.counts),
        images=d.images,
        skipped=[zpb.SkippedFile(path=path, reason=reason) for path, reason in d.skipped],
        created_at=d.created_at,
    )


def finetune_params(params: zpb.FineTuneParams) -> dict[str, Any]:
    """Only the fields the caller set: the rest keep their documented defaults."""
    values: dict[str, Any] = {
        f.name: getattr(params, f.name)
        for f in params.DESCRIPTOR.fields
        if f.name != "base_kwargs" and params.HasField(f.name)
    }
    if params.base_kwargs:
        # protobuf carries numbers as doubles; whole ones go back to ints (depth_multiplier)
        values["base_kwargs"] = {
            k: int(v) if float(v).is_integer() else v for k, v in params.base_kwargs.items()
        }
    return values


def search_space(text: str) -> object:
    """A search's space_json, parsed; its shape is the search's to check."""
    try:
        return json.loads(text) if text else None
    except ValueError as e:
        raise InvalidArgument(
            f"space_json must be a JSON object; received {clip(repr(text))} ({e})"
        ) from None


def job(j: Job) -> zpb.Job:
    def stamp(value: Any) -> str:
        return value.isoformat() if value else ""

    return zpb.Job(
        id=j.id,
        kind=j.kind.value,
        state=j.state.value,
        created_at=stamp(j.created_at),
        updated_at=stamp(j.updated_at),
        started_at=stamp(j.started_at),
        finished_at=stamp(j.finished_at),
        attempts=j.attempts,
        worker=j.worker or "",
        error=j.error or "",
        params_json=json.dumps(j.params),
        result_json=json.dumps(j.result) if j.result is not None else "",
    )


def job_event(e: JobEvent) -> zpb.JobEvent:
    return zpb.JobEvent(
        job_id=e.job_id,
        seq=e.seq,
        time=e.time.isoformat(),
        type=e.type.value,
        payload_json=json.dumps(e.payload),
    )
