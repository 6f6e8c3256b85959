"""Numerical verification of an export: the same pixels through Keras and ONNX Runtime.

Logits are compared, not probabilities: a near-uniform softmax hides errors. An export
passes when the largest absolute logit difference is within ``rel_tol`` of the logit scale
(the largest absolute Keras logit) and the top-1 class agrees on every input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import numpy as np

DEFAULT_REL_TOL = 1e-4
# ImageNet's per-channel pixel statistics on a 0..1 scale, as torch-mode preprocessing uses.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
PHOTOS = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")


def photo(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """One of the shipped real photographs as RGB uint8 (H, W, 3), optionally resized."""
    from PIL import Image

    with resources.files("zoo").joinpath(f"data/photos/{name}").open("rb") as f:
        image = Image.open(f).convert("RGB")
        if size is not None:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


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

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


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
    agreement = float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))
    spread = float(np.mean(np.std(reference, axis=0)))
    return Verification(
        inputs=int(reference.shape[0]),
        max_abs_logit_diff=diff,
        logit_scale=scale,
        tolerance=tolerance,
        top1_agreement=agreement,
        logit_spread=spread,
        passed=bool(diff <= tolerance and agreement == 1.0),
    )


def make_pixel_sensitive(model: Any, images: np.ndarray, spread: float = 10.0) -> Any:
    """Make a random-weights (``weights=None``) logits model answer differently per image.

    Such a model answers almost the same whatever the input, so comparing it with its
    export would pass even with wrong preprocessing. This gives every Normalization layer
    that was never adapted (mean 0, variance 1: the identity) ImageNet's RGB statistics, the
    values the pretrained EfficientNets carry, so an export that lost them is caught; sets
    every BatchNormalization's statistics from ``images`` (already preprocessed; momentum 0,
    one training-mode pass) and scales the last kernel so the logits spread by about
    ``spread`` between images. Changes ``model`` in place and returns it.
    """
    import keras

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
    model(images, training=True)
    head = [layer for layer in model.layers if hasattr(layer, "kernel")][-1]
    logits = np.asarray(model(images, training=False))
    observed = float(np.std(logits - logits.mean(axis=0)))
    head.kernel.assign(head.kernel * (spread / max(observed, 1e-12)))
    return model
