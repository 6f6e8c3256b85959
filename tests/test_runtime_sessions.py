"""Two sessions per CPU version that share one copy of the weights (zoo.serving.sessions).

Memory is read from /proc in child processes (a fresh allocator, nothing else loaded), on a
model made here whose convolution weights (23 MB) dwarf the allocator's noise; no timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from zoo.config import ServerConfig
from zoo.errors import Unavailable
from zoo.repository import Repository
from zoo.serving.runtime import Runtime
from zoo.serving.sessions import OVERLAP_MEMORY_S, Sessions, SharedWeights, open_shared

CHANNELS, LAYERS, SIDE = 256, 10, 4  # ten 256x256 3x3 convolutions: 2.4 MB of weights each


def conv_stack(path: Path) -> int:
    """Write a float model of LAYERS convolutions to ``path``; returns its weights' bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights = [], []
    previous = "image"
    for i in range(LAYERS):
        w = (rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) / 48).astype(np.float32)
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        previous = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [previous], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"]))
    graph = helper.make_graph(
        nodes,
        "conv_stack",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", CHANNELS, SIDE, SIDE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", CHANNELS])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return sum(w.nbytes for w in (numpy_helper.to_array(t) for t in weights))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """(repository root, weight bytes): the conv stack served as ``stack`` version 1."""
    root = tmp_path_factory.mktemp("stack")
    (root / "stack" / "1").mkdir(parents=True)
    return root, conv_stack(root / "stack" / "1" / "model.onnx")


def child(script: str, *args: str) -> dict[str, float]:
    """Run ``script`` in a fresh interpreter; it prints one JSON object."""
    prelude = textwrap.dedent(
        """
        import gc, json, sys
        import numpy as np
        from zoo.serving.sessions import release_free_memory

        def rss():
            gc.collect()
            release_free_memory()
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) * 1024

        x = np.random.default_rng(1).standard_normal((1, 256, 4, 4)).astype(np.float32)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_second_session_computes_on_the_first_ones_weights(stack: tuple[Path, int]) -> None:
    root, size = stack
    costs = child(
        """
        import onnxruntime as ort
        from pathlib import Path
        from zoo.serving.sessions import SharedWeights
        path = Path(sys.argv[1])
        weights = SharedWeights(path)
        lone = weights.session(2)
        lone.run(None, {"image": x})
        one = rss()
        overlap = weights.session(1)
        overlap.run(None, {"image": x})
        two = rss()
        weights.release_graph()
        # the same second session the usual way, from the file: its own copy of everything
        plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        plain.run(None, {"image": x})
        three = rss()
        print(json.dumps({"shared": two - one, "plain": three - two, "held": weights.nbytes}))
        """,
        str(root / "stack" / "1" / "model.onnx"),
    )
    assert costs["held"] >= size  # the optimized weights (blocked layout, padded) held once
    assert costs["shared"] < 0.2 * size, costs  # the second shared session: no copy
    assert costs["plain"] > 0.8 * size, costs  # what a session with its own copy costs


def test_unloading_a_version_gives_its_memory_back(stack: tuple[Path, int]) -> None:
    root, size = stack
    figures = child(
        """
        from pathlib import Path
        from zoo.config import ServerConfig
        from zoo.repository import Repository
        from zoo.serving.runtime import Runtime
        root = Path(sys.argv[1])
        runtime = Runtime(Repository(root), ServerConfig(repository=root, providers=("cpu",)))
        runtime.get("stack").run({"image": x})  # ONNX Runtime's own start-up, once
        runtime.unload("stack")
        before = rss()
        model = runtime.get("stack")
        model.run({"image": x})
        shared = model.sessions.shared
        loaded = rss()
        runtime.unload("stack")  # closes it, though `model` is still referenced here
        after = rss()
        print(json.dumps({"loaded": loaded - before, "left": after - before, "shared": shared}))
        """,
        str(root),
    )
    assert figures["loaded"] > 0.8 * size, figures
    assert figures["left"] < 0.2 * size, figures


def chelsea(side: int, rows: int) -> np.ndarray:
    from skimage import data

    image = Image.fromarray(data.chelsea()).resize((side, side))
    return np.stack([np.asarray(image, np.uint8)] * rows)


def test_the_all_core_and_the_single_thread_session_answer_identically(
    served_repository: Path,
) -> None:
    import onnxruntime as ort

    path = served_repository / "mobilenetv2" / "1" / "model.onnx"
    sessions = open_shared(path, cores=2)
    assert sessions is not None and sessions.shared
    assert sessions.lone.get_session_options().intra_op_num_threads == 2
    assert sessions.overlap.get_session_options().intra_op_num_threads == 1
    x = chelsea(64, 3)
    lone = sessions.lone.run(None, {"image": x})[0]
    overlap = sessions.overlap.run(None, {"image": x})[0]
    np.testing.assert_array_equal(lone, overlap)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = reference.run(None, {"image": x})[0]
    np.testing.assert_array_equal(lone, expected)  # the same kernels on the same weights


def test_the_shared_weights_are_the_model_less_nothing(served_repository: Path) -> None:
    import onnx

    path = served_repository / "mobilenetv2" / "1" / "model.onnx"
    weights = SharedWeights(path)
    assert weights.graph is not None
    stripped = onnx.load_from_string(weights.graph)
    # every initializer held is absent from the model bytes the sessions get
    external = {t.name for t in stripped.graph.initializer if t.external_data}
    assert external == set(weights.names)
    assert all(not t.raw_data for t in stripped.graph.initializer if t.name in external)
    # but for the classifier's weights, which each session pre-packs for itself
    assert weights.dense_nbytes == 1280 * 1000 * 4
    assert len(weights.graph) < weights.dense_nbytes + 0.05 * weights.nbytes


def test_a_model_mostly_dense_gets_one_single_thread_session(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    conv = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    dense = rng.standard_normal((16 * 8 * 8, 9000)).astype(np.float32)  # 37 MB of 37
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "conv"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Flatten", ["c"], ["f"]),
            helper.make_node("MatMul", ["f", "dense"], ["logits"]),
        ],
        "mostly_dense",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 9000])],
        [numpy_helper.from_array(conv, "conv"), numpy_helper.from_array(dense, "dense")],
    )
    (tmp_path / "dense" / "1").mkdir(parents=True)
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        tmp_path / "dense" / "1" / "model.onnx",
    )
    assert open_shared(tmp_path / "dense" / "1" / "model.onnx", cores=2) is None
    config = ServerConfig(repository=tmp_path, providers=("cpu",))
    model = Runtime(Repository(tmp_path), config).get("dense")
    assert model.sessions is not None and not model.sessions.shared
    assert (model.plan.session_threads, model.plan.lone_threads) == (1, 0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert model.run({"image": x})["logits"].shape == (2, 9000)


def test_a_closed_version_frees_its_sessions_and_answers_unavailable(
    served_repository: Path,
) -> None:
    config = ServerConfig(repository=served_repository, providers=("cpu",))
    runtime = Runtime(Repository(served_repository), config)
    model = runtime.get("mobilenetv2")
    assert model.sessions is not None
    runtime.unload("mobilenetv2")
    assert model.sessions is None and model.closed
    with pytest.raises(Unavailable, match="unloaded"):
        model.run({"image": chelsea(64, 1)})


def adds(path: Path, value: float) -> Any:
    """A session of a one-node graph that adds ``value``: tells which session answered."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "v"], ["y"])],
        "adds",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(np.full(4, value, np.float32), "v")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_a_lone_run_takes_the_all_core_session_and_overlapping_runs_the_other(
    tmp_path: Path,
) -> None:
    sessions = Sessions(overlap=adds(tmp_path / "o.onnx", 2), lone=adds(tmp_path / "l.onnx", 1))
    x = np.zeros((1, 4), np.float32)

    def answer(side_by_side: bool = False) -> float:
        return float(sessions.run(["y"], {"x": x}, side_by_side=side_by_side)[0][0, 0])

    assert answer() == 1  # alone: all cores
    assert answer(side_by_side=True) == 2  # a part of a request cut for the instances
    assert answer() == 2  # overlapped a moment ago: one thread, while the load lasts
    sessions._overlapped_at -= OVERLAP_MEMORY_S  # that moment is past
    assert answer() == 1
