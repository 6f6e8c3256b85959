"""The protocol in protos/ is current and wire-compatible with Triton's (as tritonclient ships it).

Each side's modules are imported in a fresh interpreter of their own and this process only
compares what those report, so neither can lend the other a definition (our modules live in
a private descriptor pool, ``protos.pool``, and could share a process with tritonclient's).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = ("protos.grpc_service_pb2", "protos.model_config_pb2")
TRITON = ("tritonclient.grpc.service_pb2", "tritonclient.grpc.model_config_pb2")

# Prints every message (nested and map entries included), enum and service method of the
# given generated modules as JSON, keyed by full name.
DUMP = r"""
import importlib, json, sys
from google.protobuf import descriptor_pb2

F = descriptor_pb2.FieldDescriptorProto
out = {"files": {}, "messages": {}, "enums": {}, "methods": {}}

def enum(e, prefix):
    out["enums"][prefix + e.name] = {v.name: v.number for v in e.value}

def message(m, prefix, file):
    full = prefix + m.name
    fields = {}
    for f in m.field:
        oneof = m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
        fields[f.name] = [
            f.number, F.Type.Name(f.type), F.Label.Name(f.label), f.type_name.lstrip("."),
            oneof, f.proto3_optional,
        ]
    out["messages"][full] = {"file": file, "map_entry": m.options.map_entry, "fields": fields}
    for n in m.nested_type:
        message(n, full + ".", file)
    for e in m.enum_type:
        enum(e, full + ".")

for name in sys.argv[1:]:
    fdp = descriptor_pb2.FileDescriptorProto()
    importlib.import_module(name).DESCRIPTOR.CopyToProto(fdp)
    file = fdp.name.rsplit("/", 1)[-1]
    out["files"][file] = [fdp.syntax, fdp.package]
    prefix = fdp.package + "."
    for m in fdp.message_type:
        message(m, prefix, file)
    for e in fdp.enum_type:
        enum(e, prefix)
    for s in fdp.service:
        for r in s.method:
            out["methods"][f"{prefix}{s.name}/{r.name}"] = [
                r.input_type.lstrip("."), r.output_type.lstrip("."),
                r.client_streaming, r.server_streaming,
            ]
print(json.dumps(out))
"""

SERVED = {
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
}

# The part of Triton's ModelConfig our server and Triton's clients rely on.
REQUIRED_CONFIG = {
    "inference.ModelConfig": {
        "name",
        "platform",
        "backend",
        "runtime",
        "version_policy",
        "max_batch_size",
        "input",
        "output",
        "instance_group",
        "default_model_filename",
        "dynamic_batching",
        "parameters",
        "model_transaction_policy",
    },
    "inference.ModelInput": {
        "name",
        "data_type",
        "format",
        "dims",
        "reshape",
        "is_shape_tensor",
        "allow_ragged_batch",
        "optional",
    },
    "inference.ModelOutput": {
        "name",
        "data_type",
        "dims",
        "reshape",
        "label_filename",
        "is_shape_tensor",
    },
    "inference.ModelVersionPolicy": {"latest", "all", "specific"},
    "inference.ModelDynamicBatching": {
        "preferred_batch_size",
        "max_queue_delay_microseconds",
        "preserve_ordering",
    },
    "inference.ModelInstanceGroup": {"name", "kind", "count", "gpus"},
    "inference.ModelParameter": {"string_value"},
}


def run_python(code: str, *args: str, stdin: bytes = b"") -> bytes:
    """Run ``code`` in a fresh interpreter at the repository root; return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def dump(modules: tuple[str, ...]) -> dict[str, Any]:
    return json.loads(run_python(DUMP, *modules))


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    return dump(OURS)


@pytest.fixture(scope="module")
def triton() -> dict[str, Any]:
    return dump(TRITON)


def test_generated_modules_are_current() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "protos.generate", "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout


def test_generated_modules_import_as_package_protos() -> None:
    source = (REPO / "protos" / "grpc_service_pb2_grpc.py").read_text()
    assert "from protos import grpc_service_pb2 " in source
    source = (REPO / "protos" / "grpc_service_pb2.py").read_text()
    assert "from protos import model_config_pb2 " in source


def test_files_are_proto3_in_package_inference(ours: dict[str, Any]) -> None:
    assert ours["files"] == {
        "grpc_service.proto": ["proto3", "inference"],
        "model_config.proto": ["proto3", "inference"],
    }


def test_every_field_matches_triton(ours: dict[str, Any], triton: dict[str, Any]) -> None:
    problems = []
    for name, message in ours["messages"].items():
        theirs = triton["messages"].get(name)
        if theirs is None:
            problems.append(f"{name}: not in Triton's protocol")
            continue
        if message["map_entry"] != theirs["map_entry"]:
            problems.append(f"{name}: map entry {message['map_entry']} != {theirs['map_entry']}")
        for field, spec in message["fields"].items():
            expected = theirs["fields"].get(field)
            if expected != spec:
                problems.append(f"{name}.{field}: ours {spec}, Triton {expected}")
    assert not problems, "\n".join(problems)


def test_service_messages_are_exactly_tritons(ours: dict[str, Any], triton: dict[str, Any]) -> None:
    service = {k: v for k, v in ours["messages"].items() if v["file"] == "grpc_service.proto"}
    assert len(service) > 30
    for name, message in service.items():
        theirs = triton["messages"][name]
        assert theirs["file"] == "grpc_service.proto", name
        assert message["fields"] == theirs["fields"], name


def test_enums_are_exactly_tritons(ours: dict[str, Any], triton: dict[str, Any]) -> None:
    assert "inference.DataType" in ours["enums"]
    for name, values in ours["enums"].items():
        assert values == triton["enums"].get(name), name


def test_methods_match_tritons(ours: dict[str, Any], triton: dict[str, Any]) -> None:
    prefix = "inference.GRPCInferenceService/"
    assert set(ours["methods"]) == {prefix + name for name in SERVED}
    for name, signature in ours["methods"].items():
        assert signature == triton["methods"][name], name
    assert ours["methods"][prefix + "ModelStreamInfer"] == [
        "inference.ModelInferRequest",
        "inference.ModelStreamInferResponse",
        True,
        True,
    ]


def test_model_config_has_the_fields_we_rely_on(ours: dict[str, Any]) -> None:
    for name, fields in REQUIRED_CONFIG.items():
        assert fields <= set(ours["messages"][name]["fields"]), name
    field = ours["messages"]["inference.ModelConfig"]["fields"]["dynamic_batching"]
    assert field[4] == "scheduling_choice"


# Byte-level round trips: one interpreter builds a message with one side's classes and
# writes its bytes; another parses them with the other side's classes and reports values.

PARAMS = r"""
def fill(params):
    params["flag"].bool_param = True
    params["count"].int64_param = -(2**40)
    params["label"].string_param = "tabby"
    params["ratio"].double_param = 0.125
    params["big"].uint64_param = 2**63 + 5

def read(params):
    return {k: [v.WhichOneof("parameter_choice"), getattr(v, v.WhichOneof("parameter_choice"))]
            for k, v in sorted(params.items())}
"""

EXPECTED_PARAMS = {
    "big": ["uint64_param", 2**63 + 5],
    "count": ["int64_param", -(2**40)],
    "flag": ["bool_param", True],
    "label": ["string_param", "tabby"],
    "ratio": ["double_param", 0.125],
}

HEADER = "import importlib, json, sys\npb = importlib.import_module(sys.argv[1])\n" + PARAMS

WRITE_REQUEST = (
    HEADER
    + r"""
r = pb.ModelInferRequest(model_name="resnet50", model_version="3", id="req-7")
fill(r.parameters)
image = r.inputs.add(name="input_1", datatype="FP32", shape=[2, 224, 224, 3])
image.parameters["binary_data_size"].int64_param = 12
words = r.inputs.add(name="words", datatype="BYTES", shape=[2])
words.contents.bytes_contents.extend([b"cat", b"\x00dog"])
ids = r.inputs.add(name="ids", datatype="INT64", shape=[3])
ids.contents.int64_contents.extend([7, -8, 2**40])
out = r.outputs.add(name="predictions")
out.parameters["classification"].int64_param = 5
r.raw_input_contents.extend([b"\x01\x02\x03", b"", b"\xff"])
sys.stdout.buffer.write(r.SerializeToString())
"""
)

READ_REQUEST = (
    HEADER
    + r"""
r = pb.ModelInferRequest.FromString(sys.stdin.buffer.read())
print(json.dumps({
    "model_name": r.model_name, "model_version": r.model_version, "id": r.id,
    "parameters": read(r.parameters),
    "inputs": [
        {"name": i.name, "datatype": i.datatype, "shape": list(i.shape),
         "parameters": read(i.parameters),
         "bytes": [b.hex() for b in i.contents.bytes_contents],
         "int64": list(i.contents.int64_contents)}
        for i in r.inputs
    ],
    "outputs": [{"name": o.name, "parameters": read(o.parameters)} for o in r.outputs],
    "raw": [b.hex() for b in r.raw_input_contents],
}))
"""
)

EXPECTED_REQUEST = {
    "model_name": "resnet50",
    "model_version": "3",
    "id": "req-7",
    "parameters": EXPECTED_PARAMS,
    "inputs": [
        {
            "name": "input_1",
            "datatype": "FP32",
            "shape": [2, 224, 224, 3],
            "parameters": {"binary_data_size": ["int64_param", 12]},
            "bytes": [],
            "int64": [],
        },
        {
            "name": "words",
            "datatype": "BYTES",
            "shape": [2],
            "parameters": {},
            "bytes": ["636174", "00646f67"],
            "int64": [],
        },
        {
            "name": "ids",
            "datatype": "INT64",
            "shape": [3],
            "parameters": {},
            "bytes": [],
            "int64": [7, -8, 2**40],
        },
    ],
    "outputs": [{"name": "predictions", "parameters": {"classification": ["int64_param", 5]}}],
    "raw": ["010203", "", "ff"],
}

WRITE_RESPONSE = (
    HEADER
    + r"""
r = pb.ModelInferResponse(model_name="resnet50", model_version="3", id="req-7")
fill(r.parameters)
probs = r.outputs.add(name="predictions", datatype="FP32", shape=[2, 1000])
probs.parameters["sequence_end"].bool_param = False
top = r.outputs.add(name="top", datatype="FP64", shape=[2])
top.contents.fp64_contents.extend([0.5, -1.25])
top.contents.fp32_contents.extend([1.5])
r.raw_output_contents.extend([b"\x00\x00\x80\x3f", b"\x10"])
sys.stdout.buffer.write(r.SerializeToString())
"""
)

READ_RESPONSE = (
    HEADER
    + r"""
r = pb.ModelInferResponse.FromString(sys.stdin.buffer.read())
print(json.dumps({
    "model_name": r.model_name, "model_version": r.model_version, "id": r.id,
    "parameters": read(r.parameters),
    "outputs": [
        {"name": o.name, "datatype": o.datatype, "shape": list(o.shape),
         "parameters": read(o.parameters), "fp64": list(o.contents.fp64_contents),
         "fp32": list(o.contents.fp32_contents)}
        for o in r.outputs
    ],
    "raw": [b.hex() for b in r.raw_output_contents],
}))
"""
)

EXPECTED_RESPONSE = {
    "model_name": "resnet50",
    "model_version": "3",
    "id": "req-7",
    "parameters": EXPECTED_PARAMS,
    "outputs": [
        {
            "name": "predictions",
            "datatype": "FP32",
            "shape": [2, 1000],
            "parameters": {"sequence_end": ["bool_param", False]},
            "fp64": [],
            "fp32": [],
        },
        {
            "name": "top",
            "datatype": "FP64",
            "shape": [2],
            "parameters": {},
            "fp64": [0.5, -1.25],
            "fp32": [1.5],
        },
    ],
    "raw": ["0000803f", "10"],
}

WRITE_LOAD = r"""
import importlib, sys
pb = importlib.import_module(sys.argv[1])
r = pb.RepositoryModelLoadRequest(repository_name="main", model_name="resnet50")
r.parameters["config"].string_param = '{"max_batch_size": 8}'
r.parameters["file:1/model.onnx"].bytes_param = b"\x08\x07onnx"
r.parameters["poll"].bool_param = True
r.parameters["version"].int64_param = 4
sys.stdout.buffer.write(r.SerializeToString())
"""

READ_LOAD = r"""
import importlib, json, sys
pb = importlib.import_module(sys.argv[1])
r = pb.RepositoryModelLoadRequest.FromString(sys.stdin.buffer.read())
params = {}
for k, v in sorted(r.parameters.items()):
    kind = v.WhichOneof("parameter_choice")
    value = getattr(v, kind)
    params[k] = [kind, value.hex() if isinstance(value, bytes) else value]
print(json.dumps({"repository_name": r.repository_name, "model_name": r.model_name,
                  "parameters": params}))
"""

EXPECTED_LOAD = {
    "repository_name": "main",
    "model_name": "resnet50",
    "parameters": {
        "config": ["string_param", '{"max_batch_size": 8}'],
        "file:1/model.onnx": ["bytes_param", "08076f6e6e78"],
        "poll": ["bool_param", True],
        "version": ["int64_param", 4],
    },
}

DIRECTIONS = pytest.mark.parametrize(
    ("writer", "reader"),
    [(OURS[0], TRITON[0]), (TRITON[0], OURS[0])],
    ids=["ours-to-triton", "triton-to-ours"],
)


def round_trip(write: str, read: str, writer: str, reader: str) -> dict[str, Any]:
    data = run_python(write, writer)
    assert data
    return json.loads(run_python(read, reader, stdin=data))


@DIRECTIONS
def test_infer_request_round_trip(writer: str, reader: str) -> None:
    assert round_trip(WRITE_REQUEST, READ_REQUEST, writer, reader) == EXPECTED_REQUEST


@DIRECTIONS
def test_infer_response_round_trip(writer: str, reader: str) -> None:
    assert round_trip(WRITE_RESPONSE, READ_RESPONSE, writer, reader) == EXPECTED_RESPONSE


@DIRECTIONS
def test_repository_model_load_round_trip(writer: str, reader: str) -> None:
    assert round_trip(WRITE_LOAD, READ_LOAD, writer, reader) == EXPECTED_LOAD
