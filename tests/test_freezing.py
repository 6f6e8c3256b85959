"""Fine-tuning's freezing rules, at the seam train() builds its model with.

What zoo/jobs/training.py intends: phase 1 trains the new head on a base frozen as a whole
(`base.trainable = False`); phase 2 (`_unfreeze`) makes the top ``unfreeze`` layers of the
base trainable, a count from 1 up or a fraction of the layers below 1, except its
BatchNormalization layers, which keep their scale, shift and moving statistics; and
`finetuned_model` runs the base in inference mode in both phases. Checked on a small base with
BatchNormalization (MobileNetV2, alpha 0.35, 32 px, random weights) by which weights one
training step changes, and the layer names written out here, not derived from the code.
tests/test_training.py checks the same rules through a whole train() run.
"""

from __future__ import annotations

import numpy as np
import pytest

from zoo.jobs.training import _unfreeze, finetuned_model

# MobileNetV2's last 12 layers (of 154): block_15_add, block_16_expand, block_16_expand_BN,
# block_16_expand_relu, block_16_depthwise, block_16_depthwise_BN, block_16_depthwise_relu,
# block_16_project, block_16_project_BN, Conv_1, Conv_1_bn, out_relu.
TOP_8 = ["block_16_depthwise", "block_16_depthwise_BN", "block_16_depthwise_relu",
         "block_16_project", "block_16_project_BN", "Conv_1", "Conv_1_bn", "out_relu"]  # fmt: skip
TRAINED_IN_TOP_8 = {"block_16_depthwise", "block_16_project", "Conv_1"}  # the BN ones are not


def digits() -> tuple[np.ndarray, np.ndarray]:
    """8 images of 0s and 1s from scikit-learn's digits, at 32 px in [-1, 1], and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = data.target < 2
    images = data.images[keep][:8] * 16  # 8x8 in 0..16 -> 0..255
    x = np.repeat(np.kron(images, np.ones((4, 4)))[..., None], 3, axis=-1).astype(np.float32)
    return x / 127.5 - 1.0, data.target[keep][:8]


def small_base():
    """The base, with BatchNorm statistics of the images (as train() calibrates a random one:
    with the initial mean 0 and variance 1 the top ReLU6 layers saturate, and no gradient
    reaches the top convolutions)."""
    import keras

    import zoo
    from zoo.catalog.build import build_model

    keras.utils.set_random_seed(0)
    base = build_model(
        zoo.get_spec("MobileNetV2"), weights=None, include_top=False, input_shape=(32, 32, 3),
        alpha=0.35,
    )  # fmt: skip
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    base(digits()[0], training=True)
    for layer in norms:
        layer.momentum = 0.99
    return base


def layers_with_trainable_weights(model) -> set[str]:
    """The layers (by name, nested layers included) whose weights an optimizer would change."""
    names = set()
    for layer in model._flatten_layers(include_self=False):
        if layer.trainable_weights and not layer._layers:  # a leaf layer
            names.add(layer.name)
    return names


def weights_by_layer(model) -> dict[str, list[np.ndarray]]:
    return {
        layer.name: [np.array(w.numpy()) for w in layer.weights]
        for layer in model._flatten_layers(include_self=False)
        if layer.weights and not layer._layers
    }


def one_step(model) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """Weights before and after one SGD step on 8 real digit images (two classes)."""
    import keras

    x, y = digits()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    before = weights_by_layer(model)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return before, weights_by_layer(model)


def changed(before, after) -> set[str]:
    return {
        name
        for name, weights in before.items()
        if any(not np.array_equal(b, a) for b, a in zip(weights, after[name], strict=True))
    }


@pytest.mark.parametrize(
    ("unfreeze", "expected_top"),
    [
        (8, TOP_8),
        (0.05, TOP_8),  # round(0.05 * 154) = 8 layers
        (3, TOP_8[-3:]),
        (1, ["out_relu"]),  # 1 is a count of one layer, not a fraction of all
        (1.0, ["out_relu"]),
    ],
)
def test_phase2_unfreezes_the_top_layers_except_batchnorm(unfreeze, expected_top) -> None:
    import keras

    base = small_base()
    base.trainable = False  # phase 1
    _unfreeze(keras, base, unfreeze)
    assert base.trainable
    trainable = [layer.name for layer in base.layers if layer.trainable]
    assert trainable == [n for n in expected_top if not n.endswith(("_BN", "_bn"))]
    assert layers_with_trainable_weights(base) == TRAINED_IN_TOP_8 & set(expected_top)
    assert all(
        not layer.trainable
        for layer in base.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )


def test_phase1_trains_the_head_and_leaves_the_base_as_it_was() -> None:
    import keras

    base = small_base()
    base.trainable = False  # what train() does before phase 1
    model = finetuned_model(keras, base, n_classes=2, dropout=0.2, name="m")
    assert layers_with_trainable_weights(model) == {"classifier"}
    before, after = one_step(model)
    assert changed(before, after) == {"classifier"}  # BatchNorm statistics included


def test_phase2_trains_the_top_and_batchnorm_stays_in_inference_mode() -> None:
    import keras

    base = small_base()
    base.trainable = False
    model = finetuned_model(keras, base, n_classes=2, dropout=0.2, name="m")
    _unfreeze(keras, base, 8)
    assert layers_with_trainable_weights(model) == TRAINED_IN_TOP_8 | {"classifier"}
    before, after = one_step(model)
    # The moving mean and variance of every BatchNorm, in the top layers too, do not move:
    # the base runs in inference mode, so a batch's statistics never replace them.
    assert changed(before, after) == TRAINED_IN_TOP_8 | {"classifier"}


def test_the_head_is_a_softmax_classifier_on_pooled_features() -> None:
    import keras

    base = small_base()
    model = finetuned_model(keras, base, n_classes=3, dropout=0.5, name="mobilenetv2_finetuned")
    assert model.name == "mobilenetv2_finetuned"
    assert tuple(model.inputs[0].shape[1:]) == (32, 32, 3)
    head = model.get_layer("head")
    classifier = head.get_layer("classifier")
    assert classifier.units == 3 and classifier.activation is keras.activations.softmax
    assert head.get_layer("dropout").rate == 0.5
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    probabilities = np.asarray(model(x, training=False))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # pooled features: the base's output averaged over height and width, then the head
    pooled = np.asarray(base(x, training=False)).mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(head(pooled, training=False)), probabilities, atol=1e-5)
