"""Numerical verification of an export: the same pixels through Keras and ONNX Runtime.

Logits are compared, not probabilities: a near-uniform softmax hides errors. An export
passes when the largest absolute logit difference is within ``rel_tol`` of the logit scale
(the largest absolute Keras logit) and the top-1 class agrees on every input.

Where that fails with the top-1 class agreeing, the judge is the exact answer: the same
model and weights in float64 (``float64_copy``). Float32 rounding, not the conversion, is
then what a deep network amplifies layer by layer, and Keras's own float32 logits carry it
too. The export passes when ONNX Runtime's logits are no farther from the exact ones than
``FLOAT32_MARGIN`` times Keras's own float32 error (or ``rel_tol`` of the scale, whichever
is larger). ResNet152 at 224 px, weights made pixel-sensitive: ONNX - Keras 0.0198 against
1e-4 x scale = 0.0099, but Keras float32 - exact 0.0149 and ONNX - exact 0.0115: the export
is nearer the exact logits than Keras is. The relative float32 error of Keras grew with
depth, 8.5e-7 after conv2, 2.4e-6 after conv3, 1.5e-5 after conv4 (36 blocks) and 4.3e-4
after conv5. A planted error (another mode's preprocessing, channels swapped) is hundreds of
times over either tolerance in every family (tests/test_export.py).

Top-1 must agree on every input, except where the reference itself cannot tell: an input
whose top class in ONNX Runtime scores, in the reference, within the tolerance of the
reference's top class (its top-1/top-2 gap is inside the numeric tolerance) is a tie, not a
disagreement. With random weights EfficientNetB0's logits reach 1e5 and Keras's float32 is
7e4 from the exact ones, so one noise input's top class flipped within float32 error and
refused an export that was, logit for logit, inside the tolerance. A real error moves logits
by far more than the tolerance, so it fails on the logits whatever the classes do; a flip
with a gap over the tolerance fails too (``top1_ties`` counts the ties accepted).

The inputs are noise, smooth noise and the shipped photographs (``verification_inputs``),
unless the caller has images of the model's own task: a fine-tune job verifies on held-out
images of its dataset (``image_files``). Conversion errors show on any image, but a network
is only well conditioned on inputs like those its statistics came from. A random-weights
EfficientNetB0 whose BatchNorm was calibrated on digits (what a ``weights=none`` job does)
computed its pooled features on digits with a float32 error of 2e-5 of their scale, while on
noise the features reached 4e4 and Keras float32 was up to 50% from the exact values: its
exports failed verification at random, by float32 chaos that says nothing of the export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_REL_TOL = 1e-4
# Two float32 computations of one network round differently but about equally (ONNX - exact
# was 0.77x Keras - exact on ResNet152); 2x leaves room for that without admitting a real
# error, which is hundreds of times larger.
FLOAT32_MARGIN = 2.0
# ImageNet's per-channel pixel statistics on a 0..1 scale, as torch-mode preprocessing uses.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
PHOTOS = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")
STANDARD_INPUTS = "standard"  # noise, smooth noise and PHOTOS
GIVEN_INPUTS = "images"  # images the caller named (a fine-tune's held-out images)


def photo(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """One of the shipped real photographs as RGB uint8 (H, W, 3), optionally resized."""
    from PIL import Image

    with resources.files("zoo").joinpath(f"data/photos/{name}").open("rb") as f:
        image = Image.open(f).convert("RGB")
        if size is not None:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def image_files(paths: Sequence[str | Path], height: int, width: int) -> np.ndarray:
    """uint8 NHWC batch of the image files among ``paths`` that decode, resized (bilinear);
    files that do not decode are skipped (an empty batch when none does)."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
                images.append(np.asarray(rgb, dtype=np.uint8))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
            continue
    return np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)


def verification_inputs(height: int, width: int, n_random: int = 4, seed: int = 0) -> np.ndarray:
    """uint8 NHWC batch: uniform noise, smooth noise and the shipped real photographs."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=(n_random // 2, height, width, 3), dtype=np.uint8)
    # Smooth noise: coarse random grids upsampled, closer to natural image statistics.
    coarse = rng.integers(0, 256, size=(n_random - n_random // 2, 8, 8, 3)).astype(np.float32)
    rows = np.linspace(0, 7, height).round().astype(int)
    cols = np.linspace(0, 7, width).round().astype(int)
    smooth = coarse[:, rows][:, :, cols].astype(np.uint8)
    photos = np.stack([photo(p, (height, width)) for p in PHOTOS])
    return np.concatenate([noise, smooth, photos])


@dataclass(frozen=True)
class Verification:
    inputs: int
    max_abs_logit_diff: float
    logit_scale: float
    tolerance: float
    top1_agreement: float
    logit_spread: float  # mean std of each logit across inputs: ~0 means a degenerate reference
    passed: bool
    # Set when judged against the exact (float64) logits: ONNX's and Keras's distance to them.
    max_abs_exact_diff: float | None = None
    keras_float32_error: float | None = None
    top1_ties: int = 0  # inputs whose top-1 differs within the tolerance (accepted)
    input_set: str = STANDARD_INPUTS  # or GIVEN_INPUTS

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def top1_checks(
    reference: np.ndarray, candidate: np.ndarray, tolerance: float
) -> tuple[float, int, bool]:
    """(agreement, ties, all agree or tie): a disagreement is a tie when the candidate's top
    class scores, in ``reference``, within ``tolerance`` of the reference's top class."""
    chosen = candidate.argmax(-1)
    agree = reference.argmax(-1) == chosen
    picked = np.take_along_axis(reference, chosen[:, None], axis=-1)[:, 0]
    tie = ~agree & (reference.max(-1) - picked <= tolerance)
    return float(np.mean(agree)), int(np.sum(tie)), bool(np.all(agree | tie))


def compare_logits(
    reference: np.ndarray, candidate: np.ndarray, rel_tol: float = DEFAULT_REL_TOL
) -> Verification:
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    diff = float(np.max(np.abs(reference - candidate)))
    scale = float(np.max(np.abs(reference)))
    tolerance = rel_tol * max(scale, 1e-12)
    agreement, ties, classes_ok = top1_checks(reference, candidate, tolerance)
    spread = float(np.mean(np.std(reference, axis=0)))
    return Verification(
        inputs=int(reference.shape[0]),
        max_abs_logit_diff=diff,
        logit_scale=scale,
        tolerance=tolerance,
        top1_agreement=agreement,
        logit_spread=spread,
        passed=bool(diff <= tolerance and classes_ok),
        top1_ties=ties,
    )


def compare_with_exact(
    reference: np.ndarray,
    exact: np.ndarray,
    candidate: np.ndarray,
    rel_tol: float = DEFAULT_REL_TOL,
    margin: float = FLOAT32_MARGIN,
) -> Verification:
    """Judge ``candidate`` by its distance to ``exact`` (float64 logits of the same model).

    ``reference`` is Keras's float32 answer; its distance to ``exact`` is what float32 costs
    this network on these inputs. The tolerance is ``margin`` times that, or ``rel_tol`` of
    the logit scale, whichever is larger; top-1 must agree with the exact answer, or tie in
    it within the tolerance.
    """
    exact = np.asarray(exact, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    base = compare_logits(reference, candidate, rel_tol)
    if exact.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {exact.shape} vs {candidate.shape}")
    keras_error = float(np.max(np.abs(np.asarray(reference, dtype=np.float64) - exact)))
    exact_diff = float(np.max(np.abs(candidate - exact)))
    tolerance = max(base.tolerance, margin * keras_error)
    agreement, ties, classes_ok = top1_checks(exact, candidate, tolerance)
    return dataclasses.replace(
        base,
        tolerance=tolerance,
        top1_agreement=agreement,
        top1_ties=ties,
        passed=bool(exact_diff <= tolerance and classes_ok),
        max_abs_exact_diff=exact_diff,
        keras_float32_error=keras_error,
    )


def float64_copy(serialized: dict[str, Any], weights_file: str | Path) -> Any:
    """A model rebuilt in float64 from ``keras.saving.serialize_keras_object(model)``.

    Every layer's dtype policy (and the input's dtype) in a serialized model is float32
    unless mixed precision was set; rewritten to float64, the same layers are rebuilt with
    float64 variables and computation. Loading the weights file (``model.save_weights``)
    casts the values; Normalization recomputes its statistics tensors as it loads.
    """
    import json

    import keras

    text = json.dumps(serialized).replace('"float32"', '"float64"')
    copy = keras.saving.deserialize_keras_object(json.loads(text))
    copy.load_weights(weights_file)
    return copy


def make_pixel_sensitive(model: Any, images: np.ndarray, spread: float = 10.0) -> Any:
    """Make a random-weights (``weights=None``) logits model answer differently per image.

    Such a model answers almost the same whatever the input, so comparing it with its
    export would pass even with wrong preprocessing. This gives every Normalization layer
    that was never adapted (mean 0, variance 1: the identity) ImageNet's RGB statistics, the
    values the pretrained EfficientNets carry, so an export that lost them is caught; sets
    every BatchNormalization's statistics from ``images`` (already preprocessed; momentum 0,
    one training-mode pass over all of them) and scales the last kernel so the logits spread
    by about ``spread`` between images. Changes ``model`` in place and returns it.

    The passes run as TensorFlow graphs: eagerly, every intermediate tensor of the batch
    stays alive until the call returns, and EfficientNetB6 and B7 ran out of memory at 528
    and 600 px. Not in smaller batches averaged: the mean of per-batch variances misses the
    spread between the batches' means, and EfficientNetB6 so calibrated amplified float32
    rounding until Keras's own float32 logits were 55 from the float64 ones.
    """
    import keras
    import tensorflow as tf

    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
        adapted = getattr(layer, "adapt_mean", None)
        never_adapted = (
            adapted is not None and adapted.shape == (3,) and not np.any(np.asarray(adapted))
        )
        if isinstance(layer, keras.layers.Normalization) and never_adapted:
            layer.adapt_mean.assign(IMAGENET_MEAN_RGB)
            layer.adapt_variance.assign(np.square(IMAGENET_STD_RGB))
            layer.finalize_state()  # call() reads tensors computed from these, not them
    images = tf.constant(images)
    tf.function(lambda x: model(x, training=True))(images)
    head = [layer for layer in model.layers if hasattr(layer, "kernel")][-1]
    logits = np.asarray(tf.function(lambda x: model(x, training=False))(images))
    observed = float(np.std(logits - logits.mean(axis=0)))
    head.kernel.assign(head.kernel * (spread / max(observed, 1e-12)))
    return model
