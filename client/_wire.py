"""What the sync and async clients share: channel set-up and message conversions."""

from __future__ import annotations

import getpass
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from client.types import Classification, LabelChange, ModelInfo, ModelLabels, Prediction
from protos import grpc_service_pb2 as pb
from protos import zoo_service_pb2 as zpb

DEFAULT_MAX_MESSAGE = 256 * 2**20
NUMPY_TO_V2: dict[np.dtype[Any], str] = {
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
}
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {v: k for k, v in NUMPY_TO_V2.items()}

# Calls that are safe to repeat: gRPC retries them on UNAVAILABLE with exponential backoff.
IDEMPOTENT = {
    "inference.GRPCInferenceService": [
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
        "ModelConfig", "ModelStatistics", "RepositoryIndex", "ModelInfer",
    ],
    "zoo.v1.ModelZoo": ["ListModels", "GetModel", "Classify", "ListLabels"],
    "zoo.v1.Datasets": ["ListDatasets", "GetDataset"],
    "zoo.v1.Jobs": ["GetJob", "ListJobs", "GetTrainingLogs"],
}  # fmt: skip
# Never here: the calls that create, delete or cancel (a retried CreateFineTuneJob whose first
# attempt reached the server would start two jobs), RollbackLabel (each call goes back one
# more step), PromoteVersion (repeating it is harmless alone, but a retry that lands after
# someone else's promote would undo theirs) and streams (WatchJob resumes by itself).


def service_config(retries: int) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [
                        {"service": s, "method": m} for s, ms in IDEMPOTENT.items() for m in ms
                    ],
                    "retryPolicy": {
                        "maxAttempts": max(2, retries + 1),
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def channel_args(retries: int, max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1 if retries > 0 else 0),
        ("grpc.service_config", service_config(retries)),
    ]


def open_channel(
    module: Any,
    address: str,
    tls: bool | str | os.PathLike[str] | None,
    retries: int,
    max_message_bytes: int,
) -> Any:
    """A channel from ``module`` (``grpc`` or ``grpc.aio``), plaintext or TLS."""
    args = channel_args(retries, max_message_bytes)
    creds = credentials(tls)
    if creds is None:
        return module.insecure_channel(address, options=args)
    return module.secure_channel(address, creds, options=args)


def credentials(tls: bool | str | os.PathLike[str] | None) -> grpc.ChannelCredentials | None:
    """None/False: plaintext; True: TLS with system roots; a path: TLS trusting that CA file."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    return grpc.ssl_channel_credentials(root_certificates=Path(tls).read_bytes())


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def encode_image(image: Any) -> bytes:
    """Path, bytes, PIL image or uint8 HWC array -> encoded bytes the server decodes."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        from PIL import Image

        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise TypeError(
                f"an image array must be uint8 (height, width, 3); received {image.dtype} "
                f"{image.shape}"
            )
        image = Image.fromarray(image)
    if hasattr(image, "save"):  # a PIL image: PNG is lossless
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        return buffer.getvalue()
    raise TypeError(
        f"cannot send {type(image).__name__} as an image; "
        "expected a path, bytes, a PIL image or a uint8 array"
    )


def image_list(images: Any) -> tuple[list[bytes], bool]:
    """(encoded images, whether a single image was given)."""
    single = not isinstance(images, (list, tuple))
    items: Iterable[Any] = [images] if single else images
    return [encode_image(i) for i in items], single


def model_info(m: zpb.Model) -> ModelInfo:
    return ModelInfo(
        name=m.name,
        catalog_model=m.catalog_model,
        family=m.family,
        versions=tuple(m.versions),
        loaded_versions=tuple(m.loaded_versions),
        input_shape=tuple(m.input_shape),
        preprocessing=m.preprocessing,
        num_classes=m.num_classes,
        parameters=m.parameters,
        size_mb=m.size_mb,
        top1_accuracy=m.top1_accuracy,
        top5_accuracy=m.top5_accuracy,
        execution_provider=m.execution_provider,
        labels={entry.label: entry.version for entry in m.labels},
        evaluation=json.loads(m.evaluation_json) if m.evaluation_json else None,
        evaluated_version=m.evaluated_version,
    )


def model_labels(m: zpb.ModelLabels) -> ModelLabels:
    return ModelLabels(
        model=m.model,
        labels={entry.label: entry.version for entry in m.labels},
        default_version=m.default_version,
        history=tuple(
            LabelChange(c.label, c.version, c.previous or None, c.action, c.by, c.peer, c.at)
            for c in m.history
        ),
    )


def who(by: str | None) -> str:
    """The identity a label change claims: ``by``, else this machine's user name."""
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        return ""


def promote_request(
    model: str, version: int, label: str, by: str | None
) -> zpb.PromoteVersionRequest:
    return zpb.PromoteVersionRequest(model=model, version=version, label=label, by=who(by))


def rollback_request(model: str, label: str, by: str | None) -> zpb.RollbackLabelRequest:
    return zpb.RollbackLabelRequest(model=model, label=label, by=who(by))


def classify_request(
    model: str, images: list[bytes], top_k: int, version: int | str | None
) -> zpb.ClassifyRequest:
    """``version``: a number, a label such as "stable", or None for the default version."""
    if isinstance(version, str):
        return zpb.ClassifyRequest(model=model, version_label=version, images=images, top_k=top_k)
    return zpb.ClassifyRequest(model=model, version=version or 0, images=images, top_k=top_k)


def classifications(response: zpb.ClassifyResponse) -> list[Classification]:
    return [
        Classification(
            tuple(Prediction(p.label, p.index, p.score) for p in result.predictions),
            response.model,
            response.version,
        )
        for result in response.results
    ]


def infer_request(
    model: str,
    array: np.ndarray,
    input_name: str,
    version: int | str | None,
    outputs: Sequence[str] | None,
) -> pb.ModelInferRequest:
    array = np.ascontiguousarray(array)
    if array.dtype not in NUMPY_TO_V2:
        raise TypeError(f"unsupported array dtype {array.dtype}; use one of {list(NUMPY_TO_V2)}")
    request = pb.ModelInferRequest(model_name=model, model_version=str(version or ""))
    request.inputs.add(name=input_name, datatype=NUMPY_TO_V2[array.dtype], shape=array.shape)
    request.raw_input_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


def infer_result(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    return {
        tensor.name: np.frombuffer(raw, dtype=V2_TO_NUMPY[tensor.datatype].newbyteorder("<"))
        .reshape(tuple(tensor.shape))
        .copy()
        for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
