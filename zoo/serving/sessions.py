"""The ONNX Runtime sessions of one served version, and on a CPU two that share their weights.

On a multi-core CPU a version computes a lone request fastest on every core and overlapping
requests fastest side by side, one core each (docs/benchmarks/serve.md). That takes two
sessions, an all-core one and a single-thread one, and two default sessions hold every model
twice. ``open_shared`` gives both for about the memory of one (figures: ``make
bench-sessions``, docs/benchmarks/serve.md):

1. ONNX Runtime optimizes the model once, at its highest level, for this machine, into a
   temporary file: that is where the convolution kernels are reordered into the CPU's blocked
   layout (NCHWc), a second copy of the weights that each default session makes for itself.
2. The optimized model's initializers are read once into numpy arrays and wrapped as
   OrtValues; the model bytes given to the sessions carry none of them (each initializer
   points at external data that ``add_external_initializers`` supplies), and
   ``add_initializer`` makes each session use those buffers instead of a copy of its own.
3. Both sessions skip graph optimization (already done). The weights of dense layers
   (MatMul, Gemm) are the exception: ONNX Runtime pre-packs them, a copy per session, and
   frees the original unless it is shared. So each session keeps its own, as a default
   session does, and answers to the bit as in-process ONNX Runtime does (sharing them would
   need pre-packing off, whose MatMul kernel differs in the last bits). Where dense layers
   hold most of a large model (VGG16, by its layer sizes: about 470 of 528 MiB) a second
   session would copy most of it:
   there ``open_shared`` declines (None) and the version gets one single-thread session.

The single-thread session computes without a memory arena: it runs the batches and the
parts of large requests, and an arena keeps what its largest run needed (after one batch-1
run: 8 MB less held for MobileNetV2, no difference seen for ResNet50; speed with and
without, medians 1.00 and 1.01 x over 8 interleaved rounds on a noisy machine). The
all-core session, which computes lone requests, keeps its arena: without one it measured
0.90 x (ResNet50) and 1.22 x (MobileNetV2), too noisy to decide.

The arrays must outlive both sessions: ``Sessions`` holds them with the sessions, and a run
holds the ``Sessions`` it runs on, so closing a version while a batch computes is safe.
Memory freed while loading (the optimizer's copies, the parsed model) goes back to the
system (``release_free_memory``), or glibc keeps it as heap for later.
"""

from __future__ import annotations

import ctypes
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("zoo.serving.sessions")

CPU = "CPUExecutionProvider"
# After runs of a version overlapped, its runs keep to one thread for this long: under steady
# concurrent load a momentarily lone run must not grab every core as the others arrive.
OVERLAP_MEMORY_S = 1.0
# Initializers smaller than this stay in the model bytes (ONNX Runtime's rule for external
# data: small tensors such as shapes are read during graph resolution).
SMALL_INITIALIZER_BYTES = 128
SHARED_DATA = "zoo-shared-initializers"  # a name only: no such file is read
PACKED_OPS = {"MatMul", "Gemm", "FusedMatMul", "FusedGemm"}  # their input 1 is pre-packed
# The pair is declined where dense layers hold over this share of the weights and more than
# DENSE_BYTES_FLOOR (each session would hold its own packed copy of them): ResNet50 8%,
# MobileNetV2 37% (5 MB), VGG16 about 90% (470 MiB). Below the floor the copy costs about what the
# second session's own structures do.
MAX_DENSE_SHARE, DENSE_BYTES_FLOOR = 0.5, 32 * 2**20
# One optimized model on disk at a time: the temporary file is as large as the model, and the
# Kubernetes manifests give /tmp an emptyDir of 1 GiB (the largest seed model is 548 MB).
_OPTIMIZING = threading.Lock()


class Sessions:
    """One session, or two (``lone`` on every core, ``overlap`` on one thread) with the
    arrays they share; ``run`` picks one per call."""

    def __init__(self, overlap: Any, lone: Any = None, weights: Sequence[Any] = ()) -> None:
        self.overlap = overlap
        self.lone = lone
        self._weights = tuple(weights)  # the buffers both sessions compute with
        self._lock = threading.Lock()
        self._active = 0
        self._overlapped_at = -OVERLAP_MEMORY_S

    @property
    def shared(self) -> bool:
        return self.lone is not None

    def run(
        self, names: list[str], feeds: dict[str, np.ndarray], *, side_by_side: bool = False
    ) -> list[np.ndarray]:
        """One call on the caller's thread: on every core if it has the version to itself
        (and none overlapped in the last OVERLAP_MEMORY_S), else on one thread."""
        if self.lone is None:
            return list(self.overlap.run(names, feeds))
        with self._lock:
            now = time.monotonic()
            if self._active or side_by_side:
                self._overlapped_at = now
            lone = now - self._overlapped_at >= OVERLAP_MEMORY_S
            self._active += 1
        try:
            return list((self.lone if lone else self.overlap).run(names, feeds))
        finally:
            with self._lock:
                self._active -= 1


class SharedWeights:
    """A model optimized once for this CPU, its weights held once as OrtValues, from which
    sessions are opened that compute on those buffers instead of copies of their own."""

    def __init__(self, model_file: Path, *, prepacking: bool = True) -> None:
        """``prepacking`` off (for measurements) shares the dense layers' weights too."""
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper

        with _OPTIMIZING, tempfile.TemporaryDirectory(prefix="zoo-optimized-") as tmp:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.log_severity_level = 3  # not the warning that the result suits this CPU only
            options.optimized_model_filepath = str(Path(tmp) / "model.onnx")
            ort.InferenceSession(str(model_file), sess_options=options, providers=[CPU])
            model = onnx.load(options.optimized_model_filepath)
        self.prepacking = prepacking
        packed = {n.input[1] for n in model.graph.node if n.op_type in PACKED_OPS} - {""}
        self.names: list[str] = []
        self.arrays: list[np.ndarray] = []
        self.dense_nbytes = 0  # what each session holds of its own (packed)
        for tensor in model.graph.initializer:
            if prepacking and tensor.name in packed:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
                self.dense_nbytes += int(np.prod(tensor.dims)) * dtype.itemsize
                continue
            array = np.ascontiguousarray(numpy_helper.to_array(tensor))
            if array.nbytes < SMALL_INITIALIZER_BYTES:
                continue
            self.names.append(tensor.name)
            self.arrays.append(array)
            for data in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
                tensor.ClearField(data)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", SHARED_DATA), ("length", str(array.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
        self.graph: bytes | None = model.SerializeToString()  # without the weights
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def session(self, threads: int, *, arena: bool = True) -> Any:
        """A session computing each run on ``threads`` threads, on the shared buffers;
        without ``arena`` its activations are allocated per run instead of kept in an arena
        that grows to the largest batch it has seen."""
        import onnxruntime as ort

        if self.graph is None:
            raise RuntimeError("the model bytes were released; open sessions before that")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_cpu_mem_arena = arena
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if not self.prepacking:
            options.add_session_config_entry("session.disable_prepacking", "1")
        options.add_external_initializers(self.names, self.values)
        for name, value in zip(self.names, self.values, strict=True):
            options.add_initializer(name, value)
        return ort.InferenceSession(self.graph, sess_options=options, providers=[CPU])

    def release_graph(self) -> None:
        """Drop the model bytes once every session is open; the buffers stay."""
        self.graph = None


def open_shared(model_file: Path, cores: int) -> Sessions | None:
    """An all-core session (``cores`` threads) and a single-thread one sharing their weights;
    None where dense layers hold most of the weights (MAX_DENSE_SHARE, DENSE_BYTES_FLOOR)."""
    weights = SharedWeights(model_file)
    dense = weights.dense_nbytes
    if dense > DENSE_BYTES_FLOOR and dense > MAX_DENSE_SHARE * (weights.nbytes + dense):
        log.info(
            "%s: dense layers hold %d of %d MB of weights, which each session would copy; "
            "one single-thread session",
            model_file,
            weights.dense_nbytes // 2**20,
            (weights.nbytes + weights.dense_nbytes) // 2**20,
        )
        del weights
        release_free_memory()
        return None
    lone, overlap = weights.session(cores), weights.session(1, arena=False)
    weights.release_graph()
    release_free_memory()
    return Sessions(overlap, lone, (weights,))


def release_free_memory() -> None:
    """Give freed heap back to the system (glibc's malloc_trim); a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: its allocator returns memory by itself
        log.debug("malloc_trim not available")
