"""``make bench-export``: export every catalog model one by one and write a table.

Each model runs in its own process (``bench.export_one``), with random weights made
pixel-sensitive. Writes docs/benchmarks/export.md, rewritten after each model from the rows
kept in ``--rows`` (JSON lines), so an interrupted run keeps what it measured and a rerun
skips the models already there. Options: model names to run a subset, ``--stock NAME,...``
to compare with Keras's own ``model.export(format="onnx")`` for models where it fits in
memory (the smallest model of each family it cannot export is in the default list).
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

from zoo.catalog import get_spec, list_models

GIB = 2**30
DEFAULT_STOCK = (
    "MobileNetV2",
    "ResNet50",
    "DenseNet121",
    "InceptionV3",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "ConvNeXtTiny",
)


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


def run_one(name: str, stock: bool, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        cmd = [
            sys.executable,
            "-m",
            "bench.export_one",
            name,
            work,
            *(["--stock"] if stock else []),
            f"--rounds={rounds}",
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
            error = r["error"].replace("|", "/")
            lines.append(f"| {r['model']} | failed: {error} |" + " |" * 11)
            continue
        size = r["onnx_bytes"]
        bound = 2 * GIB + 4 * size
        v = r["verification"]
        fidelity = f"{v['max_abs_logit_diff']:.1e} / {v['logit_scale']:.0f}"
        if v.get("max_abs_exact_diff") is not None:  # judged against float64 Keras
            fidelity += (
                f"; from float64 {v['max_abs_exact_diff']:.1e}, "
                f"Keras float32's {v['keras_float32_error']:.1e}"
            )
        lines.append(
            f"| {r['model']} | {r['params']:,} | {fmt(size / 2**20, 1)} | {fmt(r['seconds'], 1)} "
            f"| {fmt(r['peak_rss_bytes'] / GIB)} | {fmt(bound / GIB)} "
            f"| {'yes' if r['peak_rss_bytes'] <= bound else '**no**'} "
            f"| {fidelity} "
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
            error = s["error"].replace("|", "/")
            lines.append(f"| {r['model']} | failed: {error} |" + " |" * 7)
            continue
        lines.append(
            f"| {r['model']} | {fmt(s['seconds'], 1)} | {fmt(s['peak_rss_bytes'] / GIB)} "
            f"| {fmt(r['peak_rss_bytes'] / GIB)} | {s['nodes']} | {r['ours_nodes']} "
            f"| {fmt(s['stock_b8_ms'])} | {fmt(s['ours_f32_b8_ms'])} "
            f"| {fmt(s['ours_f32_b8_ms'] / s['stock_b8_ms'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def family_table(rows: list[dict[str, Any]]) -> str:
    """Per family: did our route export every model, and did the stock route export one."""
    lines = [
        "| Family | Models | Ours: exported and verified | Stock `model.export` (model tried) |",
        "|---|---|---|---|",
    ]
    by_family: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_family.setdefault(get_spec(r["model"]).family, []).append(r)
    for family, members in sorted(by_family.items()):
        ours = sum("error" not in r and r["verification"]["passed"] for r in members)
        tried = [r for r in members if r.get("stock")]
        if not tried:
            stock = "not tried"
        elif "error" in tried[0]["stock"]:
            error = tried[0]["stock"]["error"].replace("|", "/")[:110]
            stock = f"**cannot export** ({tried[0]['model']}: {error} ...)"
        else:
            stock = f"exports ({tried[0]['model']})"
        names = ", ".join(r["model"] for r in members)
        lines.append(f"| {family} | {names} | {ours} of {len(members)} | {stock} |")
    return "\n".join(lines) + "\n"


def row_notes(rows: list[dict[str, Any]]) -> str:
    """A row's ``note`` (how it was measured, where that differs), under the table."""
    notes = [f"- {r['model']}: {r['note']}" for r in rows if r.get("note")]
    return "\n" + "\n".join(notes) + "\n" if notes else ""


def missing_note(rows: list[dict[str, Any]]) -> str:
    measured = {r["model"] for r in rows}
    missing = [s.name for s in list_models() if s.name not in measured]
    if not missing:
        return ""
    return f"\nNot measured in this run (`make bench-export` resumes): {', '.join(missing)}.\n"


def load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=[s.name for s in list_models()])
    parser.add_argument("--stock", default=",".join(DEFAULT_STOCK), help="comma-separated")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/export.md"))
    parser.add_argument("--rows", type=Path, default=Path("docs/benchmarks/export-rows.jsonl"))
    parser.add_argument("--rounds", type=int, default=7, help="timed runs per figure")
    args = parser.parse_args()
    stock = set(filter(None, args.stock.split(",")))
    done = {r["model"] for r in load_rows(args.rows)}
    for name in args.models:
        if name in done:
            continue
        print(f"exporting {name} ...", file=sys.stderr, flush=True)
        row = run_one(name, name in stock, args.rounds)
        print(json.dumps(row), file=sys.stderr, flush=True)
        with args.rows.open("a") as f:
            f.write(json.dumps(row) + "\n")
        write_report(args.out, load_rows(args.rows), args.rounds)
    write_report(args.out, load_rows(args.rows), args.rounds)
    print(args.out.read_text())


def write_report(out: Path, rows: list[dict[str, Any]], rounds: int) -> None:
    order = {s.name: i for i, s in enumerate(list_models())}
    rows = sorted(rows, key=lambda r: order.get(r["model"], len(order)))
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
        "(random, smooth random, 4 photos); the tolerance is 1e-4 x the logit scale; where "
        "that fails, the export is judged against the model rebuilt in float64, and passes "
        "within 2 x the distance of Keras's own float32 logits from those (zoo/export/verify.py)"
        ". ONNX "
        "Runtime: CPU provider, default threads; Keras: `model.predict` after two warm-up "
        f"calls of the same shape. Medians of {rounds} runs.\n\n"
        + table(rows)
        + row_notes(rows)
        + missing_note(rows)
        + "\n## Families\n\n"
        'Keras\'s own route (`model.export(format="onnx")`, tf2onnx underneath) was tried on '
        "one model per family where listed; where it cannot export one, it cannot export "
        "the family (the cause is shared by its members, see zoo/export/convert.py).\n\n"
        + family_table(rows)
        + '\n## Against Keras\'s own `model.export(format="onnx")`\n\n'
        "Both graphs take float32 preprocessed input here; the two sessions run alternately "
        "in one process.\n\n" + stock_table(rows)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
