"""``make bench-requests``: server CPU per request, measured with a native load generator.

A Python load generator costs more CPU than the server it drives, so on 2 cores it would
measure itself. Here ``h2load`` (nghttp2's HTTP/2 benchmark, in C) sends a pre-encoded gRPC
ModelInfer (a 5-byte length prefix and the serialized request, ``content-type:
application/grpc``, ``te: trailers``) and the server's CPU time is read from
``/proc/<pid>/stat`` before and after. Four servers answer the same bytes:

- a bare ``grpc.aio`` server returning a fixed, pre-serialized ModelInferResponse: the
  floor, what gRPC Python itself costs per call;
- a minimal servicer that reads the input into numpy and builds the response message:
  the least a Python v2 server does per call;
- ``zoo serve`` with a no-op model (MobileNetV2's input and outputs, nothing computed):
  the server's own cost per request;
- ``zoo serve`` with MobileNetV2 (``weights=None``), batch 1 and 8: the cost next to real work.

Writes docs/benchmarks/requests.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import start_server
from bench.export import machine
from protos import grpc_service_pb2 as pb

SIZE = 224
SERVICER = "minimal grpc.aio servicer"
TICK = os.sysconf("SC_CLK_TCK")


def noop_model(path: Path) -> None:
    """uint8 [N,224,224,3] -> logits, probabilities [N,1000] of zeros: nothing computed."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["image"], ["shape"], start=0, end=1),
        helper.make_node("Concat", ["shape", "classes"], ["out_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["out_shape"], ["logits"]),
        helper.make_node("Identity", ["logits"], ["probabilities"]),
    ]
    graph = helper.make_graph(
        nodes,
        "noop",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1000])
            for n in ("logits", "probabilities")
        ],
        [helper.make_tensor("classes", TensorProto.INT64, [1], [1000])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def repository(root: Path) -> None:
    from zoo.export.exporter import export_model
    from zoo.export.triton_config import render_config
    from zoo.manifest import TensorSpec

    noop_model(root / "noop" / "1" / "model.onnx")
    config = render_config(
        "noop",
        [TensorSpec("image", "UINT8", (-1, SIZE, SIZE, 3))],
        [TensorSpec(n, "FP32", (-1, 1000)) for n in ("logits", "probabilities")],
        32,
    )
    (root / "noop" / "config.pbtxt").write_text(config)
    export_model("MobileNetV2", root, weights=None)


def payload(model: str, batch: int, path: Path) -> Path:
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="image", datatype="UINT8", shape=[batch, SIZE, SIZE, 3])
    pixels = np.random.default_rng(batch).integers(0, 256, (batch, SIZE, SIZE, 3), np.uint8)
    message.raw_input_contents.append(pixels.tobytes())
    body = message.SerializeToString()
    path.write_bytes(b"\x00" + len(body).to_bytes(4, "big") + body)
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def h2load(port: int, body: Path, requests: int, clients: int) -> dict[str, float]:
    done = subprocess.run(
        ["h2load", "-n", str(requests), "-c", str(clients), "-m", "1", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    out = done.stdout
    succeeded = int(re.search(r"(\d+) succeeded", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    return {"succeeded": succeeded, "rps": rate}


BARE = r"""
import asyncio, sys
import grpc
import numpy as np
from protos import grpc_service_pb2 as pb

async def main():
    body = pb.ModelInferResponse(model_name="noop", model_version="1")
    for name in ("logits", "probabilities"):
        body.outputs.add(name=name, datatype="FP32", shape=[int(sys.argv[1]), 1000])
        body.raw_output_contents.append(bytes(4000 * int(sys.argv[1])))
    fixed = body.SerializeToString()

    async def infer(request, context):
        return fixed

    async def build(request, context):  # the least a real servicer does per call
        image = np.frombuffer(request.raw_input_contents[0], np.uint8)
        rows = image.reshape(tuple(request.inputs[0].shape)).shape[0]
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id)
        for name in ("logits", "probabilities"):
            response.outputs.add(name=name, datatype="FP32", shape=[rows, 1000])
            response.raw_output_contents.append(np.zeros((rows, 1000), np.float32).tobytes())
        return response

    minimal = sys.argv[2] == "servicer"
    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            build if minimal else infer, request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelInferResponse.SerializeToString if minimal else None)})
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 << 20)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


class Bare:
    def __init__(self, batch: int, kind: str = "fixed") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", BARE, str(batch), kind], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.pid = self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def measure(pid: int, port: int, body: Path, requests: int, clients: int) -> dict[str, float]:
    h2load(port, body, max(50, requests // 10), clients)  # warm-up
    before, started = cpu_seconds(pid), time.perf_counter()
    result = h2load(port, body, requests, clients)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - before
    return {**result, "cpu_ms_per_request": 1000 * cpu / max(1, result["succeeded"]),
            "elapsed_s": elapsed}  # fmt: skip


def run(requests: int, clients: int, rounds: int) -> dict[str, Any]:
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repository(repo)
        bodies = {
            (model, batch): payload(model, batch, Path(tmp) / f"{model}-{batch}.bin")
            for model, batch in (("noop", 1), ("noop", 8), ("mobilenetv2", 1), ("mobilenetv2", 8))
        }
        zoo = start_server(
            repo, Path(tmp), "--eager", "*", "--metrics-port", "-1",
            env={"ZOO_WORKERS": "0", "ZOO_DATA_DIR": str(Path(tmp) / "data")},
        )  # fmt: skip
        try:
            for _ in range(rounds):  # interleaved, so drift hits every contender alike
                for batch in (1, 8):
                    for kind, label in (("fixed", "bare grpc.aio"), ("servicer", SERVICER)):
                        bare = Bare(batch, kind)
                        try:
                            rows.setdefault(f"{label}, batch {batch}", []).append(measure(
                                bare.pid, bare.port, bodies["noop", batch], requests, clients
                            ))  # fmt: skip
                        finally:
                            bare.stop()
                for (model, batch), body in bodies.items():
                    n = requests if model == "noop" else max(200, requests // 10)
                    rows.setdefault(f"zoo serve, {model}, batch {batch}", []).append(
                        measure(zoo.process.pid, zoo.port, body, n, clients)
                    )
        finally:
            zoo.stop()
    return rows


def report(rows: dict[str, Any], requests: int, clients: int, rounds: int) -> str:
    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    def floor_of(label: str) -> dict[int, float]:
        return {b: median([r["cpu_ms_per_request"] for r in rows[f"{label}, batch {b}"]])
                for b in (1, 8)}  # fmt: skip

    floor, least = floor_of("bare grpc.aio"), floor_of(SERVICER)
    lines = [
        "# Server CPU per request",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine()} with `make bench-requests`: "
        f"h2load, {clients} connections, one stream each, {requests} requests per no-op run "
        f"(a tenth for MobileNetV2), {rounds} interleaved rounds, median shown. CPU is the "
        "server process's user + system time from /proc over the run, divided by the requests "
        "answered; the load generator's own CPU is not in it.",
        "",
        "| Server, model, batch | CPU ms / request | x bare grpc.aio | x minimal servicer "
        "| requests/s |",
        "|---|---|---|---|---|",
    ]
    for key, results in rows.items():
        cpu = median([r["cpu_ms_per_request"] for r in results])
        rps = median([r["rps"] for r in results])
        batch = int(key.rsplit(" ", 1)[1])
        lines.append(
            f"| {key} | {cpu:.3f} | {cpu / floor[batch]:.2f} | {cpu / least[batch]:.2f} "
            f"| {rps:.0f} |"
        )
    lines += [
        "",
        "The bare server answers a fixed, pre-serialized response: the floor of gRPC Python "
        "per call on this machine. The minimal servicer is the least any Python v2 server "
        "does per call: it reads the input tensor into numpy and builds and serializes a "
        "response of the same outputs (no checks, no queue, no metrics). The no-op model "
        "has MobileNetV2's input and outputs and computes nothing, so its row is the zoo "
        "server's own cost per request: parsing and checking the request, the queue and "
        "instance thread, building the response.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if shutil.which("h2load") is None:
        sys.exit("bench-requests needs h2load (Debian: apt-get install nghttp2-client)")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="docs/benchmarks/requests.md")
    args = parser.parse_args()
    rows = run(args.requests, args.clients, args.rounds)
    text = report(rows, args.requests, args.clients, args.rounds)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
