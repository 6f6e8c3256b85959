"""``python -m bench.sessions``: what a CPU-served version's sessions cost, design by design.

For MobileNetV2 and ResNet50 (exported with ``weights=None``), side by side:

- ``default``: one ONNX Runtime session with default settings (the reference);
- ``pair``: the old design, an all-core session and a single-thread one, each from the file;
- ``single``: one single-thread session (lone runs on one core);
- ``shared``: ``zoo.serving.sessions.open_shared``, the all-core and the single-thread
  session on one copy of the weights (what ``zoo serve`` opens on a multi-core CPU);
- ``shared-no-prepack``: the same with ONNX Runtime's pre-packing off, so that the dense
  layers' weights are shared too (answers then differ from in-process ONNX Runtime's in the
  last bits).

Memory: each design in a fresh process, one inference per session, RSS less the RSS of the
process before loading (ONNX Runtime imported); "as allocated" and after glibc's
``malloc_trim`` (which ``zoo serve`` calls after each load and unload), and the peak (VmHWM).
Speed: every design in one process, slices interleaved with the order rotating, so that
ratios compare like with like on a noisy machine: batch-1 latency of a lone request (on the
session a lone request uses) and throughput of overlapping requests (one thread per core on
the session overlapping runs use), each against in-process ONNX Runtime (default session,
calls back to back). Prints a Markdown section; ``--out`` replaces that section of
docs/benchmarks/serve.md (``make bench-serve`` keeps it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.export import machine
from bench.serve import SESSIONS_HEADING, exported, replace_section

MODELS = ("MobileNetV2", "ResNet50")
DESIGNS = ("default", "pair", "single", "shared", "shared-no-prepack")
MIB = 2**20


def status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            out[line.split()[0].rstrip(":")] = int(line.split()[1]) * 1024
    return out


def open_design(design: str, path: Path, cores: int) -> list[Any]:
    """The sessions of ``design``: the lone-run one first, the overlapping-run one last."""
    import onnxruntime as ort

    from zoo.serving.sessions import SharedWeights

    def plain(threads: int) -> Any:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    if design == "default":
        return [plain(0)]
    if design == "pair":
        return [plain(0), plain(1)]
    if design == "single":
        return [plain(1)]
    weights = SharedWeights(path, prepacking=design == "shared")
    sessions = [weights.session(cores), weights.session(1, arena=False)]
    weights.release_graph()
    return [*sessions, weights]  # the weights ride along: they must outlive the sessions


def feed(session: Any) -> dict[str, np.ndarray]:
    info = session.get_inputs()[0]
    shape = (1, *info.shape[1:])
    return {info.name: np.random.default_rng(0).integers(0, 256, shape, np.uint8)}


def memory_child(design: str, path: str) -> None:
    """In a fresh process: print the design's memory as JSON."""
    import onnx  # noqa: F401  (imported before the baseline, as the server has it)
    import onnxruntime  # noqa: F401

    from zoo.serving.sessions import release_free_memory

    before = status()["VmRSS"]
    opened = open_design(design, Path(path), os.cpu_count() or 1)
    sessions = [s for s in opened if hasattr(s, "run")]
    x = feed(sessions[0])
    for s in sessions:
        s.run(None, x)
    raw = status()
    release_free_memory()
    trimmed = status()["VmRSS"]
    print(json.dumps({"raw": raw["VmRSS"] - before, "trimmed": trimmed - before,
                      "peak": raw["VmHWM"] - before}))  # fmt: skip


def memory(design: str, path: Path) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.sessions", "--memory-child", design, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def lone_ms(session: Any, x: dict[str, np.ndarray], seconds: float) -> float:
    session.run(None, x)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, x)
        done += 1
    return (time.perf_counter() - started) / done * 1000


def images_per_s(session: Any, x: dict[str, np.ndarray], seconds: float, threads: int) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            session.run(None, x)
            counts[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - started)


def speed(path: Path, rounds: int, seconds: float) -> dict[str, dict[str, list[float]]]:
    cores = os.cpu_count() or 1
    designs = {d: open_design(d, path, cores) for d in DESIGNS}
    x = feed(designs["default"][0])
    lone: dict[str, list[float]] = {d: [] for d in DESIGNS}
    overlap: dict[str, list[float]] = {d: [] for d in DESIGNS}
    for r in range(rounds):
        order = [*DESIGNS[r % len(DESIGNS) :], *DESIGNS[: r % len(DESIGNS)]]
        for d in order:
            lone[d].append(lone_ms(designs[d][0], x, seconds))
        for d in order:
            sessions = [s for s in designs[d] if hasattr(s, "run")]
            if d == "default":  # the in-process reference: calls back to back
                overlap[d].append(images_per_s(sessions[0], x, seconds, 1))
            else:  # one instance thread per core on the overlapping-run session
                overlap[d].append(images_per_s(sessions[-1], x, seconds, cores))
    return {
        d: {
            "lone_ms": lone[d],
            "lone": [lone["default"][k] / lone[d][k] for k in range(rounds)],
            "overlap": [overlap[d][k] / overlap["default"][k] for k in range(rounds)],
        }
        for d in DESIGNS
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.0, help="per slice")
    parser.add_argument("--out", type=Path, help="replace this section of this file")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    lines = [
        SESSIONS_HEADING,
        "",
        f"Measured {dt.date.today().isoformat()} on {machine()} with `python -m bench.sessions` "
        f"({args.rounds} rounds of {args.seconds:.0f} s slices). Memory: RSS per design in a "
        "fresh process after one batch-1 inference per session, less the process before "
        "loading; as allocated, after glibc's `malloc_trim` (which `zoo serve` calls after "
        "each load), and the peak while loading. Speed: ratios to in-process ONNX Runtime "
        "(one default session, calls back to back) in slices interleaved in one process, "
        "median (range) over the rounds: a lone batch-1 request on the session a lone "
        "request uses, and overlapping requests, one thread per core on the single-thread "
        "session. `shared` is what `zoo serve` opens on a multi-core CPU; `pair` the design "
        "before 2026-12-01, `single` the one of 2026-12-01.",
        "",
        "| Model (ONNX MB) | Design | RSS MB as allocated | after malloc_trim | peak "
        "| x default (trimmed) | Lone batch-1 speed x in-process | Overlapping img/s x "
        "in-process |",
        "|" + "---|" * 8,
    ]
    with exported(tuple(args.models)) as (repository, _):  # ZOO_BENCH_REPOSITORY: kept
        for name in args.models:
            path = repository / name.lower() / "1" / "model.onnx"
            print(f"{name}: memory", file=sys.stderr, flush=True)
            figures = {d: memory(d, path) for d in DESIGNS}
            print(f"{name}: speed, {args.rounds} rounds", file=sys.stderr, flush=True)
            ratios = speed(path, args.rounds, args.seconds)
            size = path.stat().st_size / MIB
            for d in DESIGNS:
                m = figures[d]
                lines.append(
                    f"| {name} ({size:.0f}) | {d} | {m['raw'] / MIB:.0f} "
                    f"| {m['trimmed'] / MIB:.0f} | {m['peak'] / MIB:.0f} "
                    f"| {m['trimmed'] / figures['default']['trimmed']:.2f} "
                    f"| {spread(ratios[d]['lone'])} | {spread(ratios[d]['overlap'])} |"
                )
    section = "\n".join([*lines, ""])
    if args.out:
        old = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(replace_section(old, section, SESSIONS_HEADING))
    print(section)


if __name__ == "__main__":
    main()
