"""The test-split report of a fine-tuned version, computed by the exported ONNX model itself.

The artifact that will be served is judged, not the Keras model it came from: each test image
is decoded and resized by ``zoo.images.decode_image`` (what Classify does) and run through the
``model.onnx`` about to be published, in ONNX Runtime. The figures are scikit-learn's
(``classification_report``, ``confusion_matrix``, ``top_k_accuracy_score``), so the report
says what any reader of those functions expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.images import decode_image
from zoo.manifest import ClassMetrics, ConfusedPair, Evaluation, Manifest, Misclassified

MAX_PIXELS = 40_000_000  # the dataset store's own cap on an image's pixels
SHOWN = 10  # most confused pairs and worst mistakes kept in the report


def onnx_probabilities(
    model_file: Path, manifest: Manifest, images: Sequence[Path]
) -> tuple[np.ndarray, list[int]]:
    """Class probabilities of each image the server could decode, and their positions in
    ``images`` (Classify refuses some formats a dataset may hold, such as BMP and GIF)."""
    import onnxruntime as ort

    from zoo.errors import InvalidArgument

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    height, width = manifest.input.shape[1], manifest.input.shape[2]
    names = [o.name for o in manifest.outputs]
    output = "probabilities" if "probabilities" in names else names[-1]
    pixels, kept = [], []
    for i, path in enumerate(images):
        try:
            pixels.append(decode_image(path.read_bytes(), (height, width), MAX_PIXELS, i))
        except InvalidArgument:
            continue
        kept.append(i)
    rows = []
    batch = manifest.max_batch_size
    for start in range(0, len(pixels), batch):
        chunk = np.stack(pixels[start : start + batch])
        (result,) = session.run([output], {manifest.input.name: chunk})
        rows.append(np.asarray(result, dtype=np.float64))
    classes = manifest.outputs[-1].shape[-1]
    return (np.concatenate(rows) if rows else np.zeros((0, classes))), kept


def evaluation_report(
    split: str,
    truth: Sequence[int],
    probabilities: np.ndarray,
    class_names: Sequence[str],
    paths: Sequence[str],
) -> Evaluation:
    """The report on ``probabilities`` (one row per image) against the true class indices."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        top_k_accuracy_score,
    )

    labels = list(range(len(class_names)))
    actual = np.asarray(truth, dtype=int)
    predicted = np.argmax(probabilities, axis=1)
    report: dict[str, Any] = classification_report(
        actual, predicted, labels=labels, output_dict=True, zero_division=0
    )

    def metrics(name: str, values: dict[str, Any]) -> ClassMetrics:
        return ClassMetrics(
            name,
            float(values["precision"]),
            float(values["recall"]),
            float(values["f1-score"]),
            int(values["support"]),
        )

    matrix = confusion_matrix(actual, predicted, labels=labels)
    pairs = sorted(
        ((-int(matrix[t, p]), t, p) for t in labels for p in labels if t != p and matrix[t, p]),
    )[:SHOWN]
    wrong = [i for i in range(len(actual)) if predicted[i] != actual[i]]
    confidence = [float(probabilities[i, predicted[i]]) for i in range(len(actual))]
    wrong.sort(key=lambda i: (-confidence[i], paths[i]))
    return Evaluation(
        split=split,
        images=len(actual),
        accuracy=float(accuracy_score(actual, predicted)),
        top5_accuracy=(
            float(top_k_accuracy_score(actual, probabilities, k=5, labels=labels))
            if len(labels) > 5
            else None
        ),
        classes=tuple(metrics(name, report[str(i)]) for i, name in enumerate(class_names)),
        macro=metrics("macro avg", report["macro avg"]),
        weighted=metrics("weighted avg", report["weighted avg"]),
        confusion_matrix=tuple(tuple(int(x) for x in row) for row in matrix),
        most_confused=tuple(
            ConfusedPair(class_names[t], class_names[p], -negative) for negative, t, p in pairs
        ),
        worst_mistakes=tuple(
            Misclassified(
                paths[i], class_names[actual[i]], class_names[predicted[i]], confidence[i]
            )
            for i in wrong[:SHOWN]
        ),
    )


def evaluate_onnx(
    model_file: Path,
    manifest: Manifest,
    split: str,
    test_files: Sequence[tuple[Path, int]],
    root: Path,
    class_names: Sequence[str],
) -> Evaluation | None:
    """The report of ``model_file`` on the test images, paths shown relative to ``root``;
    None when Classify could decode none of them (a dataset of BMP or GIF images)."""
    probabilities, kept = onnx_probabilities(model_file, manifest, [p for p, _ in test_files])
    if not kept:
        return None
    return evaluation_report(
        split,
        [test_files[i][1] for i in kept],
        probabilities,
        class_names,
        [test_files[i][0].relative_to(root).as_posix() for i in kept],
    )


def write_tensorboard(directory: Path, evaluation: Evaluation) -> None:
    """The report's figures as TensorBoard scalars (step 0) in ``directory``."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        tf.summary.scalar("test/accuracy", evaluation.accuracy, step=0)
        if evaluation.top5_accuracy is not None:
            tf.summary.scalar("test/top5_accuracy", evaluation.top5_accuracy, step=0)
        for average in (evaluation.macro, evaluation.weighted):
            key = average.name.replace(" avg", "")
            tf.summary.scalar(f"test/{key}_f1", average.f1, step=0)
        for c in evaluation.classes:
            tf.summary.scalar(f"test_class/{c.name}/precision", c.precision, step=0)
            tf.summary.scalar(f"test_class/{c.name}/recall", c.recall, step=0)
    writer.close()
