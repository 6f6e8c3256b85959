"""Keras 3 (TensorFlow backend) -> ONNX with memory bounded by the weights, not 50x them.

Where the stock route's memory goes (``model.export(format="onnx")``, tf2onnx underneath):
the variables are frozen into a GraphDef as constants (one copy), grappler's constant
folding rewrites that GraphDef (more copies), tf2onnx turns every constant into a numpy
array inside its own graph and its optimizers (transpose push-down, constant folding of the
kernel transposes and BatchNorm arithmetic) create new arrays for each rewrite, and finally
the whole ModelProto is serialised into one bytes object. Measured here: ResNet50 6.9 GB,
VGG16 over 24 GB (killed), about 50-70x the weights' size.

This route never lets a weight enter TensorFlow's or tf2onnx's graph:

1. The model is traced as ``f(image, *weights)`` through ``model.stateless_call``, so every
   variable is a graph *input*. tf2onnx converts a graph with no weight constants at all and
   runs its structural optimizers on it cheaply (a few MB for any model).
2. The nodes that depend on weights alone (kernel transposes HWIO->OIHW, depthwise
   reshapes, BatchNorm's ``gamma / sqrt(var + eps)`` ...) are evaluated once in numpy, node
   by node, reading each Keras variable only when first needed and freeing intermediates
   after their last use. What ONNX Runtime runs is the same folded graph the stock route
   produces, so inference speed is the same.
3. The resulting initializers are streamed into the .onnx file as extra ``graph`` fields:
   protobuf merges repeated embedded-message fields, so the file parses as one normal
   ModelProto, while no serialised copy of the whole model ever exists in memory.

Peak memory is TensorFlow + the Keras model + about one folded tensor, which keeps all 13
seed models under 2 GB + 4 x their ONNX size (see docs/benchmarks/export.md).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# Field numbers of onnx.proto: ModelProto.graph = 7, GraphProto.initializer = 5,
# TensorProto.raw_data = 9. Wire type 2 = length-delimited.
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_header(field_number: int, length: int) -> bytes:
    return _varint((field_number << 3) | 2) + _varint(length)


def _append_initializer(f: BinaryIO, name: str, array: np.ndarray) -> None:
    """Write ``ModelProto{graph{initializer: tensor}}`` with the numpy buffer as raw_data."""
    import onnx
    from onnx import helper

    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    header = onnx.TensorProto(
        name=name, dims=array.shape, data_type=helper.np_dtype_to_tensor_dtype(array.dtype)
    ).SerializeToString()
    raw = memoryview(array).cast("B")  # type: ignore[arg-type]
    tensor_len = len(header) + len(_field_header(_TENSOR_RAW_DATA, raw.nbytes)) + raw.nbytes
    graph_len = len(_field_header(_GRAPH_INITIALIZER, tensor_len)) + tensor_len
    f.write(_field_header(_MODEL_GRAPH, graph_len))
    f.write(_field_header(_GRAPH_INITIALIZER, tensor_len))
    f.write(header)
    f.write(_field_header(_TENSOR_RAW_DATA, raw.nbytes))
    f.write(raw)


def _convert_structure(
    model: Any,
    preprocess: Callable[[Any], Any] | None,
    input_dtype: str,
    input_name: str,
    output_names: tuple[str, str],
    opset: int | None,
) -> tuple[Any, dict[str, Any]]:
    """tf2onnx conversion of f(image, *weights) -> (logits, probabilities), weights as inputs."""
    import tensorflow as tf
    import tf2onnx

    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)
    variables = trainable + non_trainable
    n_trainable = len(trainable)
    x_spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), input_dtype, name=input_name)
    weight_names = [f"keras_weight_{i}" for i in range(len(variables))]
    weight_specs = [
        tf.TensorSpec(v.shape, v.dtype, name=n)
        for v, n in zip(variables, weight_names, strict=True)
    ]
    compute_dtype = model.inputs[0].dtype

    @tf.function(input_signature=[x_spec, *weight_specs], autograph=False)
    def forward(x: Any, *weights: Any) -> Any:
        x = tf.cast(x, compute_dtype)
        if preprocess is not None:
            x = preprocess(x)
        logits, _ = model.stateless_call(
            list(weights[:n_trainable]), list(weights[n_trainable:]), x, training=False
        )
        logits = tf.identity(tf.cast(logits, tf.float32), name=output_names[0])
        return logits, tf.identity(tf.nn.softmax(logits, axis=-1), name=output_names[1])

    proto, _ = tf2onnx.convert.from_function(
        forward, input_signature=[x_spec, *weight_specs], opset=opset
    )
    _rename_outputs(proto.graph, output_names)
    return proto, dict(zip(weight_names, variables, strict=True))


def _rename_outputs(graph: Any, names: tuple[str, ...]) -> None:
    """Give the graph outputs stable names (tf2onnx names them after TF's Identity ops)."""
    renames = {out.name: new for out, new in zip(graph.output, names, strict=True)}
    for node in graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    for out in graph.output:
        out.name = renames[out.name]


def _plan_folding(
    graph: Any, weight_names: set[str]
) -> tuple[list[Any], list[Any], set[str], dict[str, int]]:
    """Split nodes into weight-only (foldable) and live ones.

    Returns the foldable nodes, the live nodes, the constant tensors the live nodes read (the
    future initializers), and for each constant how many foldable nodes still read it.
    """
    const = set(weight_names) | {t.name for t in graph.initializer}
    foldable, live = [], []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if inputs and all(i in const for i in inputs):
            foldable.append(node)
            const.update(node.output)
        else:
            live.append(node)
    needed = {i for n in live for i in n.input if i in const}
    needed |= {o.name for o in graph.output if o.name in const}
    uses: dict[str, int] = {}
    for node in foldable:
        for i in node.input:
            if i:
                uses[i] = uses.get(i, 0) + 1
    return foldable, live, needed, uses


def export_keras_to_onnx(
    model: Any,
    path: str | Path,
    *,
    preprocess: Callable[[Any], Any] | None = None,
    input_dtype: str = "uint8",
    input_name: str = "image",
    output_names: tuple[str, str] = ("logits", "probabilities"),
    opset: int | None = None,
) -> dict[str, Any]:
    """Write ``model`` (single NHWC image input, logits output) to ``path`` as ONNX.

    Args:
        model: a built Keras 3 model whose output is logits (no softmax).
        path: the .onnx file to write.
        preprocess: applied to the float32 input inside the graph (e.g. Keras's own
            ``preprocess_input``). Defaults to none.
        input_dtype: dtype of the graph input, ``"uint8"`` (raw pixels) or ``"float32"``.
        input_name: name of the graph input. Defaults to ``"image"``.
        output_names: names of the logits and softmax outputs.
        opset: ONNX opset. Defaults to tf2onnx's default.

    Returns:
        Statistics: opset, live and folded node counts, initializer count.
    """
    import onnx.reference
    from onnx import numpy_helper

    proto, weight_vars = _convert_structure(
        model, preprocess, input_dtype, input_name, output_names, opset
    )
    graph = proto.graph
    foldable, live, needed, uses = _plan_folding(graph, set(weight_vars))
    small_inits = {t.name: t for t in graph.initializer}
    opsets = {o.domain: o.version for o in proto.opset_import}

    # The header: the graph without weights, folded nodes or weight inputs.
    del graph.node[:]
    graph.node.extend(live)
    kept_inputs = [i for i in graph.input if i.name not in weight_vars]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    del graph.initializer[:]

    def load(name: str) -> np.ndarray:
        if name in weight_vars:
            return np.asarray(weight_vars[name].numpy())
        return numpy_helper.to_array(small_inits[name])

    values: dict[str, np.ndarray] = {}  # constants some foldable node has yet to read
    written: set[str] = set()
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())

        def release(name: str) -> None:
            # No foldable node needs `name` any more: write it if a live node reads it,
            # then drop it, so only about one folded tensor is alive at a time.
            array = values.pop(name, None)
            if name in needed and name not in written:
                _append_initializer(f, name, load(name) if array is None else array)
                written.add(name)

        for node in foldable:
            for i in node.input:
                if i and i not in values:
                    values[i] = load(i)
            evaluator = onnx.reference.ReferenceEvaluator(node, opsets=opsets)
            outputs = evaluator.run(None, {n: values[n] for n in node.input if n})
            assert isinstance(outputs, list)
            values.update(zip(node.output, outputs, strict=False))
            del outputs
            for i in set(node.input) - {""}:
                uses[i] -= list(node.input).count(i)
                if uses[i] == 0:
                    release(i)
            for o in node.output:
                if uses.get(o, 0) == 0:
                    release(o)
        for name in sorted(needed - written):  # weights live nodes read directly (MatMul)
            release(name)
    values.clear()
    gc.collect()
    return {
        "opset": opsets.get("", opsets.get("ai.onnx")),
        "nodes": len(live),
        "folded_nodes": len(foldable),
        "initializers": len(needed),
    }
