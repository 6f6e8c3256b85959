"""The export process: ``python -m zoo.export.child REQUEST.json``.

Runs in a child process because TensorFlow keeps the memory it took after a model is
built and exported; the caller's process must not grow. Speaks JSON lines on stdout:
``{"event": "stage", "stage": ..., "message": ...}`` while working, then one
``{"event": "result", ...}`` (a ``ChildResult``) or ``{"event": "error", "error": <ZooError
class>, "message": ...}``. The request file holds a ``ChildRequest`` (zoo.export.records).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from zoo import errors
from zoo.catalog import Preprocessing, get_spec
from zoo.catalog.build import build_model, import_keras
from zoo.export.records import CatalogSource, ChildRequest, ChildResult, ChildSource
from zoo.export.verify import (
    GIVEN_INPUTS,
    STANDARD_INPUTS,
    compare_logits,
    compare_with_exact,
    float64_copy,
    image_files,
    verification_inputs,
)
from zoo.lifetime import die_with_parent


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def stage(name: str, message: str) -> None:
    emit("stage", stage=name, message=message)


def preprocess_function(keras: Any, mode: str, keras_module: str | None) -> Any:
    """Keras's own preprocess_input for this model (identity for built-in preprocessing)."""
    if mode == Preprocessing.BUILTIN.value:
        return None
    if keras_module is not None:
        import importlib

        return importlib.import_module(keras_module).preprocess_input
    imagenet_utils = keras.applications.imagenet_utils
    return lambda x: imagenet_utils.preprocess_input(x, mode=mode)


def output_layer(model: Any) -> Any:
    """The layer that computes ``model``'s output, looking inside nested models.

    A fine-tuned model ends in a nested head model (``head(base(x))``), whose own last layer
    is the softmax classifier; the outer model's last layer is that head, with no
    ``activation`` of its own.
    """
    last = model.layers[-1]
    while hasattr(last, "layers") and last.layers:
        last = last.layers[-1]
    return last


def to_logits_model(keras: Any, model: Any) -> Any:
    """Make ``model`` output logits: switch a final softmax off (on this process's copy).

    The final softmax may sit in a nested head model (a fine-tuned model); left on, the
    output served as "logits" would be probabilities, and "probabilities" their softmax.
    """
    last = output_layer(model)
    if isinstance(last, keras.layers.Softmax):
        raise errors.InvalidArgument(
            f"the model ends in a Softmax layer {last.name!r}; export needs its input, the "
            "logits: end the model in a Dense layer with activation='softmax' instead"
        )
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "")
    if name == "softmax":
        last.activation = keras.activations.linear
    elif name not in ("linear", ""):
        raise errors.InvalidArgument(
            f"the model's last layer {last.name!r} applies {name!r}; expected a softmax "
            "classifier or logits, so that exported logits and probabilities are meaningful"
        )
    return model


def load_model(keras: Any, source: ChildSource) -> tuple[Any, str, str | None]:
    """The logits model, its preprocessing mode and the Keras module of its preprocess_input."""
    if isinstance(source, CatalogSource):
        spec = get_spec(source.name)
        model = build_model(
            spec,
            weights=source.weights,
            input_shape=source.input_shape,
            allow_download=source.allow_download,
            weights_dir=source.weights_dir,
            classifier_activation=None,
            **source.constructor_kwargs,
        )
        return model, spec.preprocessing.value, spec.keras_module
    model = keras.saving.load_model(source.path, compile=False)
    return to_logits_model(keras, model), source.preprocessing, None


def peak_rss_bytes() -> int:
    """This process's peak resident memory since exec.

    Not getrusage's ru_maxrss: Linux carries that across exec, so a child of a parent that
    held TensorFlow would report the parent's memory as its own. VmHWM belongs to this
    process image alone.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux


def batched(model: Any, x: np.ndarray, batch: int = 1) -> np.ndarray:
    """Keras's logits for ``x``, a few images at a time, as one TensorFlow graph.

    One image at a time: TensorFlow keeps the activation memory of the largest batch it
    ran, and at batch 4 that alone broke the export's memory bound (Xception +0.8 GB). As a
    graph, not eagerly: an eager call of a functional model keeps every intermediate tensor
    alive until the call returns, while the graph executor frees each after its last use.
    EfficientNetB5 at 456 px took +1.4 GB for this step eagerly and +0.2 GB as a graph; its
    export's peak fell from 2.75 GB (over its bound of 2.45) to 1.59 GB.
    """
    import tensorflow as tf

    forward = tf.function(lambda images: model(images, training=False))
    return np.concatenate([np.asarray(forward(x[i : i + batch])) for i in range(0, len(x), batch)])


def run(request: ChildRequest) -> ChildResult:
    started = time.perf_counter()
    keras = import_keras()
    from zoo.export.convert import export_keras_to_onnx

    stage("build", "building the Keras model")
    model, mode, keras_module = load_model(keras, request.source)
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or model.inputs[0].shape[-1] != 3:
        raise errors.InvalidArgument(
            f"export needs one NHWC RGB image input; the model has {model.inputs}"
        )
    height, width = (int(d) for d in model.inputs[0].shape[1:3])
    preprocess = preprocess_function(keras, mode, keras_module)

    stage("reference", "computing Keras reference logits")
    pixels = image_files(request.images, height, width)
    input_set = GIVEN_INPUTS
    if not len(pixels):  # none given, or none decodes
        pixels, input_set = verification_inputs(height, width), STANDARD_INPUTS
    floats = pixels.astype(np.float32)
    uint8_input = request.input == "uint8"
    fed = preprocess(floats.copy()) if preprocess is not None else floats
    reference = batched(model, np.asarray(fed, dtype=np.float32))

    stage("convert", "converting to ONNX")
    output = Path(request.output)
    stats = export_keras_to_onnx(
        model,
        output,
        preprocess=preprocess if uint8_input else None,
        input_dtype="uint8" if uint8_input else "float32",
        opset=request.opset,
    )
    num_classes = int(reference.shape[-1])
    # Kept on disk, not in memory, for a float64 reference if the float32 one disagrees.
    scratch = tempfile.TemporaryDirectory(prefix="zoo-export-")
    weights_file = Path(scratch.name) / "reference.weights.h5"
    model.save_weights(weights_file)
    serialized = keras.saving.serialize_keras_object(model)
    del model
    keras.backend.clear_session()

    with scratch:
        stage("verify", "checking ONNX Runtime against Keras")
        import onnxruntime as ort

        session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        feed = pixels if uint8_input else np.asarray(fed, dtype=np.float32)
        onnx_logits = np.concatenate(
            [session.run(["logits"], {"image": feed[i : i + 1]})[0] for i in range(len(feed))]
        )
        del session
        verification = compare_logits(reference, onnx_logits, request.rel_tol)
        if not verification.passed:
            # Float32 rounding grows with depth (see zoo.export.verify): judge by the exact
            # answer, allowing the error Keras's own float32 logits have.
            stage("verify", "checking against a float64 Keras reference")
            exact_model = float64_copy(serialized, weights_file)
            exact = batched(exact_model, np.asarray(fed, dtype=np.float64))
            del exact_model
            keras.backend.clear_session()
            verification = compare_with_exact(
                reference, exact, onnx_logits, request.rel_tol, request.float32_margin
            )
    return ChildResult(
        preprocessing=mode,
        input_shape=(height, width, 3),
        num_classes=num_classes,
        seconds=time.perf_counter() - started,
        peak_rss_bytes=peak_rss_bytes(),
        keras_version=keras.__version__,
        verification=dataclasses.replace(verification, input_set=input_set).to_dict(),
        opset=int(stats["opset"]),
        nodes=int(stats["nodes"]),
        folded_nodes=int(stats["folded_nodes"]),
        initializers=int(stats["initializers"]),
    )


def main() -> int:
    die_with_parent()
    request = ChildRequest.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    try:
        emit("result", **run(request).to_dict())
    except errors.ZooError as e:
        emit("error", error=type(e).__name__, message=str(e))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
