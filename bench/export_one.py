"""Export one catalog model and measure it: ``python -m bench.export_one NAME WORKDIR [--stock]``.

Runs in its own process (TensorFlow holds memory). The model is built with random weights
made pixel-sensitive (BatchNorm statistics from real photos, a sharpened classifier), so the
logit comparison means something, and exported from a weights file, as ImageNet weights
are. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import zoo
from zoo.export.exporter import export_model
from zoo.export.verify import make_pixel_sensitive, verification_inputs


def median_seconds(fn: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    # Without spinning: an idle session's spinning threads would steal the other's cores
    # on a 2-core machine, and the ratio would depend on the order of the runs.
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_ms_per_image(sessions: dict[str, Any], feeds: dict[str, np.ndarray], rounds: int) -> dict:
    """Median ms/image of each session, run alternately so both see the same machine state."""
    for name, session in sessions.items():
        for _ in range(2):
            session.run(None, {session.get_inputs()[0].name: feeds[name]})
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            feed = {session.get_inputs()[0].name: feeds[name]}
            start = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) / len(feeds[name]) for name, t in times.items()}


def stock_export(model_path: Path, out: Path) -> dict[str, Any]:
    """Keras's own model.export(format='onnx') in a child process, for comparison."""
    code = f"""
import json, time, keras, numpy as np
from zoo.export.child import peak_rss_bytes
model = keras.saving.load_model({str(model_path)!r}, compile=False)
model(np.zeros((1, *model.input_shape[1:]), "float32"))  # export needs a called model
start = time.perf_counter()
model.export({str(out)!r}, format="onnx", verbose=False)
print(json.dumps({{"seconds": time.perf_counter() - start,
    "peak_rss_bytes": peak_rss_bytes()}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["killed"])[-1][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_stock(stock_path: Path, ours_dir: Path, x8: Any, rounds: int) -> dict[str, Any]:
    """Node counts and ms/image of the stock file against ours (float32 input, batch 8)."""
    import onnx

    nodes = len(onnx.load(str(stock_path), load_external_data=False).graph.node)
    ours_session = ort_session(ours_dir / "model.onnx")
    stock_session = ort_session(stock_path)
    x8f = np.asarray(x8, dtype=np.float32)
    ms = ort_ms_per_image(
        {"ours": ours_session, "stock": stock_session}, {"ours": x8f, "stock": x8f}, rounds
    )
    return {"nodes": nodes, "ours_f32_b8_ms": ms["ours"], "stock_b8_ms": ms["stock"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--stock", action="store_true", help="also compare with model.export")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import keras

    spec = zoo.get_spec(args.name)
    keras.utils.set_random_seed(0)
    model = zoo.build_model(spec, weights=None, classifier_activation=None)
    preprocess = importlib.import_module(spec.keras_module).preprocess_input
    h, w, _ = spec.input_shape
    make_pixel_sensitive(model, preprocess(verification_inputs(h, w).astype("float32")))

    # Exported the way `zoo export NAME --weights FILE` does: the export process builds the
    # catalog model and loads this weights file, as it would load ImageNet weights.
    weights_file = args.workdir / "calibrated.weights.h5"
    model.save_weights(weights_file)
    result = export_model(spec, args.workdir, weights=str(weights_file))
    row: dict[str, Any] = {**result.to_dict(), "model": spec.name, "params": spec.parameters}
    onnx_path = result.path / "model.onnx"

    rng = np.random.default_rng(0)
    pixels8 = rng.integers(0, 256, (8, h, w, 3), dtype=np.uint8)
    sessions = {"b1": ort_session(onnx_path)}
    row["ort_b1_ms"] = ort_ms_per_image(sessions, {"b1": pixels8[:1]}, args.rounds)["b1"]
    row["ort_b8_ms"] = ort_ms_per_image({"b8": sessions["b1"]}, {"b8": pixels8}, args.rounds)["b8"]

    x8 = preprocess(pixels8.astype("float32"))
    for _ in range(2):  # the first calls trace the graph for this shape
        model.predict(x8, verbose=0)
    row["keras_b8_ms"] = (
        1000 * median_seconds(lambda: model.predict(x8, verbose=0), args.rounds) / 8
    )

    if args.stock:
        keras_path = args.workdir / "source.keras"
        model.save(keras_path)
        ours_f32 = export_model(
            model,
            args.workdir,
            model_name="ours-f32",
            input="float32",
            preprocessing=spec.preprocessing,
        )
        stock_path = args.workdir / "stock.onnx"
        row["stock"] = stock_export(keras_path, stock_path)
        if "error" not in row["stock"]:
            try:
                row["stock"].update(compare_stock(stock_path, ours_f32.path, x8, args.rounds))
            except Exception as e:  # a stock file that ONNX Runtime refuses is a result
                row["stock"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            row["ours_nodes"] = ours_f32.manifest.onnx["nodes"]
    print("RESULT " + json.dumps(row))


if __name__ == "__main__":
    main()
