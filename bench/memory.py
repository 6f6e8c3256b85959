"""``make bench-memory``: what a served model costs in memory, against ONNX Runtime alone.

The seed models are exported (``weights=None``), then measured three ways, each in a fresh
process, RSS read from ``/proc/<pid>/status`` after one inference per model:

- ``zoo serve --eager '*'`` holding all of them (and answering one request each);
- one default ONNX Runtime session per model in one Python process: the reference;
- the same server with ``ZOO_MEMORY_BUDGET_MB`` unset, per model: RSS after loading it
  alone, less the RSS of the server with an empty repository.

Writes docs/benchmarks/memory.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench import start_server
from bench.export import machine
from protos import grpc_service_pb2 as pb
from protos import grpc_service_pb2_grpc as pb_grpc

MIB = 2**20
REFERENCE = """
import sys, numpy as np, onnxruntime as ort
sessions = []
for path in sys.argv[1:]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    s.run(None, {i.name: np.zeros([1, *i.shape[1:]], np.uint8)})
    sessions.append(s)
for line in open("/proc/self/status"):
    if line.startswith(("VmRSS", "VmHWM")):
        print(line.split()[0].rstrip(":"), int(line.split()[1]) * 1024)
import ctypes
ctypes.CDLL("libc.so.6").malloc_trim(0)  # as zoo serve does after each load
for line in open("/proc/self/status"):
    if line.startswith("VmRSS"):
        print("Trimmed", int(line.split()[1]) * 1024)
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def infer_once(address: str, model: str, size: int) -> None:
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="image", datatype="UINT8", shape=[1, size, size, 3])
    message.raw_input_contents.append(np.zeros((1, size, size, 3), np.uint8).tobytes())
    with grpc.insecure_channel(address) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=120)


def run(names: list[str]) -> dict[str, Any]:
    from bench.serve import exported
    from zoo.catalog import get_spec

    out: dict[str, Any] = {"models": {}}
    with exported(tuple(names)) as (repository, work):
        files = {n: repository / n.lower() / "1" / "model.onnx" for n in names}
        sizes = {n: get_spec(n).input_size for n in names}
        empty = start_server(work / "empty", work)
        try:
            out["empty_server"] = rss(empty.process.pid)
        finally:
            empty.stop()
        for name in names:  # each alone
            server = start_server(repository, work, "--eager", name.lower())
            try:
                infer_once(server.address, name.lower(), sizes[name])
                out["models"][name] = {
                    "onnx": files[name].stat().st_size,
                    "alone": rss(server.process.pid) - out["empty_server"],
                }
            finally:
                server.stop()
        server = start_server(repository, work, "--eager", "*")
        try:
            for name in names:
                infer_once(server.address, name.lower(), sizes[name])
            out["all_server"] = rss(server.process.pid)
        finally:
            server.stop()
        reference = subprocess.run(
            [sys.executable, "-c", REFERENCE, *map(str, files.values())],
            capture_output=True,
            text=True,
            check=True,
        )
        figures = dict(line.split() for line in reference.stdout.splitlines())
        out["all_reference"] = int(figures["VmRSS"])
        out["all_reference_trimmed"] = int(figures["Trimmed"])
        out["onnx_total"] = sum(f.stat().st_size for f in files.values())
    return out


def report(r: dict[str, Any]) -> str:
    ratio = r["all_server"] / r["all_reference"]
    lines = [
        "# Memory per served model",
        "",
        f"Measured {dt.date.today()} on {machine()} with `make bench-memory`.",
        "",
        "The seed models exported with `weights=None`; RSS after one inference per model, each "
        "way in a fresh process. The reference is one default ONNX Runtime session per model in "
        "one Python process (ONNX Runtime's own cost, nothing of ours).",
        "",
        f"All {len(r['models'])} models, ONNX files {r['onnx_total'] / MIB:,.0f} MiB: "
        f"`zoo serve --eager '*'` {r['all_server'] / MIB:,.0f} MiB, the reference "
        f"{r['all_reference'] / MIB:,.0f} MiB: **{ratio:.2f} x** (target: at most 1.15 x); "
        f"against the reference after glibc's `malloc_trim` (which the server calls after each "
        f"load), {r['all_reference_trimmed'] / MIB:,.0f} MiB: "
        f"**{r['all_server'] / r['all_reference_trimmed']:.2f} x**. "
        f"A server with an empty repository: {r['empty_server'] / MIB:,.0f} MiB.",
        "",
        "| Model | ONNX MiB | Server RSS for it alone, MiB (less the empty server) | / ONNX |",
        "|---|---|---|---|",
    ]
    for name, m in sorted(r["models"].items()):
        lines.append(
            f"| {name} | {m['onnx'] / MIB:,.1f} | {m['alone'] / MIB:,.0f} | "
            f"{m['alone'] / m['onnx']:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    from zoo.catalog import SEED_MODELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(SEED_MODELS))
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/memory.md"))
    args = parser.parse_args()
    text = report(run(args.models))
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
