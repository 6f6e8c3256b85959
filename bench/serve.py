"""``make bench-serve``: the gRPC server under load, side by side with in-process ONNX Runtime.

For MobileNetV2 and ResNet50 (exported with ``weights=None``): a server runs in its own
process (``zoo serve``, batching on, then off); a load generator in this process drives it
over loopback with raw gRPC (grpc.aio, v2 ModelInfer with raw uint8 contents) at several
concurrencies; in-process ONNX Runtime on the same file, with its default settings (an
intra-op thread per core) and calls back to back, gives the reference throughput: what a
user calling ONNX Runtime directly on the same cores gets. Everything is reported as ratios
measured in one run. Batch-8 requests also go to the batching server over REST (the v2
protocol with binary tensors, aiohttp as the client) beside gRPC, slices interleaved; the
REST section alone is refreshed with ``--rest-only``.
Writes docs/benchmarks/serve.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench import start_server
from bench.export import machine
from protos import grpc_service_pb2 as pb
from protos import grpc_service_pb2_grpc as pb_grpc

MODELS = ("MobileNetV2", "ResNet50")
CONCURRENCY = (1, 4, 16, 64)


class InProcess:
    """Plain ONNX Runtime on the same file, default settings, calls back to back."""

    def __init__(self, model_file: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        self.size = int(self.session.get_inputs()[0].shape[1])

    def run_for(self, batch: int, seconds: float) -> tuple[int, float]:
        """(images, elapsed seconds) of back-to-back calls for about ``seconds``."""
        x = np.random.default_rng(0).integers(0, 256, (batch, self.size, self.size, 3), np.uint8)
        self.session.run(None, {"image": x})
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self.session.run(None, {"image": x})
            done += batch
        return done, time.perf_counter() - started


def request(model: str, batch: int, size: int) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="image", datatype="UINT8", shape=[batch, size, size, 3])
    pixels = np.random.default_rng(batch).integers(0, 256, (batch, size, size, 3), np.uint8)
    message.raw_input_contents.append(pixels.tobytes())
    return message


async def closed_loop(
    send: Callable[[], Awaitable[Any]], concurrency: int, seconds: float
) -> tuple[int, float, list[float]]:
    """Closed-loop load: ``concurrency`` callers, each sending its next request on reply.

    Recording starts once every caller has had its first answer (the start-up burst is
    over) and lasts ``seconds``; returns (requests answered in that window, the time from
    its start to the last of those answers, their latencies).
    """
    latencies: list[float] = []
    warm = 0
    window = [float("inf"), float("inf")]  # recording start and end
    last = [0.0]  # the last answer recorded

    async def caller() -> None:
        nonlocal warm
        first = True
        while True:
            started = time.perf_counter()
            if started >= window[1]:
                return
            await send()
            done = time.perf_counter()
            if window[0] <= done <= window[1]:
                latencies.append(done - started)
                last[0] = max(last[0], done)
            if first:
                first, warm = False, warm + 1
                if warm == concurrency:
                    window[:] = [done, done + seconds]

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    # Up to the last answer, not the window's end: with a few long requests (ResNet50 at
    # batch 8: 139 ms) the tail of the window after it would count as idle time.
    elapsed = last[0] - window[0] if latencies else seconds
    return len(latencies), elapsed, latencies


async def drive(
    address: str, message: pb.ModelInferRequest, concurrency: int, seconds: float
) -> tuple[int, float, list[float]]:
    """``closed_loop`` over gRPC (grpc.aio, one channel), or over REST when ``address`` is
    an http:// URL (aiohttp, one connection per caller; v2 infer with the same raw bytes as a
    binary tensor, outputs asked for as binary): (images, elapsed seconds, latencies)."""
    batch = message.inputs[0].shape[0]
    if address.startswith("http://"):
        return await drive_rest(address, message, concurrency, seconds)
    options = [("grpc.max_send_message_length", 2**28), ("grpc.max_receive_message_length", 2**28)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(message)
        n, elapsed, latencies = await closed_loop(
            lambda: stub.ModelInfer(message), concurrency, seconds
        )
    return n * batch, elapsed, latencies


async def drive_rest(
    url: str, message: pb.ModelInferRequest, concurrency: int, seconds: float
) -> tuple[int, float, list[float]]:
    import aiohttp

    tensor = message.inputs[0]
    raw = message.raw_input_contents[0]
    binary = {"binary_data_size": len(raw)}
    shape = list(tensor.shape)
    inputs = [{"name": tensor.name, "datatype": tensor.datatype, "shape": shape}]
    inputs[0]["parameters"] = binary
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    body = header + raw
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    target = f"{url}/v2/models/{message.model_name}/infer"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send() -> None:
            async with session.post(target, data=body, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"REST infer answered {answer.status}")

        await send()
        n, elapsed, latencies = await closed_loop(send, concurrency, seconds)
    return n * tensor.shape[0], elapsed, latencies


def summarize(images: int, seconds: float, latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "images_per_s": images / seconds,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def interleaved(
    reference: InProcess,
    servers: dict[str, str],
    model: str,
    batch: int,
    concurrency: int,
    seconds: float,
    rounds: int,
) -> dict[str, dict[str, float]]:
    """Alternate short slices of in-process ORT and each server, so all see the same noise."""
    message = request(model, batch, reference.size)
    contenders = ["ort", *servers]
    totals: dict[str, list[Any]] = {k: [0, 0.0, []] for k in contenders}
    for i in range(rounds):
        # each contender takes each place in the order equally often: the one after
        # in-process ORT measurably starts on cold caches
        for key in contenders[i % len(contenders) :] + contenders[: i % len(contenders)]:
            if key == "ort":
                n, t = reference.run_for(batch, seconds / rounds)
                lat: list[float] = []
            else:
                n, t, lat = asyncio.run(drive(servers[key], message, concurrency, seconds / rounds))
            totals[key][0] += n
            totals[key][1] += t
            totals[key][2] += lat
    out = {k: summarize(*v) for k, v in totals.items() if k != "ort"}
    out["ort"] = {"images_per_s": totals["ort"][0] / totals["ort"][1]}
    return out


@contextmanager
def exported(names: tuple[str, ...]) -> Iterator[tuple[Path, Path]]:
    """(repository, work folder): a temporary repository with ``names`` exported
    (``weights=None``), removed afterwards; or, with ``ZOO_BENCH_REPOSITORY`` set, that
    directory, kept, where a model already exported is not exported again (benchmarks run
    one after another then share their exports)."""
    from zoo.export.exporter import export_model

    kept = os.environ.get("ZOO_BENCH_REPOSITORY")
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(kept) if kept else Path(tmp) / "repo"
        for name in names:
            if kept and (repository / name.lower()).is_dir():
                continue
            print(f"exporting {name} (weights=None)", file=sys.stderr, flush=True)
            export_model(name, repository, weights=None)
        yield repository, Path(tmp)


def server_batch_stats(address: str, model: str) -> dict[int, int]:
    with grpc.insecure_channel(address) as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
            pb.ModelStatisticsRequest(name=model)
        )
    return {b.batch_size: b.compute_infer.count for s in stats.model_stats for b in s.batch_stats}


REST_CONCURRENCY = (1, 4)


def rest_points(
    reference: InProcess, address: str, http_url: str, model: str, seconds: float, rounds: int
) -> dict[int, Any]:
    """Batch-8 requests to one server over gRPC and over REST (binary tensors), interleaved."""
    contenders = {"batched": address, "rest": http_url}
    points = {}
    for c in REST_CONCURRENCY:
        print(f"{model}: batch-8 requests over gRPC and REST, {c} client(s)", file=sys.stderr)
        points[c] = interleaved(reference, contenders, model, 8, c, seconds, rounds)
    return points


def run_rest(names: tuple[str, ...], seconds: float, rounds: int) -> dict[str, Any]:
    """Only the REST points (``--rest-only``): one batching server per model."""
    results: dict[str, Any] = {}
    with exported(names) as (repository, work):
        for name in names:
            model = name.lower()
            reference = InProcess(repository / model / "1" / "model.onnx")
            server = start_server(repository, work, "--eager", model)
            try:
                points = rest_points(
                    reference, server.address, server.http_url, model, seconds, rounds
                )
                results[name] = {"rest": points}
            finally:
                server.stop()
    return results


def run(names: tuple[str, ...], seconds: float, rounds: int) -> dict[str, Any]:
    from bench.memory import rss

    results: dict[str, Any] = {}
    with exported(names) as (repository, work):
        empty = start_server(work / "empty", work)
        try:
            empty_rss = rss(empty.process.pid)
        finally:
            empty.stop()
        for name in names:
            model = name.lower()
            reference = InProcess(repository / model / "1" / "model.onnx")
            batched = start_server(repository, work, "--eager", model)
            unbatched = start_server(repository, work, "--eager", model, "--no-batching")
            # batches of up to 8 whatever the auto rule says, at 16 clients: what it costs
            forced = start_server(
                repository, work, "--eager", model, env={"ZOO_MAX_BATCH_SIZE": "8"}
            )
            servers = {"batched": batched.address, "unbatched": unbatched.address}
            row: dict[Any, Any] = {}
            try:
                for c in CONCURRENCY:
                    print(f"{name}: concurrency {c}", file=sys.stderr, flush=True)
                    contenders = {**servers, "forced8": forced.address} if c == 16 else servers
                    row[c] = interleaved(reference, contenders, model, 1, c, seconds, rounds)
                print(f"{name}: batch-8 requests", file=sys.stderr, flush=True)
                row["b8"] = interleaved(
                    reference, {"batched": batched.address}, model, 8, 1, seconds, rounds
                )
                row["rest"] = rest_points(
                    reference, batched.address, batched.http_url, model, seconds, rounds
                )
                row["batch_sizes"] = server_batch_stats(batched.address, model)
                # what the loaded model holds after the run: the server less an empty one
                row["rss"] = rss(batched.process.pid) - empty_rss
                row["onnx_bytes"] = (repository / model / "1" / "model.onnx").stat().st_size
                row["forced_sizes"] = server_batch_stats(forced.address, model)
            finally:
                for server in (batched, unbatched, forced):
                    server.stop()
            results[name] = row
    return results


def report(results: dict[str, Any], seconds: float, rounds: int) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine()} with `make bench-serve`. "
        "(Server CPU per request, measured with a native load generator, is in "
        "[requests.md](requests.md).) "
        "Two servers (`zoo serve`, dynamic batching on and off; at 16 clients a third with "
        "batches forced up to 8 rows) run in their own processes; "
        "a load generator in this process drives them over loopback gRPC (grpc.aio, v2 "
        "ModelInfer, raw uint8 224x224 images), closed loop, all on the same cores. "
        f"Each point alternates {rounds} slices of in-process ONNX Runtime (same file, "
        "default settings: an intra-op thread per core, calls back to back), the batching "
        f"server and the unbatched one, {seconds:.0f} s each in all, in an order that "
        "rotates every slice, so the ratios compare like with like on a noisy machine; "
        "each slice records from the moment every client has had its first answer. The servers run "
        "with their defaults: on this CPU two ONNX Runtime sessions per model version on one "
        "copy of the weights, an all-core one for a lone request and a single-thread one "
        "that one instance thread per core runs for overlapping requests, "
        "and batches of as many rows as fit in 4 ms (timed at each model's warm-up). Models "
        "exported with `weights=None`.",
        "",
    ]
    if all(set(row["batch_sizes"]) == {1} for row in results.values()):
        lines += [
            "Every execution of the batching servers held one row: the auto limit was 1 for "
            "these models, so the batching and the unbatched servers ran the same way, and "
            "the gaps between their columns are this machine's noise. The line with batches "
            "forced up to 8 rows shows what batching costs here.",
            "",
        ]
    for name, row in results.items():
        lines += [
            f"## {name}",
            "",
            "| Concurrency (batch-1) | In-process ORT img/s | Batching img/s | p50 ms | p99 ms "
            "| No batching img/s | p50 ms | p99 ms | Batching / no batching "
            "| Batching / in-process |",
            "|" + "---|" * 10,
        ]
        for c in CONCURRENCY:
            on, off, ort = row[c]["batched"], row[c]["unbatched"], row[c]["ort"]
            lines.append(
                f"| {c} | {ort['images_per_s']:.1f} | {on['images_per_s']:.1f} "
                f"| {on['p50_ms']:.1f} | {on['p99_ms']:.1f} | {off['images_per_s']:.1f} "
                f"| {off['p50_ms']:.1f} | {off['p99_ms']:.1f} "
                f"| {on['images_per_s'] / off['images_per_s']:.2f} "
                f"| {on['images_per_s'] / ort['images_per_s']:.2f} |"
            )
        b8, ort8 = row["b8"]["batched"], row["b8"]["ort"]
        sizes = ", ".join(f"{k}: {v}" for k, v in sorted(row["batch_sizes"].items()))
        forced = row[16]["forced8"]
        forced_sizes = ", ".join(f"{k}: {v}" for k, v in sorted(row["forced_sizes"].items()))
        lines += [
            "",
            f"RSS of the loaded model after the run (the batching server less one with an "
            f"empty repository): {row['rss'] / 2**20:.0f} MiB for a "
            f"{row['onnx_bytes'] / 2**20:.0f} MiB ONNX file ({row['rss'] / row['onnx_bytes']:.2f}"
            " x its size).",
            "",
            f"Batch-8 requests at concurrency 1: {b8['images_per_s']:.1f} img/s (p50 "
            f"{b8['p50_ms']:.1f} ms) against in-process ORT at batch 8 "
            f"{ort8['images_per_s']:.1f} img/s: ratio "
            f"{b8['images_per_s'] / ort8['images_per_s']:.2f}.",
            "",
            f"Executions by batch size on the batching server (size: count): {sizes}.",
            "",
            f"Batches of up to 8 rows (`ZOO_MAX_BATCH_SIZE=8`) at 16 clients, measured in "
            f"the same slices: {forced['images_per_s']:.1f} img/s "
            f"({forced['images_per_s'] / row[16]['unbatched']['images_per_s']:.2f} x no "
            f"batching), p50 {forced['p50_ms']:.1f} ms, p99 {forced['p99_ms']:.1f} ms; "
            f"executions by batch size: {forced_sizes}.",
            "",
        ]
    return "\n".join(lines)


REST_HEADING = "## REST against gRPC"
OVERLOAD_HEADING = "## Overload"  # written by bench.overload
SESSIONS_HEADING = "## Sessions per version"  # written by bench.sessions


def rest_section(results: dict[str, Any], seconds: float, rounds: int) -> str:
    lines = [
        REST_HEADING,
        "",
        f"Measured {dt.date.today().isoformat()} on {machine()}, a machine shared with other "
        "work while it ran, so single figures are noisy; the ratios come from slices "
        "interleaved in time and are the figures to read. One batching server per model "
        "(defaults) answers batch-8 requests (8 raw uint8 images) over gRPC (grpc.aio, "
        "ModelInfer with raw contents) and over REST (aiohttp, a connection per client, v2 "
        "infer with the binary-tensor extension, outputs in binary), on the same port "
        f"pair of one process; {rounds} slices of each, {seconds:.0f} s each in all, the "
        "order rotating every slice. Target: REST at least 0.85 x gRPC.",
        "",
        "| Model | Clients | gRPC img/s | p50 ms | REST img/s | p50 ms | p99 ms | REST / gRPC |",
        "|" + "---|" * 8,
    ]
    for name, row in results.items():
        for c, point in row["rest"].items():
            grpc_, rest = point["batched"], point["rest"]
            lines.append(
                f"| {name} | {c} | {grpc_['images_per_s']:.1f} | {grpc_['p50_ms']:.1f} "
                f"| {rest['images_per_s']:.1f} | {rest['p50_ms']:.1f} | {rest['p99_ms']:.1f} "
                f"| {rest['images_per_s'] / grpc_['images_per_s']:.2f} |"
            )
    return "\n".join([*lines, ""])


def replace_section(text: str, section: str, heading: str = REST_HEADING) -> str:
    """``text`` (serve.md) with its section under ``heading`` replaced by ``section`` (or
    appended); the other sections are kept."""
    before, found, after = text.partition(heading)
    rest = after.split("\n## ", 1)[1] if found and "\n## " in after else ""
    return before.rstrip("\n") + "\n\n" + section + ("\n## " + rest if rest else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--seconds", type=float, default=9.0, help="per point and contender")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/serve.md"))
    parser.add_argument(
        "--rest-only",
        action="store_true",
        help="measure only REST against gRPC and replace that section of --out",
    )
    args = parser.parse_args()
    if args.rest_only:
        results = run_rest(tuple(args.models), args.seconds, args.rounds)
        section = rest_section(results, args.seconds, args.rounds)
        old = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(replace_section(old, section))
        print(section)
        return
    results = run(tuple(args.models), args.seconds, args.rounds)
    text = (
        report(results, args.seconds, args.rounds)
        + "\n"
        + rest_section(results, args.seconds, args.rounds)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # the overload section is bench.overload's (`make bench-overload`), the sessions section
    # bench.sessions': kept as they were
    previous = args.out.read_text() if args.out.exists() else ""
    for heading in (OVERLOAD_HEADING, SESSIONS_HEADING):
        _, found, kept = previous.partition(heading)
        if found:
            text = replace_section(text, heading + kept.split("\n## ", 1)[0], heading)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
