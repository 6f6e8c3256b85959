"""``make bench-serve``: the gRPC server under load, side by side with in-process ONNX Runtime.

For MobileNetV2 and ResNet50 (exported with ``weights=None``): a server runs in its own
process (``zoo serve``, batching on, then off); a load generator in this process drives it
over loopback with raw gRPC (grpc.aio, v2 ModelInfer with raw uint8 contents) at several
concurrencies; in-process ONNX Runtime on the same file, with its default settings (an
intra-op thread per core) and calls back to back, gives the reference throughput: what a
user calling ONNX Runtime directly on the same cores gets. Everything is reported as ratios
measured in one run.
Writes docs/benchmarks/serve.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

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


async def drive(
    address: str, message: pb.ModelInferRequest, concurrency: int, seconds: float
) -> tuple[int, float, list[float]]:
    """Closed-loop load: ``concurrency`` callers, each sending its next request on reply.

    Returns (images, elapsed seconds, per-request latencies).
    """
    options = [("grpc.max_send_message_length", 2**28), ("grpc.max_receive_message_length", 2**28)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(message)
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                await stub.ModelInfer(message)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) * message.inputs[0].shape[0], elapsed, latencies


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
    totals: dict[str, list[Any]] = {k: [0, 0.0, []] for k in ("ort", *servers)}
    for _ in range(rounds):
        n, t = reference.run_for(batch, seconds / rounds)
        totals["ort"][0] += n
        totals["ort"][1] += t
        for key, address in servers.items():
            n, t, lat = asyncio.run(drive(address, message, concurrency, seconds / rounds))
            totals[key][0] += n
            totals[key][1] += t
            totals[key][2] += lat
    out = {k: summarize(*v) for k, v in totals.items() if k != "ort"}
    out["ort"] = {"images_per_s": totals["ort"][0] / totals["ort"][1]}
    return out


def export_models(repository: Path, names: tuple[str, ...]) -> None:
    from zoo.export import export_model

    for name in names:
        print(f"exporting {name} (weights=None)", file=sys.stderr, flush=True)
        export_model(name, repository, weights=None)


def server_batch_stats(address: str, model: str) -> dict[int, int]:
    with grpc.insecure_channel(address) as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
            pb.ModelStatisticsRequest(name=model)
        )
    return {b.batch_size: b.compute_infer.count for s in stats.model_stats for b in s.batch_stats}


def run(names: tuple[str, ...], seconds: float, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from serving import start_server  # the same start-up the tests use

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repository = Path(tmp) / "repo"
        export_models(repository, names)
        for name in names:
            model = name.lower()
            reference = InProcess(repository / model / "1" / "model.onnx")
            batched = start_server(repository, Path(tmp), "--eager", model)
            unbatched = start_server(repository, Path(tmp), "--eager", model, "--no-batching")
            servers = {"batched": batched.address, "unbatched": unbatched.address}
            row: dict[str, Any] = {}
            try:
                for c in CONCURRENCY:
                    print(f"{name}: concurrency {c}", file=sys.stderr, flush=True)
                    row[c] = interleaved(reference, servers, model, 1, c, seconds, rounds)
                print(f"{name}: batch-8 requests", file=sys.stderr, flush=True)
                row["b8"] = interleaved(
                    reference, {"batched": batched.address}, model, 8, 1, seconds, rounds
                )
                row["batch_sizes"] = server_batch_stats(batched.address, model)
            finally:
                batched.stop()
                unbatched.stop()
            results[name] = row
    return results


def report(results: dict[str, Any], seconds: float, rounds: int) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine()} with `make bench-serve`. "
        "Two servers (`zoo serve`, dynamic batching on and off) run in their own processes; "
        "a load generator in this process drives them over loopback gRPC (grpc.aio, v2 "
        "ModelInfer, raw uint8 224x224 images), closed loop, all on the same cores. "
        f"Each point alternates {rounds} slices of in-process ONNX Runtime (same file, "
        "default settings: an intra-op thread per core, calls back to back), the batching "
        f"server and the unbatched one, {seconds:.0f} s each in all, so the ratios compare "
        "like with like on a noisy machine. The servers run with their defaults: on this "
        "CPU one instance per core, a lone run on every core and overlapping runs on one "
        "core each, and batches of as many rows as fit in 10 ms (2 for MobileNetV2, 1 for "
        "ResNet50, from each model's warm-up). Models exported with `weights=None`.",
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
        lines += [
            "",
            f"Batch-8 requests at concurrency 1: {b8['images_per_s']:.1f} img/s (p50 "
            f"{b8['p50_ms']:.1f} ms) against in-process ORT at batch 8 "
            f"{ort8['images_per_s']:.1f} img/s: ratio "
            f"{b8['images_per_s'] / ort8['images_per_s']:.2f}.",
            "",
            f"Executions by batch size on the batching server (size: count): {sizes}.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--seconds", type=float, default=9.0, help="per point and contender")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/serve.md"))
    args = parser.parse_args()
    results = run(tuple(args.models), args.seconds, args.rounds)
    text = report(results, args.seconds, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
