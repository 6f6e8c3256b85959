"""The test-split report: scikit-learn's figures on the model's own predictions, kept as a
typed record in zoo.json. (That the report equals what the served model answers over gRPC is
checked end to end in test_finetune.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zoo.jobs.evaluation import evaluation_report
from zoo.manifest import Evaluation, InputSpec, Manifest, TensorSpec


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """A real classifier's probabilities on scikit-learn's digits: (truth, probabilities,
    class names, image paths); ten classes, so top-5 applies."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.naive_bayes import GaussianNB

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.3, stratify=digits.target, random_state=0
    )
    model = GaussianNB().fit(x_train, y_train)  # errs, often confidently: ~80 % accurate
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    paths = [f"{names[y]}/{i}.png" for i, y in enumerate(y_test)]
    return y_test, model.predict_proba(x_test), names, paths


def expected_from_sklearn(
    truth: np.ndarray, probabilities: np.ndarray, names: list[str]
) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        top_k_accuracy_score,
    )

    predicted = probabilities.argmax(axis=1)
    report = classification_report(
        truth, predicted, target_names=names, output_dict=True, zero_division=0
    )
    return {
        "accuracy": accuracy_score(truth, predicted),
        "top5": top_k_accuracy_score(truth, probabilities, k=5),
        "per_class": {n: report[n] for n in names},
        "macro": report["macro avg"],
        "weighted": report["weighted avg"],
        "confusion": confusion_matrix(truth, predicted).tolist(),
    }


def report_figures(evaluation: Evaluation) -> dict[str, Any]:
    def as_sklearn(c: Any) -> dict[str, float]:
        return {"precision": c.precision, "recall": c.recall, "f1-score": c.f1,
                "support": c.support}  # fmt: skip

    return {
        "accuracy": evaluation.accuracy,
        "top5": evaluation.top5_accuracy,
        "per_class": {c.name: as_sklearn(c) for c in evaluation.classes},
        "macro": as_sklearn(evaluation.macro),
        "weighted": as_sklearn(evaluation.weighted),
        "confusion": [list(row) for row in evaluation.confusion_matrix],
    }


def test_the_report_is_scikit_learns_on_the_same_predictions(predictions) -> None:
    truth, probabilities, names, paths = predictions
    evaluation = evaluation_report("stratified-v0.15-t0.3-s0", truth, probabilities, names, paths)
    assert report_figures(evaluation) == expected_from_sklearn(truth, probabilities, names)
    assert 0.5 < evaluation.accuracy < 0.95  # a model that errs: the lists below are not empty
    assert evaluation.images == len(truth) and evaluation.split == "stratified-v0.15-t0.3-s0"

    # the most confused pairs are the largest off-diagonal cells, largest first (ties: in
    # class order)
    matrix = np.array(evaluation.confusion_matrix)
    cells = [(-matrix[t, p], t, p) for t in range(10) for p in range(10) if t != p]
    largest = [(int(-n), names[t], names[p]) for n, t, p in sorted(cells)[:10]]
    assert [(p.count, p.true_label, p.predicted_label) for p in evaluation.most_confused] == largest

    # the worst mistakes: wrong, with the highest confidence in the wrong answer first (ties:
    # by path; naive Bayes is certain of many of its mistakes)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != truth)
    top = sorted(wrong, key=lambda i: (-probabilities[i, predicted[i]], paths[i]))[:10]
    assert [m.path for m in evaluation.worst_mistakes] == [paths[i] for i in top]
    first = evaluation.worst_mistakes[0]
    i = top[0]
    assert (first.true_label, first.predicted_label) == (names[truth[i]], names[predicted[i]])
    assert first.confidence == pytest.approx(probabilities[i].max())


def test_no_top5_with_five_classes_or_fewer(predictions) -> None:
    truth, probabilities, names, paths = predictions
    keep = truth < 5
    five = probabilities[keep][:, :5]
    evaluation = evaluation_report("s", truth[keep], five, names[:5], list(np.array(paths)[keep]))
    assert evaluation.top5_accuracy is None
    assert len(evaluation.classes) == 5


def test_the_report_travels_in_zoo_json_and_back(predictions) -> None:
    truth, probabilities, names, paths = predictions
    evaluation = evaluation_report("s", truth, probabilities, names, paths)
    manifest = Manifest(
        input=InputSpec("image", "UINT8", (-1, 32, 32, 3)),
        outputs=(TensorSpec("probabilities", "FP32", (-1, 10)),),
        evaluation=evaluation,
    )
    text = json.dumps(manifest.to_dict())
    back = Manifest.from_dict(json.loads(text))
    assert back.evaluation == evaluation
    assert back.to_dict() == manifest.to_dict()
    assert Manifest.from_dict({**manifest.to_dict(), "evaluation": None}).evaluation is None


READ_EVENTS = """
import json, sys
from pathlib import Path
import tensorflow as tf

found = {}
for path in sorted(Path(sys.argv[1]).rglob("events.out.tfevents.*")):
    run = path.parent.relative_to(sys.argv[1]).as_posix()
    for event in tf.compat.v1.train.summary_iterator(str(path)):
        for value in event.summary.value:
            number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
            found.setdefault(run, {}).setdefault(value.tag, []).append([event.step, number])
print(json.dumps(found))
"""


def read_tensorboard(folder: Path) -> dict[str, dict[str, list[list[float]]]]:
    """{run folder: {tag: [[step, value], ...]}} of every event file, read in a child process
    with TensorFlow's own reader."""
    done = subprocess.run(
        [sys.executable, "-c", READ_EVENTS, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_finetune_result_is_a_record_through_the_store(predictions, tmp_path: Path) -> None:
    from zoo.jobs.records import FineTuneResult, JobKind, JobState
    from zoo.jobs.store import JobStore

    truth, probabilities, names, paths = predictions
    result = FineTuneResult(
        model="digits", version=3, val_accuracy=0.9, confusion_matrix=[[9, 1], [0, 10]],
        class_names=["0", "1"], images_per_second={"phase1_images_per_s": 120.5},
        verification={"passed": True}, split="manifest",
        evaluation=evaluation_report("manifest", truth, probabilities, names, paths),
    )  # fmt: skip
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = store.create(JobKind.FINETUNE, {"base_model": "MobileNetV2"})
    store.set_state(job.id, JobState.RUNNING)
    store.set_state(job.id, JobState.SUCCEEDED, result=result.to_dict())
    stored = store.get(job.id)
    assert stored.finetune_result() == result
    assert json.loads(json.dumps(stored.to_dict()))["result"]["evaluation"]["split"] == "manifest"
