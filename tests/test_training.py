"""What fine-tuning trains and what it leaves alone, on a small base with BatchNormalization.

Phase 1 trains the head on a frozen base; phase 2 trains the top ``unfreeze`` layers of the
base except its BatchNormalization layers, which keep their statistics and their scale and
shift. Augmentation is on, so phase 1 runs through the base rather than on cached features.
Checked on the weights themselves (MobileNetV2 alpha 0.35 at 32 px, random weights),
not on accuracy, so a base left trainable in phase 1, or BatchNorm unfrozen in phase 2, fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.jobs.training import FineTuneParams, train

UNFREEZE = 8


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, int]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    root = tmp_path_factory.mktemp("digits")
    out = []
    for label in (0, 1):
        for i, image in enumerate(data.images[data.target == label][:16]):
            path = root / f"{label}-{i}.png"
            pixels = (image * 16).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32)).convert("RGB").save(path)
            out.append((path, label))
    return out


def trained_base(files: list[tuple[Path, int]], workdir: Path, fine_tune_epochs: int):
    """Fine-tune, then return the base model inside the saved classifier."""
    import keras

    params = FineTuneParams(
        epochs=1, fine_tune_epochs=fine_tune_epochs, unfreeze=UNFREEZE, batch_size=8,
        image_size=32, weights=None, fine_tune_learning_rate=0.05, patience=5, augment=True,
        base_kwargs={"alpha": 0.35},
    )  # fmt: skip
    held_out = files[::5]  # every class: the files alternate 0, 1 in blocks of 16
    result = train(
        zoo.get_spec("MobileNetV2"), [f for f in files if f not in held_out], held_out,
        ["0", "1"], params, workdir, report=lambda kind, payload: None, should_stop=lambda: False,
    )  # fmt: skip
    model = keras.saving.load_model(result.model_path)
    (base,) = [m for m in model.layers if isinstance(m, keras.Model) and m.name != "head"]
    return base


def weights_of(base) -> list[list[np.ndarray]]:
    """Each layer's weights, by position (auto-generated names differ between builds)."""
    return [[np.asarray(w) for w in layer.weights] for layer in base.layers]


def test_phase1_freezes_the_base_and_phase2_spares_batchnorm(files, tmp_path: Path) -> None:
    import keras

    from zoo.catalog.build import build_model

    head_only = trained_base(files, tmp_path / "a", fine_tune_epochs=0)
    tuned = trained_base(files, tmp_path / "b", fine_tune_epochs=1)
    keras.utils.set_random_seed(0)  # train() seeds the same way before building the base
    initial = build_model(
        zoo.get_spec("MobileNetV2"), weights=None, include_top=False, input_shape=(32, 32, 3),
        alpha=0.35,
    )  # fmt: skip
    before, after_1, after_2 = weights_of(initial), weights_of(head_only), weights_of(tuned)
    names = [layer.name for layer in initial.layers]
    assert [layer.name for layer in tuned.layers][-UNFREEZE:] == names[-UNFREEZE:]
    batchnorm = {
        k for k, layer in enumerate(initial.layers)
        if isinstance(layer, keras.layers.BatchNormalization)
    }  # fmt: skip
    top = set(range(len(names) - UNFREEZE, len(names)))

    # Phase 1: every layer's weights are as built, except BatchNorm's moving statistics
    # (calibrated on the images, as a random base needs); BatchNorm's scale/shift stay.
    for k, name in enumerate(names):
        for i, (b, a) in enumerate(zip(before[k], after_1[k], strict=True)):
            calibrated = k in batchnorm and i >= 2  # moving mean, variance
            if not calibrated:
                np.testing.assert_array_equal(a, b, err_msg=f"phase 1 changed {name}[{i}]")

    # Phase 2: the top layers with weights trained, all others (and every BatchNorm) not.
    changed = set()
    for k, name in enumerate(names):
        for i, (a1, a2) in enumerate(zip(after_1[k], after_2[k], strict=True)):
            if not np.allclose(a1, a2, rtol=0, atol=1e-7):
                changed.add(k)
                assert k in top, f"phase 2 changed {name}[{i}] below the top {UNFREEZE}"
                assert k not in batchnorm, f"phase 2 changed BatchNorm {name}[{i}]"
    trainable_top = {k for k in top if before[k] and k not in batchnorm}
    assert trainable_top and changed == trainable_top
