"""Keras 3 (TensorFlow backend) -> ONNX with memory bounded by the weights, not 50x them.

Where the stock route's memory goes (``model.export(format="onnx")``, tf2onnx underneath),
measured on ResNet50 (98 MB of weights, 7.6 GB peak): tf2onnx deep-copies the whole graph,
constants included, before each of its optimizers in each pass, and the discarded copies
are reference cycles the garbage collector reaches too late (+4.9 GB; a gc.collect() after
each pass alone brings the peak to 2.3 GB); freezing the variables into a GraphDef (+1.0
GB), grappler's rewrite of it (+0.9 GB), importing it (+0.5 GB) and building the ModelProto
(+0.6 GB) each add copies that grow with the weights. VGG16 was killed at 24 GB.

This route never lets a weight enter TensorFlow's or tf2onnx's graph:

1. The model is traced as ``f(image, *kernels)`` through ``model.stateless_call``, so every
   kernel (rank >= 2: nearly all the bytes) is a graph *input*; only small vectors (biases,
   BatchNorm parameters) are constants. tf2onnx converts a graph with no big constant and
   runs its optimizers on it cheaply (a few MB for any model).
2. Constant per-channel Mul/Add right after a Conv (BatchNorm, residual scales) are folded
   into the Conv as stock tf2onnx does, by rewriting the small graph.
3. The nodes that depend on weights alone (kernel transposes HWIO->OIHW, depthwise
   reshapes, the folded kernel products ...) are evaluated once in numpy, node by node,
   reading each Keras variable only when first needed and freeing intermediates after their
   last use. ONNX Runtime then runs a graph with the stock route's node count, as fast.
4. The resulting initializers are streamed into the .onnx file as extra ``graph`` fields:
   protobuf merges repeated embedded-message fields, so the file parses as one normal
   ModelProto, while no serialised copy of the whole model ever exists in memory.

Peak memory is TensorFlow + the Keras model + about one folded tensor, which keeps the
catalog's models under 2 GB + 4 x their ONNX size (see docs/benchmarks/export.md).

Every catalog family, not only the 13 seed models. tf2onnx's ``from_function`` (what the
stock route calls too) cannot export EfficientNet, EfficientNetV2 or ConvNeXt, 20 of the 40
models, for two causes that are properties of a trace, not of those models; so the trace
is frozen here (``_freeze``) and handed to ``from_graph_def``:

- Tensors a layer computed from its weights at build time are *captured* by the trace.
  Normalization does this with its mean and variance (``finalize_state``), so
  ``stateless_call`` cannot substitute them; ``from_function`` froze their values but also
  made every capture placeholder a graph input, and ONNX Runtime refused to run without
  them ("Required inputs (['normalization_1/Sub/y:0', 'normalization_1/Sqrt/x:0']) are
  missing"). Captures are now constants and the graph's inputs are the image and the
  kernels only (checked); a Normalization with ImageNet statistics exports with them.
- Keras runs grouped convolutions (ConvNeXt's depthwise 7x7) in a nested
  ``tf.function(jit_compile=True)``; grappler never inlines a function marked for XLA, so a
  PartitionedCall stayed in the graph ("No Op registered for PartitionedCall"). The marks
  are dropped and grappler's function optimizer inlines the body: a plain Conv with
  group=C in ONNX. ConvNeXt's exact GELU then needs Erfc, which tf2onnx lacks: lowered to
  1 - Erf.

Measured on this 2-core machine at 64 px, weights made pixel-sensitive, max |logit diff|
against Keras over 8 inputs: EfficientNetB0 1.2e-3 (scale 76), EfficientNetV2B0 2.2e-3
(89), ConvNeXtTiny 4.4e-5 (37); the tolerance is 1e-4 x the scale. At full size (export
benchmark, 2 cores): EfficientNetB0 peak 1.00 GB (bound 2.08), EfficientNetB5 1.49 (2.45),
EfficientNetV2M 1.73 (2.80), ConvNeXtBase 2.14 (3.32); logit error 0.01-0.11 of the
tolerance. More in docs/benchmarks/export.md.
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
    """tf2onnx conversion of f(image, *kernels) -> (logits, probabilities).

    Kernels (rank >= 2, nearly all of the bytes) are graph inputs. Vectors (biases, BatchNorm
    parameters: kilobytes) are baked in as constants, so that tf2onnx's transpose optimizer
    can still push the NHWC<->NCHW transposes through per-channel Mul/Add; with them as
    inputs too, transposes and unfused Mul/Add stay in the graph (InceptionResNetV2 then ran
    7% slower in ONNX Runtime).
    """
    import tensorflow as tf
    import tf2onnx

    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    n_trainable = len(model.trainable_variables)
    fed = [i for i, v in enumerate(variables) if len(v.shape) >= 2]
    baked = {i: v.numpy() for i, v in enumerate(variables) if i not in fed}
    x_spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), input_dtype, name=input_name)
    weight_names = [f"keras_weight_{i}" for i in fed]
    weight_specs = [
        tf.TensorSpec(variables[i].shape, variables[i].dtype, name=n)
        for i, n in zip(fed, weight_names, strict=True)
    ]
    compute_dtype = model.inputs[0].dtype

    @tf.function(input_signature=[x_spec, *weight_specs], autograph=False)
    def forward(x: Any, *kernels: Any) -> Any:
        x = tf.cast(x, compute_dtype)
        if preprocess is not None:
            x = preprocess(x)
        values: list[Any] = [None] * len(variables)
        for i, kernel in zip(fed, kernels, strict=True):
            values[i] = kernel
        for i, array in baked.items():
            values[i] = tf.constant(array)
        # stateless_call substitutes these tensors for the variables: the traced graph
        # reads kernels from placeholders, not from resource variables.
        logits, _ = model.stateless_call(
            values[:n_trainable], values[n_trainable:], x, training=False
        )
        logits = tf.identity(tf.cast(logits, tf.float32), name=output_names[0])
        return logits, tf.identity(tf.nn.softmax(logits, axis=-1), name=output_names[1])

    concrete = forward.get_concrete_function()
    signature = [t.name for t in concrete.inputs[: 1 + len(fed)]]  # the rest: captures
    outputs = [t.name for t in concrete.outputs]
    proto, _ = tf2onnx.convert.from_graph_def(
        _freeze(concrete, signature, outputs),
        name="forward",
        input_names=signature,
        output_names=outputs,
        opset=opset,
        # tf2onnx would name them "image:0", "keras_weight_3:0"
        tensors_to_rename={name: name.split(":")[0] for name in signature},
    )
    _check_inputs(proto.graph, [name.split(":")[0] for name in signature])
    _rename_outputs(proto.graph, output_names)
    return proto, {n: variables[i] for i, n in zip(fed, weight_names, strict=True)}


def _freeze(concrete: Any, inputs: list[str], outputs: list[str]) -> Any:
    """The traced function as a self-contained GraphDef: captures constant, calls inlinable.

    Two things in a trace are not the function's inputs or plain ops, and tf2onnx's
    ``from_function`` mishandles both:

    - Captured tensors. A layer may compute from its weights at build time and use the
      result in ``call``: Normalization reshapes its mean and variance variables into eager
      tensors in ``finalize_state`` (EfficientNet's input normalisation), so the trace
      captures those tensors, not the variables ``stateless_call`` substitutes.
      ``from_function`` freezes their values but also lists every capture placeholder as a
      graph input, and ONNX Runtime then asks for them ("Required inputs
      ['normalization_1/Sub/y:0', ...] are missing"). Here they are frozen to constants and
      only the signature's tensors become inputs.
    - Nested functions marked for XLA. Keras's TensorFlow backend runs grouped convolutions
      (ConvNeXt's depthwise 7x7) as ``tf.function(jit_compile=True)``, and grappler never
      inlines a function marked ``_XlaMustCompile``, so a PartitionedCall, which tf2onnx
      cannot convert, stays in the graph. The marks are dropped (only XLA reads them; the
      graph is not run by TensorFlow again), so grappler's function optimizer inlines the
      body, here, with the optimizations tf2onnx runs (it runs them again, cheaply: no
      weights are in the graph).

    Ops tf2onnx has no converter for are then lowered to ones it has (see ``_lower_erfc``).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    from tf2onnx import tf_loader

    frozen = convert_variables_to_constants_v2(
        concrete, lower_control_flow=False, aggressive_inlining=True
    )
    graph_def = frozen.graph.as_graph_def(add_shapes=True)
    xla_marks = ("_XlaMustCompile", "_jit_compile", "_noinline")
    for node in [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]:
        for mark in xla_marks:
            if mark in node.attr:
                del node.attr[mark]
    for function in graph_def.library.function:
        for mark in xla_marks:
            if mark in function.attr:
                del function.attr[mark]
    with tf.Graph().as_default():
        graph_def = tf_loader.tf_optimize(inputs, outputs, graph_def)
    _lower_erfc(graph_def)
    return graph_def


def _lower_erfc(graph_def: Any) -> None:
    """Rewrite ``Erfc(x)`` as ``1 - Erf(x)`` in an inlined graph.

    Keras's exact GELU (ConvNeXt) is ``0.5 x erfc(-x / sqrt 2)``; tf2onnx converts Erf but not
    Erfc. Where erfc is tiny (x > ~4) the difference loses relative precision, but the GELU
    output there is 0.5 x times it, below float32's resolution of the values around it.
    """
    import tensorflow as tf

    for node in list(graph_def.node):
        if node.op != "Erfc":
            continue
        dtype = node.attr["T"].type
        erf, one = graph_def.node.add(), graph_def.node.add()
        erf.name, erf.op = f"{node.name}/erf", "Erf"
        erf.input.extend(node.input)
        erf.attr["T"].type = dtype
        one.name, one.op = f"{node.name}/one", "Const"
        one.attr["dtype"].type = dtype
        one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(1, dtype=tf.dtypes.as_dtype(dtype)))
        node.op = "Sub"  # the same name: its consumers read the same tensor
        del node.input[:]
        node.input.extend([one.name, erf.name])


def _check_inputs(graph: Any, expected: list[str]) -> None:
    """The converted graph reads the image and the kernels, nothing else."""
    names = [i.name for i in graph.input]
    if names != expected:
        raise RuntimeError(
            f"the converted graph has inputs {names[: len(expected) + 3]}...; expected only "
            f"the image and the {len(expected) - 1} kernels. A captured tensor was not frozen"
        )


def _rename_outputs(graph: Any, names: tuple[str, ...]) -> None:
    """Give the graph outputs stable names (tf2onnx names them after TF's Identity ops)."""
    renames = {out.name: new for out, new in zip(graph.output, names, strict=True)}
    for node in graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    for out in graph.output:
        out.name = renames[out.name]


def _constant_names(graph: Any, weight_names: set[str]) -> set[str]:
    """Tensors computable from weights and initializers alone."""
    const = set(weight_names) | {t.name for t in graph.initializer}
    for node in graph.node:
        if node.input and all(i in const for i in node.input if i):
            const.update(node.output)
    return const


def _fold_affine_into_conv(graph: Any, weight_names: set[str]) -> None:
    """Fold constant per-channel Mul/Add that directly follow a Conv into the Conv.

    Stock tf2onnx does this on its numpy constants (BatchNorm's scale, InceptionResNet's
    residual scale). ONNX Runtime fuses some variants at load time, not all, so it is done
    here, still without touching big data: the scaled kernel becomes a new weight-only Mul
    node that the numpy folding evaluates later; scales and biases are small initializers.
    """
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    const = _constant_names(graph, weight_names)
    absorbed: set[str] = set()
    nodes: list[Any] = []
    for node in graph.node:
        if node.name in absorbed:
            continue
        foldable_conv = (
            node.op_type == "Conv"
            and node.input[1] in const
            and (len(node.input) < 3 or node.input[2] in inits)
        )
        if not foldable_conv:
            nodes.append(node)
            continue
        kernel = node.input[1]
        bias = (
            numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            if len(node.input) > 2
            else None
        )
        while True:
            users = consumers.get(node.output[0], [])
            if len(users) != 1 or node.output[0] in graph_outputs:
                break
            nxt = users[0]
            if nxt.op_type not in ("Mul", "Add") or len(nxt.input) != 2:
                break
            other = nxt.input[1] if nxt.input[0] == node.output[0] else nxt.input[0]
            if other not in inits or nxt.output[0] in graph_outputs:
                break
            value = numpy_helper.to_array(inits[other]).astype(np.float32)
            # a scalar, or per channel in NCHW: [1, C, 1, 1]
            if not (value.size == 1 or (value.ndim == 4 and value.size == value.shape[1])):
                break
            vector = value.reshape(-1)
            if nxt.op_type == "Mul":
                # [C,1,1,1] or [1,1,1,1]: both broadcast against the OIHW kernel.
                scale = f"{node.name}_foldscale{len(nodes)}"
                graph.initializer.append(
                    numpy_helper.from_array(vector.reshape(-1, 1, 1, 1).copy(), scale)
                )
                nodes.append(helper.make_node("Mul", [kernel, scale], [f"{scale}_kernel"]))
                kernel = f"{scale}_kernel"
                bias = None if bias is None else bias * vector
            elif bias is not None or vector.size > 1:
                bias = vector.copy() if bias is None else bias + vector
            else:
                break  # a scalar Add on a Conv without bias: the channel count is unknown here
            absorbed.add(nxt.name)  # the Conv now produces what nxt produced
            for user in consumers.get(nxt.output[0], []):
                for k, i in enumerate(user.input):
                    if i == nxt.output[0]:
                        user.input[k] = node.output[0]
            consumers[node.output[0]] = consumers.pop(nxt.output[0], [])
        if bias is not None:
            bias_name = f"{node.name}_foldbias"
            graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), bias_name))
            del node.input[2:]
            node.input.append(bias_name)
        node.input[1] = kernel
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


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
    _fold_affine_into_conv(graph, set(weight_vars))
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
