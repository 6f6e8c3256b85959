"""Tiny model versions whose outputs differ, built as ONNX graphs directly (no TensorFlow), so
a test can tell which version answered: ``logits = (float(image) / 255) @ W_v``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zoo.export.triton_config import render_config
from zoo.manifest import TensorSpec
from zoo.repository import Repository

SIZE, CLASSES = 8, 4
INPUT = TensorSpec("image", "UINT8", (-1, SIZE, SIZE, 3))
OUTPUT = TensorSpec("logits", "FP32", (-1, CLASSES))


def weights(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(SIZE * SIZE * 3, CLASSES)).astype(np.float32)


def onnx_bytes(seed: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("Div", ["pixels", "scale"], ["scaled"]),
            helper.make_node("Flatten", ["scaled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        f"tiny-{seed}",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [
            numpy_helper.from_array(np.array(255.0, np.float32), "scale"),
            numpy_helper.from_array(weights(seed), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def publish_versions(repository: Repository, name: str, count: int) -> list[Path]:
    """Publish versions 1..count of ``name``; version v's weights come from seed v."""
    paths = []
    for seed in range(1, count + 1):
        with repository.stage() as staged:
            (staged / "model.onnx").write_bytes(onnx_bytes(seed))
            manifest = {
                "input": {"name": "image", "datatype": "UINT8", "shape": list(INPUT.shape)},
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": list(OUTPUT.shape)}],
                "labels": [f"class{i}" for i in range(CLASSES)],
            }
            (staged / "zoo.json").write_text(json.dumps(manifest))
            config = render_config(name, [INPUT], [OUTPUT], max_batch_size=8)
            paths.append(repository.publish(staged, name, config).model_file)
    return paths


def pixels(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)


def onnxruntime_logits(model_file: Path, image: np.ndarray) -> np.ndarray:
    """The version's answer computed in this process by ONNX Runtime on its own file."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"image": image})[0])
