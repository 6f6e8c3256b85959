"""``make bench-overload``: offered load beyond what the server can compute, with client deadlines.

For MobileNetV2 and ResNet50 (``weights=None``), one batching ``zoo serve`` per model with a
queue timeout: first its saturated throughput (closed loop, 64 clients so that batches fill,
batch 1, the same driver as ``make bench-serve``), then open-loop arrivals at 1x, 2x and 4x
that rate (evenly spaced, each request sent on time whether or not earlier ones were
answered) for a fixed window, every request with a client deadline. Per point:

- goodput: answers received within their deadline, per second of the window, and its ratio
  to the saturated throughput (target at 4x: at least 0.95);
- what happened to the rest: refused at once (UNAVAILABLE, queue full), expired in the queue
  (the server's ``zoo_inference_expired``), or past the deadline at the client;
- computed after the deadline: rows the server computed minus answers in time (target 0);
- p50/p99 latency of admitted requests (answered OK; target p99 at most 2x the queue timeout);
- CPU seconds of the server and of this load generator (a Python client is not free: at 4x
  the generator competes with the server for the same two cores, which the ratio includes).

Writes the "Overload" section of docs/benchmarks/serve.md (the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import resource
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench import start_server
from bench.export import machine
from bench.requests import cpu_seconds
from bench.serve import OVERLOAD_HEADING, drive, exported, replace_section, request
from protos import grpc_service_pb2 as pb

MODELS = ("MobileNetV2", "ResNet50")
FACTORS = (1, 2, 4)
SATURATING = 64  # closed-loop clients for the saturated throughput
# Per model: the server's queue timeout (ms) and the clients' deadline (s), a few batches' time.
SETTINGS = {"MobileNetV2": (500, 1.0), "ResNet50": (2000, 4.0)}
HEADING = OVERLOAD_HEADING


COUNTERS = ("zoo_inference_rows", "zoo_inference_expired", "zoo_inference_rejected")


def scrape(metrics_port: int, model: str) -> dict[str, float]:
    """Each of ``COUNTERS`` for ``model``, summed over its samples, from one /metrics read."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    totals = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        for name in COUNTERS:
            if line.startswith((name + "_total{", name + "{")) and f'model="{model}"' in line:
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


async def open_loop(
    address: str, message: pb.ModelInferRequest, rate: float, seconds: float, deadline: float
) -> dict[str, Any]:
    """Requests sent every 1/rate s for ``seconds``, each with ``deadline``; the outcomes."""
    outcomes: list[tuple[str, float]] = []
    body = message.SerializeToString()
    async with grpc.aio.insecure_channel(address) as channel:
        # Bytes in and out: the generator shares the 2 cores with the server, so it neither
        # serializes the 150 KB request each time nor parses the answers (only their status).
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=None,
        )
        pb.ModelInferResponse.FromString(await infer(body))  # a real answer, once

        async def one() -> None:
            started = time.perf_counter()
            try:
                await infer(body, timeout=deadline)
                code = "OK"
            except grpc.aio.AioRpcError as e:
                code = e.code().name
            outcomes.append((code, time.perf_counter() - started))

        tasks = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        sent_in = time.perf_counter() - start
        await asyncio.gather(*tasks)
    ok = [latency for code, latency in outcomes if code == "OK"]
    in_time = [latency for latency in ok if latency <= deadline]
    codes: dict[str, int] = {}
    for code, _ in outcomes:
        codes[code] = codes.get(code, 0) + 1
    return {
        "sent": n,
        "sent_in_s": sent_in,
        "offered_per_s": n / sent_in,
        "in_time": len(in_time),
        "goodput": len(in_time) / seconds,
        "codes": codes,
        "p50_ms": float(np.percentile(ok, 50)) * 1000 if ok else float("nan"),
        "p99_ms": float(np.percentile(ok, 99)) * 1000 if ok else float("nan"),
    }


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(name: str, repository: Path, workdir: Path, seconds: float) -> dict[str, Any]:
    model = name.lower()
    timeout_ms, deadline = SETTINGS[name]
    message = request(model, 1, 224)
    # What the server can compute: closed loop on a server without a queue timeout.
    server = start_server(repository, workdir, "--eager", model, env={"ZOO_QUEUE_TIMEOUT_MS": "0"})
    try:
        print(f"{name}: saturated throughput ({SATURATING} clients)", file=sys.stderr)
        images, elapsed, _ = asyncio.run(drive(server.address, message, SATURATING, seconds))
        saturated = images / elapsed
    finally:
        server.stop()
    env = {"ZOO_QUEUE_TIMEOUT_MS": str(timeout_ms)}
    server = start_server(repository, workdir, "--eager", model, env=env)
    try:
        assert server.metrics_port is not None
        points = {}
        for factor in FACTORS:
            rate = factor * saturated
            print(f"{name}: {factor}x = {rate:.0f} requests/s offered", file=sys.stderr)
            before = scrape(server.metrics_port, model)
            server_cpu0, client_cpu0 = cpu_seconds(server.process.pid), client_cpu()
            point = asyncio.run(open_loop(server.address, message, rate, seconds, deadline))
            point["server_cpu_s"] = cpu_seconds(server.process.pid) - server_cpu0
            point["client_cpu_s"] = client_cpu() - client_cpu0
            after = scrape(server.metrics_port, model)
            point["computed"] = after["zoo_inference_rows"] - before["zoo_inference_rows"]
            point["expired"] = after["zoo_inference_expired"] - before["zoo_inference_expired"]
            point["rejected"] = after["zoo_inference_rejected"] - before["zoo_inference_rejected"]
            point["computed_late"] = max(0, int(point["computed"]) - point["in_time"] - 1)
            points[factor] = point
            time.sleep(deadline)  # let the queue empty
    finally:
        server.stop()
    return {
        "saturated": saturated,
        "points": points,
        "timeout_ms": timeout_ms,
        "deadline": deadline,
    }


def section(results: dict[str, Any], seconds: float) -> str:
    lines = [
        HEADING,
        "",
        f"`make bench-overload`, {dt.date.today().isoformat()}, {machine()}. One batching server "
        "per model with a queue timeout, batch-1 requests with a client deadline (both in the "
        "saturated row), sent open-loop (evenly spaced, on time whatever the answers) "
        f"for {seconds:.0f} s at 1x, 2x and 4x the throughput the same server (without the "
        f"queue timeout) reached with {SATURATING} closed-loop clients. Goodput counts answers "
        "received within their deadline. Computed late: rows the server computed minus answers "
        "in time (the warm-up request aside). The load generator is Python (grpc.aio) on the "
        "same 2 cores: its CPU is shown beside the server's.",
        "",
        "| model | offered | sent/s | goodput/s | goodput / saturated | refused (queue full) "
        "| expired in queue | other errors | computed late | p50 ms | p99 ms | server CPU s "
        "| client CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        saturated = result["saturated"]
        lines.append(
            f"| {name} | saturated: {saturated:.1f}/s; queue timeout {result['timeout_ms']} ms, "
            f"deadline {result['deadline'] * 1000:.0f} ms | | | | | | | | | | | |"
        )
        for factor, p in result["points"].items():
            other = p["sent"] - p["in_time"] - int(p["rejected"]) - int(p["expired"])
            lines.append(
                f"| {name} | {factor}x | {p['offered_per_s']:.1f} | {p['goodput']:.1f} "
                f"| {p['goodput'] / saturated:.2f} | {int(p['rejected'])} | {int(p['expired'])} "
                f"| {max(other, 0)} | {p['computed_late']} | {p['p50_ms']:.0f} | {p['p99_ms']:.0f} "
                f"| {p['server_cpu_s']:.1f} | {p['client_cpu_s']:.1f} |"
            )
    codes = {
        f"{name} {factor}x": p["codes"]
        for name, result in results.items()
        for factor, p in result["points"].items()
    }
    lines += ["", "Status codes the clients saw: " + "; ".join(
        f"{k}: {', '.join(f'{c} {n}' for c, n in sorted(v.items()))}" for k, v in codes.items()
    ), ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--seconds", type=float, default=10.0, help="per point")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/serve.md"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = {}
    with exported(tuple(args.models)) as (repository, work):
        for name in args.models:
            results[name] = measure(name, repository, work, args.seconds)
    new = section(results, args.seconds)
    old = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(replace_section(old, new, HEADING))
    print(new)


if __name__ == "__main__":
    main()
