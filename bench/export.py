"""``make bench-export``: export the 13 seed models one by one and write a table.

Each model runs in its own process (``bench.export_one``), with random weights made
pixel-sensitive. Writes docs/benchmarks/export.md. Options: model names to run a subset,
``--stock NAME,...`` to compare with Keras's own ``model.export(format="onnx")`` for models
where it fits in memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from zoo.catalog import SEED_MODELS

GIB = 2**30
DEFAULT_STOCK = ("MobileNetV2", "ResNet50", "DenseNet121", "InceptionV3")


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def run_one(name: str, stock: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        cmd = [
            sys.executable,
            "-m",
            "bench.export_one",
            name,
            work,
            *(["--stock"] if stock else []),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"model": name, "error": f"exit {done.returncode}: {tail[:200]}"}


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| Model | Params | ONNX MB | Export s | Peak RSS GB | Bound GB | Within | "
        "Max logit diff / scale | Top-1 agree | ORT b1 ms/img | ORT b8 ms/img | "
        "Keras b8 ms/img | Keras / ORT (b8) |\n|" + "---|" * 13 + "\n"
    )
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} |" + " |" * 11)
            continue
        size = r["onnx_bytes"]
        bound = 2 * GIB + 4 * size
        v = r["verification"]
        lines.append(
            f"| {r['model']} | {r['params']:,} | {fmt(size / 2**20, 1)} | {fmt(r['seconds'], 1)} "
            f"| {fmt(r['peak_rss_bytes'] / GIB)} | {fmt(bound / GIB)} "
            f"| {'yes' if r['peak_rss_bytes'] <= bound else '**no**'} "
            f"| {v['max_abs_logit_diff']:.1e} / {v['logit_scale']:.0f} "
            f"| {v['top1_agreement']:.0%} of {v['inputs']} | {fmt(r['ort_b1_ms'], 1)} "
            f"| {fmt(r['ort_b8_ms'], 1)} | {fmt(r['keras_b8_ms'], 1)} "
            f"| {fmt(r['keras_b8_ms'] / r['ort_b8_ms'])} |"
        )
    return head + "\n".join(lines) + "\n"


def stock_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Model | Stock export s | Stock peak RSS GB | Ours peak RSS GB | Stock nodes "
        "| Ours nodes | ORT b8 ms/img stock | ours | Ours / stock |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        s = r.get("stock")
        if not s:
            continue
        if "error" in s:
            lines.append(f"| {r['model']} | failed: {s['error']} |" + " |" * 7)
            continue
        lines.append(
            f"| {r['model']} | {fmt(s['seconds'], 1)} | {fmt(s['peak_rss_bytes'] / GIB)} "
            f"| {fmt(r['peak_rss_bytes'] / GIB)} | {s['nodes']} | {r['ours_nodes']} "
            f"| {fmt(s['stock_b8_ms'])} | {fmt(s['ours_f32_b8_ms'])} "
            f"| {fmt(s['ours_f32_b8_ms'] / s['stock_b8_ms'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=list(SEED_MODELS))
    parser.add_argument("--stock", default=",".join(DEFAULT_STOCK), help="comma-separated")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/export.md"))
    args = parser.parse_args()
    stock = set(filter(None, args.stock.split(",")))
    rows = []
    for name in args.models:
        print(f"exporting {name} ...", file=sys.stderr, flush=True)
        rows.append(run_one(name, name in stock))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    today = dt.date.today().isoformat()
    text = (
        "# Export benchmark\n\n"
        f"Measured {today} on {machine()} with `make bench-export`.\n\n"
        "Each model is built with `weights=None`, its BatchNorm statistics set from real photos "
        "and its classifier sharpened (so logits depend on the pixels), saved as a weights file "
        "and exported from it with `zoo.export_model` (as ImageNet weights are; uint8 input, "
        "preprocessing in the graph). Peak RSS is the whole "
        "export process (TensorFlow import, model load, conversion, ONNX Runtime "
        "verification); the bound is 2 GB + 4 x the ONNX file. The logit check runs 8 inputs "
        "(random, smooth random, 4 photos); the tolerance is 1e-4 x the logit scale. ONNX "
        "Runtime: CPU provider, default threads; Keras: `model.predict` after two warm-up "
        "calls of the same shape. Medians of 7 runs.\n\n"
        + table(rows)
        + '\n## Against Keras\'s own `model.export(format="onnx")`\n\n'
        "Both graphs take float32 preprocessed input here; the two sessions run alternately "
        "in one process.\n\n" + stock_table(rows)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
