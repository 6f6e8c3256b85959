"""``make bench-finetune``: the same fine-tuning as a plain Keras script and as a server job.

Data: scikit-learn's handwritten digits (10 classes, 1,797 images) written as PNG files.
(a) ``bench.finetune_plain``: the keras.io guide's way, images through the frozen base in
every phase-1 epoch; (b) the same model and parameters as a job through a real server and
worker. Reports images/s of each phase, their ratio, and the phase-1 speed-up per epoch
from computing the frozen base's features once. Writes docs/benchmarks/finetune.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench import start_server
from bench.export import machine
from zoo.catalog import get_spec

SETTINGS: dict[str, Any] = {
    "base": "MobileNetV2",
    "base_kwargs": {"alpha": 0.35},
    "image_size": 96,
    "batch_size": 32,
    "epochs": 3,
    "fine_tune_epochs": 2,
    "unfreeze": 20,
    "validation_split": 0.2,
}


def write_digits(root: Path) -> int:
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    for i, (image, label) in enumerate(zip(data.images, data.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((96, 96)).convert("RGB").save(folder / f"{i}.png")
    return len(data.images)


def plain(folder: Path) -> dict[str, Any]:
    spec = get_spec(SETTINGS["base"])
    settings = {**SETTINGS, "keras_module": spec.keras_module, "classes": 10}
    done = subprocess.run(
        [sys.executable, "-m", "bench.finetune_plain", str(folder), json.dumps(settings)],
        capture_output=True,
        text=True,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(done.stderr[-2000:])


def as_job(folder: Path, workdir: Path) -> dict[str, Any]:
    from client import ZooClient

    (workdir / "repo").mkdir()
    server = start_server(workdir / "repo", workdir, env={"ZOO_DATA_DIR": str(workdir / "data")})
    try:
        with ZooClient(server.address) as zoo:
            dataset = zoo.upload_dataset(folder)
            params = {k: v for k, v in SETTINGS.items() if k not in ("base", "base_kwargs")}
            job = zoo.finetune(
                SETTINGS["base"],
                dataset,
                "digits",
                weights="none",
                patience=100,
                base_kwargs=SETTINGS["base_kwargs"],
                **params,
            )
            events = list(job.watch())
            job.refresh()
    finally:
        server.stop()
    if job.state != "SUCCEEDED":
        raise RuntimeError(f"job ended {job.state}: {job.error}")
    epochs = [e.payload for e in events if e.type == "epoch"]
    return {
        "result": job.result,
        "phase1_epoch_seconds": [e["seconds"] for e in epochs if e["phase"] == 1],
        "phase2_epoch_seconds": [e["seconds"] for e in epochs if e["phase"] == 2],
    }


def report(images: int, a: dict[str, Any], b: dict[str, Any]) -> str:
    n = a["train_images"]

    # Epoch 1 of each phase traces the graph; the median of the others is the steady state.
    def per_s(seconds: list[float]) -> float:
        steady = seconds[1:] or seconds
        return n / statistics.median(steady)

    speeds = b["result"]["images_per_second"]
    plain1, plain2 = per_s(a["phase1_epoch_seconds"]), per_s(a["phase2_epoch_seconds"])
    job1_epoch, job2 = per_s(b["phase1_epoch_seconds"]), per_s(b["phase2_epoch_seconds"])
    return "\n".join(
        [
            "# Fine-tuning benchmark",
            "",
            f"Measured {dt.date.today().isoformat()} on {machine()} with `make bench-finetune`: "
            f"{SETTINGS['base']} (alpha 0.35, random weights) at {SETTINGS['image_size']}x"
            f"{SETTINGS['image_size']}, scikit-learn's digits ({images} images, 10 classes, "
            f"{n} for training), batch {SETTINGS['batch_size']}, {SETTINGS['epochs']} head "
            f"epochs and {SETTINGS['fine_tune_epochs']} fine-tuning epochs (top "
            f"{SETTINGS['unfreeze']} layers). Images/s are training images over the median "
            "epoch time after the first (which traces the graph).",
            "",
            "| Phase | Plain Keras script img/s | Job through the server img/s | Job / script |",
            "|---|---|---|---|",
            f"| 1: head on the frozen base, per epoch | {plain1:.1f} | {job1_epoch:.1f} "
            f"| {job1_epoch / plain1:.1f} |",
            f"| 2: top layers unfrozen | {plain2:.1f} | {job2:.1f} | {job2 / plain2:.2f} |",
            "",
            "Phase 1 in the job computes the frozen base's features once "
            f"({speeds.get('phase1_feature_images_per_s', 0):.1f} img/s for that pass over "
            f"all {images} images) and trains the head on them: per epoch that is "
            f"{job1_epoch / plain1:.0f}x the script, which runs every image through the base "
            f"in every epoch; the whole phase including the feature pass ran at "
            f"{speeds.get('phase1_images_per_s', 0):.1f} training img/s over "
            f"{SETTINGS['epochs']} epochs. Validation accuracy of the job: "
            f"{b['result']['val_accuracy']:.3f}.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/finetune.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "digits"
        images = write_digits(folder)
        print("plain Keras script ...", file=sys.stderr, flush=True)
        a = plain(folder)
        print("job through the server ...", file=sys.stderr, flush=True)
        b = as_job(folder, Path(tmp))
    text = report(images, a, b)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
