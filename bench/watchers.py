"""``make bench-watchers``: do 50 WatchJob streams on a slow database move inference?

One ``zoo serve`` (SQLite, no job workers) holds MobileNetV2 and 50 queued jobs; every job
store session in the server is slowed by a deliberate delay (``--delay-ms``, 50 ms by default,
added through a ``sitecustomize`` module on the server's path: the product has no such switch).
Two clients send batch-1 ModelInfer requests back to back while, slice by slice in a rotating
order:

- ``quiet``: nothing else happens;
- ``watched``: 50 WatchJob streams wait, one per job (in another process);
- ``busy``: the same 50 streams, and another process adds an event to a random job 10 times
  a second, so streams keep waking and reading through the slow store.

The server's CPU time per slice comes from ``/proc/<pid>/stat``. Writes
docs/benchmarks/watchers.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench import start_server
from bench.export import machine
from bench.requests import cpu_seconds
from bench.serve import request, summarize
from protos import grpc_service_pb2_grpc as pb_grpc

WATCHERS = 50
SITECUSTOMIZE = """
import os, time
delay = float(os.environ.get("ZOO_BENCH_STORE_DELAY_MS", "0")) / 1000
if delay:
    import contextlib
    from zoo.jobs import store
    _session = store.JobStore._session

    @contextlib.contextmanager
    def slow_session(self):
        time.sleep(delay)
        with _session(self) as session:
            yield session

    store.JobStore._session = slow_session
"""


def watch_all(address: str, job_ids: list[str], opened: Any, stop: Any) -> None:
    """A process holding one WatchJob stream per job until ``stop`` is set."""
    from client.aio import AsyncZooClient

    async def main() -> None:
        async with AsyncZooClient(address) as zoo:

            async def one(job_id: str) -> None:
                async for _ in zoo.watch_job(job_id):
                    pass

            tasks = [asyncio.create_task(one(j)) for j in job_ids]
            await asyncio.sleep(1.0)
            opened.set()
            while not stop.is_set():
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def add_events(database: str, job_ids: list[str], per_second: float, stop: Any) -> None:
    from zoo.jobs.records import EventType
    from zoo.jobs.store import JobStore

    store = JobStore(database)
    rng = random.Random(0)
    while not stop.is_set():
        store.add_event(rng.choice(job_ids), EventType.LOG, {"message": "tick"})
        time.sleep(1 / per_second)


async def infer_for(address: str, seconds: float, clients: int) -> list[float]:
    message = request("mobilenetv2", 1, 224)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(message)
        end = time.perf_counter() + seconds

        async def caller() -> None:
            while (started := time.perf_counter()) < end:
                await stub.ModelInfer(message)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(caller() for _ in range(clients)))
    return latencies


def run(seconds: float, rounds: int, delay_ms: float, clients: int) -> dict[str, Any]:
    from client import ZooClient
    from zoo.export.exporter import export_model

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repository = work / "repo"
        print("exporting MobileNetV2 (weights=None)", file=sys.stderr, flush=True)
        export_model("MobileNetV2", repository, weights=None)
        (work / "site").mkdir()
        (work / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        data = work / "data"
        env = {
            "PYTHONPATH": os.pathsep.join([str(work / "site"), os.environ.get("PYTHONPATH", "")]),
            "ZOO_BENCH_STORE_DELAY_MS": str(delay_ms),
            "ZOO_WORKERS": "0",
            "ZOO_DATA_DIR": str(data),
        }
        server = start_server(repository, work, "--eager", "mobilenetv2", env=env)
        try:
            with ZooClient(server.address) as zoo:
                job_ids = [zoo.export("MobileNetV2", weights="none").id for _ in range(WATCHERS)]
            started = time.perf_counter()
            with ZooClient(server.address) as zoo:
                zoo.jobs()
            store_call_s = time.perf_counter() - started
            stop = ctx.Event()
            opened = ctx.Event()
            watcher = ctx.Process(target=watch_all, args=(server.address, job_ids, opened, stop))
            watcher.start()
            assert opened.wait(120), "the watchers did not open their streams"
            stop_writer = ctx.Event()
            phases = ["quiet", "watched", "busy"]
            results: dict[str, list[Any]] = {p: [[], 0.0, 0.0] for p in phases}
            writer = None
            for i in range(rounds):
                for phase in phases[i % 3 :] + phases[: i % 3]:
                    print(f"round {i + 1}: {phase}", file=sys.stderr, flush=True)
                    if phase == "quiet":
                        stop.set()
                        watcher.join(30)
                    elif not watcher.is_alive():
                        stop, opened = ctx.Event(), ctx.Event()
                        watcher = ctx.Process(
                            target=watch_all, args=(server.address, job_ids, opened, stop)
                        )
                        watcher.start()
                        assert opened.wait(120)
                    if phase == "busy":
                        stop_writer.clear()
                        writer = ctx.Process(
                            target=add_events,
                            args=(str(data / "jobs.db"), job_ids, 10.0, stop_writer),
                        )
                        writer.start()
                    cpu = cpu_seconds(server.process.pid)
                    latencies = asyncio.run(infer_for(server.address, seconds, clients))
                    results[phase][1] += cpu_seconds(server.process.pid) - cpu
                    results[phase][2] += seconds
                    results[phase][0] += latencies
                    if writer is not None:
                        stop_writer.set()
                        writer.join(30)
                        writer = None
            stop.set()
            watcher.join(30)
        finally:
            server.stop()
    out: dict[str, Any] = {"store_call_s": store_call_s}
    for phase, (latencies, cpu, wall) in results.items():
        out[phase] = {
            **summarize(len(latencies), wall, latencies),
            "server_cpu_per_s": cpu / wall,
            "requests": len(latencies),
        }
    return out


def report(results: dict[str, Any], seconds: float, rounds: int, delay: float, clients: int) -> str:
    quiet = results["quiet"]
    lines = [
        "# Job watchers and inference",
        "",
        f"Measured {dt.date.today()} on {machine()} with `make bench-watchers`.",
        "",
        "One `zoo serve` (SQLite, no job workers) holds MobileNetV2 and 50 queued jobs; every "
        "job store session in the server is slowed by a deliberate delay (a `sitecustomize` "
        "module on the server's path: the product has no such switch). Two clients send "
        "batch-1 ModelInfer requests back to back while, slice by slice in a rotating order: "
        "`quiet`: nothing else happens; `watched`: 50 WatchJob streams wait, one per job (in "
        "another process); `busy`: the same streams, and another process adds an event to a "
        "random job 10 times a second, so streams keep waking and reading through the slow "
        "store. Server CPU from /proc/<pid>/stat.",
        "",
        f"Each phase ran {rounds} slices of {seconds:.0f} s ({clients} clients, MobileNetV2 "
        f"weights=None, 224x224 uint8); every store session was delayed {delay:.0f} ms "
        f"(one ListJobs took {1000 * results['store_call_s']:.0f} ms).",
        "",
        "| Phase | Requests | img/s | p50 ms | p99 ms | p99 / quiet | Server CPU s per s |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in ("quiet", "watched", "busy"):
        r = results[phase]
        lines.append(
            f"| {phase} | {r['requests']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['p99_ms'] / quiet['p99_ms']:.2f} | "
            f"{r['server_cpu_per_s']:.2f} |"
        )
    lines += [
        "",
        "Before this design every stream read the store twice every 0.5 s: 50 streams made 200 "
        "store sessions a second, which at this delay needs 10 s of thread time per second, "
        "more than the server's 4 jobs-io threads have. Now the streams wait on the hub: on "
        "SQLite one query per second for all of them, on PostgreSQL none (LISTEN/NOTIFY; "
        "tests/test_jobs.py counts the statements for both).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per slice")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/watchers.md"))
    args = parser.parse_args()
    results = run(args.seconds, args.rounds, args.delay_ms, args.clients)
    text = report(results, args.seconds, args.rounds, args.delay_ms, args.clients)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
