"""The v2 REST inference body, both ways: JSON tensors and Triton's binary-tensor extension.

A request is a JSON header, optionally followed by the tensors' bytes; the header's length is
then in the ``Inference-Header-Content-Length`` header and each binary input says its size
in ``parameters.binary_data_size``, in the order of ``inputs``. Answers use the same layout
for outputs asked for with ``binary_data`` (or ``binary_data_output`` for all). Pure
functions: bytes in, arrays out, and back; checks say what was received and what is valid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from protos import grpc_service_pb2 as pb
from server.convert import DATATYPES, classification, clip, element_count, typed_array
from zoo.errors import InvalidArgument
from zoo.serving.runtime import LoadedModel

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classes: int  # the classification extension's class count; 0: the tensor itself


@dataclass(frozen=True)
class InferRequest:
    id: str
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]  # empty: every output
    binary_output: bool  # the default for outputs not named (binary_data_output)
    timeout_us: int  # the request's "timeout" parameter; 0: none
    priority: int  # the request's "priority" parameter (Triton's); 0: the default level


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a JSON object; received {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidArgument(f"{where} must be a JSON array; received {type(value).__name__}")
    return value


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{where}.parameters.{key} must be true or false; received {value!r}")
    return value


def _whole(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{where} must be a whole number >= 0; received {clip(repr(value))}")
    return value


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON header as a dict and the binary part after it (empty without one)."""
    size = len(body)
    if header_length is None:
        split = size
    elif header_length.isascii() and header_length.isdigit() and int(header_length) <= size:
        split = int(header_length)
    else:
        raise InvalidArgument(
            f"{HEADER_LENGTH} must be a number of bytes from 0 to the body's {size}; "
            f"received {clip(header_length, 40)!r}"
        )
    try:
        header = json.loads(body[:split])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidArgument(
            f"the request's JSON ({split} bytes) does not parse: {e}"
            + ("" if header_length else f"; binary tensors need the {HEADER_LENGTH} header")
        ) from None
    return _object(header, "the request"), memoryview(body)[split:]


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    header, binary = split_body(body, header_length)
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument(f"id must be a string; received {clip(repr(request_id))}")
    parameters = _object(header.get("parameters", {}), "parameters")
    timeout = parameters.get("timeout", 0)
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(_list(header.get("inputs"), "inputs")):
        tensor = _object(item, f"inputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InvalidArgument(f"inputs[{i}].name must be a string; received {name!r}")
        if name in inputs:
            raise InvalidArgument(f"input {clip(name)!r} appears twice")
        array, used = _input(tensor, name, binary[offset:])
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise InvalidArgument(
            f"the body has {len(binary)} bytes after its JSON header; the inputs' "
            f"binary_data_size add up to {offset}"
        )
    outputs = []
    for i, item in enumerate(_list(header.get("outputs", []), "outputs")):
        output = _object(item, f"outputs[{i}]")
        name = output.get("name")
        if not isinstance(name, str):
            raise InvalidArgument(f"outputs[{i}].name must be a string; received {name!r}")
        options = _object(output.get("parameters", {}), f"outputs[{i}].parameters")
        classes = _whole(options.get("classification", 0), f"output {clip(name)!r} classification")
        outputs.append(
            RequestedOutput(name, _flag(options, "binary_data", f"outputs[{i}]"), classes)
        )
    return InferRequest(
        request_id,
        inputs,
        outputs,
        _flag(parameters, "binary_data_output", "the request"),
        _whole(timeout, "parameters.timeout (microseconds)"),
        _whole(parameters.get("priority", 0), "parameters.priority"),
    )


def _input(tensor: dict[str, Any], name: str, binary: memoryview) -> tuple[np.ndarray, int]:
    """One input's array and the number of binary bytes it took."""
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidArgument(
            f"input {clip(name)!r} has datatype {clip(repr(datatype))}; expected one of "
            f"{sorted(DATATYPES)}"
        )
    dtype = DATATYPES[datatype][0]
    dims = _list(tensor.get("shape"), f"input {clip(name)!r} shape")
    if any(isinstance(d, bool) or not isinstance(d, int) for d in dims):
        raise InvalidArgument(
            f"input {clip(name)!r} shape must be whole numbers; received {clip(str(dims))}"
        )
    shape, count = element_count(name, dims)
    parameters = _object(tensor.get("parameters", {}), f"input {clip(name)!r} parameters")
    if "binary_data_size" in parameters:
        size = _whole(parameters["binary_data_size"], f"input {clip(name)!r} binary_data_size")
        expected = count * dtype.itemsize
        if size != expected:
            raise InvalidArgument(
                f"input {clip(name)!r}: binary_data_size is {size}; shape {list(shape)} of "
                f"{datatype} needs {expected} bytes"
            )
        if size > len(binary):
            raise InvalidArgument(
                f"input {clip(name)!r}: binary_data_size is {size} but only {len(binary)} "
                "bytes of the body are left for it"
            )
        if "data" in tensor:
            raise InvalidArgument(f"input {clip(name)!r} has both data and binary_data_size")
        array = np.frombuffer(binary[:size], dtype=dtype.newbyteorder("<")).reshape(shape)
        return array, size
    if "data" not in tensor:
        raise InvalidArgument(f"input {clip(name)!r} has neither data nor binary_data_size")
    return _json_array(name, tensor["data"], datatype, shape, count), 0


KINDS = {"b": "true or false", "i": "whole numbers", "u": "whole numbers", "f": "numbers"}


def _json_array(
    name: str, data: Any, datatype: str, shape: tuple[int, ...], count: int
) -> np.ndarray:
    """JSON ``data`` (flat or nested) as an array of ``datatype``; no silent conversions:
    strings, nulls and ragged rows are refused, and so are integers out of range."""
    dtype = DATATYPES[datatype][0]
    try:
        values = np.asarray(data)
    except ValueError:
        raise InvalidArgument(
            f"input {clip(name)!r}: data has rows of different lengths; send a flat array of "
            f"{count} values or one nested as shape {list(shape)}"
        ) from None
    allowed = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[dtype.kind]
    if values.dtype.kind not in allowed and values.size:
        raise InvalidArgument(
            f"input {clip(name)!r} is {datatype}: its data must be {KINDS[dtype.kind]}; "
            f"received {clip(json.dumps(data)[:100])}"
        )
    if values.size != count:
        raise InvalidArgument(
            f"input {clip(name)!r}: {values.size} values in data; shape {list(shape)} needs {count}"
        )
    if dtype.kind in "iu":
        return typed_array(name, values.ravel(), dtype).reshape(shape)
    return values.astype(dtype).reshape(shape)


def infer_response(
    request: InferRequest, model: LoadedModel, outputs: dict[str, np.ndarray]
) -> tuple[bytes, list[bytes]]:
    """The answer's JSON header and the binary outputs that follow it, in order."""
    wanted = {o.name: o for o in request.outputs}
    entries, binaries = [], []
    for name, array in outputs.items():
        asked = wanted.get(name)
        binary = asked.binary if asked else request.binary_output
        if asked and asked.classes:
            top = classification(
                name, array, pb.InferParameter(int64_param=asked.classes), model.labels
            )
            entry: dict[str, Any] = {"name": name, "datatype": "BYTES", "shape": list(top.shape)}
            if binary:
                data = b"".join(len(s).to_bytes(4, "little") + s for s in top.ravel())
            else:
                entry["data"] = [s.decode() for s in top.ravel()]
        else:
            info = next(o for o in model.outputs if o.name == name)
            entry = {"name": name, "datatype": info.datatype, "shape": list(array.shape)}
            if binary:
                data = np.ascontiguousarray(array, "<" + array.dtype.str[1:]).tobytes()
            else:
                entry["data"] = array.ravel().tolist()
        if binary:
            entry["parameters"] = {"binary_data_size": len(data)}
            binaries.append(data)
        entries.append(entry)
    header = {
        "model_name": model.name,
        "model_version": str(model.version),
        "outputs": entries,
    }
    if request.id:
        header["id"] = request.id
    return json.dumps(header, separators=(",", ":")).encode(), binaries
