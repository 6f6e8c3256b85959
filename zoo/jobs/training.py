"""Fine-tuning: the Keras transfer-learning recipe, as a resumable, cancellable function.

Phase 1 trains a new head (global average pooling, dropout, dense softmax) on the frozen
base, which runs in inference mode (``training=False``). Without augmentation the base's
output never changes during phase 1, so its features are computed once and the head trains
on them alone: the same result for a fraction of the compute. Phase 2 unfreezes the top of
the base (never its BatchNormalization layers, which stay in inference mode), recompiles
with a low learning rate and continues on images. Every epoch writes a checkpoint; a run
that finds one continues from it. Both phases write TensorBoard logs (Keras's callback).

``train`` takes the steps in order, each a method of ``_Run``: data and model (``build``),
``phase1``, ``phase2``, then validation and the saved model (``finish``); which images train
and which validate is the dataset's recorded split (``zoo.jobs.splits``).

Runs in a job's child process (TensorFlow keeps memory); reports through a callback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.catalog import ModelSpec
from zoo.catalog.weights import WeightsSource
from zoo.errors import Cancelled, InvalidArgument
from zoo.jobs.promotion import validate_promote

Report = Callable[[str, dict[str, Any]], None]  # (event type, payload)
TENSORBOARD_DIR = "tensorboard"  # under the job's work directory
ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class FineTuneParams:
    """Training parameters; every field has a default that works for a few hundred images."""

    epochs: int = 5
    fine_tune_epochs: int = 3
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    batch_size: int = 32
    image_size: int | None = None  # default: the base model's input size
    unfreeze: float = 0.2  # below 1: fraction of the base's layers; from 1: a layer count
    augment: bool = False
    validation_split: float = 0.15  # of the dataset (a manifest's split overrides both)
    test_split: float = 0.15
    split_seed: int = 0  # apart from ``seed``: jobs that vary ``seed`` share the test images
    patience: int = 3
    dropout: float = 0.2
    seed: int = 0
    weights: str | None = "imagenet"  # the base's weights: imagenet or none
    mixed_precision: bool = False  # only used on a GPU
    base_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"alpha": 0.35}
    promote: str = "never"  # never, always or if_better: label it stable too (zoo.jobs.promotion)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FineTuneParams:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidArgument(
                f"unknown fine-tuning parameters {unknown}; known: {sorted(known)}"
            )
        if "weights" in values:  # the string form ("none") of a WeightsSource, or None
            values = {**values, "weights": WeightsSource.parse(values["weights"]).keras_arg}
        params = cls(**values)
        params.validate()
        return params

    def validate(self) -> None:
        """InvalidArgument naming the first parameter out of range, with what was received."""
        ranges = [
            ("epochs", 1 <= self.epochs <= 1000, "in 1..1000"),
            ("fine_tune_epochs", 0 <= self.fine_tune_epochs <= 1000, "in 0..1000"),
            ("learning_rate", 0 < self.learning_rate <= 10, "in (0, 10]"),
            ("fine_tune_learning_rate", 0 < self.fine_tune_learning_rate <= 10, "in (0, 10]"),
            ("batch_size", 1 <= self.batch_size <= 1024, "in 1..1024"),
            ("image_size", self.image_size is None or 32 <= self.image_size <= 1024, "in 32..1024"),
            ("unfreeze", 0 <= self.unfreeze <= 10_000, "in [0, 10000]"),
            ("validation_split", 0 < self.validation_split < 1, "in (0, 1)"),
            (
                "test_split",
                0 < self.test_split < 1 - self.validation_split,
                "in (0, 1 - validation_split)",
            ),
            ("split_seed", 0 <= self.split_seed < 2**31, "in 0..2147483647"),
            ("patience", 1 <= self.patience <= 1000, "in 1..1000"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("seed", 0 <= self.seed < 2**31, "in 0..2147483647"),
            ("weights", self.weights in ("imagenet", None), "'imagenet' or none"),
        ]  # comparisons with NaN are false, so NaN fails every range
        for name, ok, expected in ranges:
            if not ok:
                raise InvalidArgument(
                    f"{name} must be {expected}; received {getattr(self, name)!r}"
                )
        validate_promote(self.promote)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainingResult:
    model_path: Path  # the full Keras model (softmax classifier), .keras
    class_names: list[str]
    history: dict[str, list[float]]
    val_accuracy: float
    confusion_matrix: list[list[int]]
    images_per_second: dict[str, float]


Labelled = list[tuple[Path, int]]  # (image path, class index)


@dataclass(frozen=True)
class Checkpoint:
    """Where an interrupted run resumes: the phase and epochs done, their weights, the curves."""

    phase: int  # 1: the head on the frozen base; 2: the top of the base
    epoch: int  # epochs of that phase done
    weights: str  # file name, beside state.json
    history: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "epoch": self.epoch,
            "weights": self.weights,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            phase=int(data["phase"]),
            epoch=int(data["epoch"]),
            weights=str(data["weights"]),
            history={k: [float(x) for x in v] for k, v in dict(data["history"]).items()},
        )

    def epochs_done(self, phase: int) -> int:
        """Epochs of ``phase`` to skip on resume: none unless this is that phase's."""
        return self.epoch if self.phase == phase else 0


class _CheckpointDir:
    """``state.json`` (a ``Checkpoint``) + weights, each written whole then renamed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def load(self) -> Checkpoint | None:
        path = self.directory / "state.json"
        return Checkpoint.from_dict(json.loads(path.read_text())) if path.exists() else None

    def save(self, model: Any, phase: int, epoch: int, history: dict[str, list[float]]) -> None:
        weights = self.directory / f"phase{phase}.weights.h5"
        tmp = self.directory / f".phase{phase}.tmp.weights.h5"
        model.save_weights(tmp)
        os.replace(tmp, weights)
        state = Checkpoint(phase, epoch, weights.name, history)
        tmp_state = self.directory / ".state.json.tmp"
        tmp_state.write_text(json.dumps(state.to_dict()))
        os.replace(tmp_state, self.directory / "state.json")


def finetuned_model(keras: Any, base: Any, n_classes: int, dropout: float, name: str) -> Any:
    """``head(pool(base(image)))``: what a fine-tune job trains and exports.

    ``base`` is a headless catalog model, run in inference mode (also in phase 2); the head
    is a nested model ending in a softmax Dense named ``classifier``, so the saved model
    outputs probabilities (the export serves the Dense's logits and their softmax). No
    augmentation layers: the trainer wraps them around this.
    """
    size = tuple(int(d) for d in base.inputs[0].shape[1:])
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    inputs = keras.Input(size)
    features = pool(base(inputs, training=False))
    head_input = keras.Input((features.shape[-1],))
    head = keras.Model(
        head_input,
        keras.layers.Dense(n_classes, activation="softmax", name="classifier")(
            keras.layers.Dropout(dropout, name="dropout")(head_input)
        ),
        name="head",
    )
    return keras.Model(inputs, head(features), name=name)


def train(
    spec: ModelSpec,
    train_files: Labelled,
    val_files: Labelled,
    class_names: list[str],
    params: FineTuneParams,
    workdir: Path,
    report: Report,
    should_stop: ShouldStop,
    weights_dir: str | None = None,
) -> TrainingResult:
    """Fine-tune ``spec`` on ``train_files``, validating on ``val_files`` ((path, class index)
    pairs); resumes from ``workdir``, and writes TensorBoard logs under ``workdir/tensorboard``.
    """
    if not val_files:
        raise InvalidArgument("the dataset is too small to hold out validation images")
    run = _Run(spec, train_files, val_files, len(class_names), params, workdir, report)
    run.should_stop = should_stop
    run.build(weights_dir)
    run.phase1()
    run.phase2()
    return run.finish(class_names)


class _Run:
    """One fine-tuning run, in the steps ``train`` takes: data and model, phase 1, phase 2,
    validation; a checkpoint after every epoch, and a resume from the last one."""

    should_stop: ShouldStop

    def __init__(
        self,
        spec: ModelSpec,
        train_files: Labelled,
        val_files: Labelled,
        n_classes: int,
        params: FineTuneParams,
        workdir: Path,
        report: Report,
    ) -> None:
        import importlib

        from zoo.catalog.build import import_keras

        self.keras = import_keras()
        import tensorflow as tf

        self.tf = tf
        self.spec, self.params, self.workdir, self.report = spec, params, workdir, report
        self.train_files, self.val_files, self.n_classes = train_files, val_files, n_classes
        self.keras.utils.set_random_seed(params.seed)
        if params.mixed_precision and tf.config.list_physical_devices("GPU"):
            self.keras.mixed_precision.set_global_policy("mixed_float16")
        self.size = params.image_size or spec.input_size
        self.preprocess = importlib.import_module(spec.keras_module).preprocess_input
        self.checkpoint = _CheckpointDir(workdir / "checkpoint")
        self.state = self.checkpoint.load()
        self.history: dict[str, list[float]] = dict(self.state.history) if self.state else {}
        self.speed: dict[str, float] = {}
        self.steps = math.ceil(len(train_files) / params.batch_size)

    # -- data and model ---------------------------------------------------------------------

    def dataset(self, items: Labelled, shuffle: bool) -> Any:
        tf, size, preprocess = self.tf, self.size, self.preprocess
        paths = tf.constant([str(p) for p, _ in items])
        labels = tf.constant([c for _, c in items], dtype=tf.int32)
        data = tf.data.Dataset.from_tensor_slices((paths, labels))
        if shuffle:
            data = data.shuffle(len(items), seed=self.params.seed, reshuffle_each_iteration=True)

        def load(path: Any, label: Any) -> Any:
            image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            image = tf.image.resize(tf.cast(image, tf.float32), (size, size))
            return preprocess(image), label

        data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE)
        return data.batch(self.params.batch_size).prefetch(tf.data.AUTOTUNE)

    def build(self, weights_dir: str | None) -> None:
        from zoo.catalog.build import build_model

        keras, params, size = self.keras, self.params, self.size
        base = build_model(
            self.spec,
            weights=params.weights,
            include_top=False,
            input_shape=(size, size, 3),
            weights_dir=weights_dir,
            **params.base_kwargs,
        )
        if params.weights is None and self.state is None:
            # A random base with BatchNorm's initial statistics (mean 0, variance 1) answers
            # almost the same for every image; statistics of the real images make its features
            # informative, which pretrained weights otherwise provide.
            _calibrate_batchnorm(keras, base, self.dataset(self.train_files, True), batches=8)
        base.trainable = False
        model = finetuned_model(
            keras, base, self.n_classes, params.dropout, f"{self.spec.name.lower()}_finetuned"
        )
        self.base, self.model = base, model
        self.pool, self.head = model.get_layer("pool"), model.get_layer("head")
        self.inputs = model.inputs[0]
        self.features = self.pool.output  # before the trainer calls pool again
        self.trainer = model
        if params.augment:
            augmentation = keras.Sequential(
                [
                    keras.layers.RandomFlip("horizontal", seed=params.seed),
                    keras.layers.RandomRotation(0.1, seed=params.seed),
                    keras.layers.RandomZoom(0.1, seed=params.seed),
                    keras.layers.RandomContrast(0.1, seed=params.seed),
                ],
                name="augmentation",
            )
            self.trainer = keras.Model(
                self.inputs, self.head(self.pool(base(augmentation(self.inputs), training=False)))
            )
        self.train_data = self.dataset(self.train_files, True)
        self.val_data = self.dataset(self.val_files, False)

    # -- the pieces every phase uses --------------------------------------------------------

    def stop_check(self) -> None:
        if self.should_stop():
            raise Cancelled("cancelled by request")

    def compile_for(self, target: Any, rate: float) -> None:
        target.compile(
            self.keras.optimizers.Adam(rate),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )

    def callbacks(self, phase: int, total_epochs: int, model_to_save: Any) -> list[Any]:
        keras = self.keras
        return [
            _progress_callback(self, phase, total_epochs, model_to_save),
            keras.callbacks.EarlyStopping(
                "val_loss", patience=self.params.patience, restore_best_weights=True
            ),
            # train/ and validation/ event files of this phase: TensorBoard's own layout.
            keras.callbacks.TensorBoard(
                log_dir=str(self.workdir / TENSORBOARD_DIR / f"phase{phase}"), write_graph=False
            ),
        ]

    # -- phase 1: the head on the frozen base -----------------------------------------------

    def phase1(self) -> None:
        params, state, head = self.params, self.state, self.head
        resumed_phase = state.phase if state is not None else 0
        if state is not None and state.phase == 1:
            head.load_weights(self.checkpoint.directory / state.weights)
        start_epoch = state.epochs_done(1) if state else 0
        if resumed_phase >= 2 or start_epoch >= params.epochs:
            return
        self.report("log", {"message": f"phase 1: training the head from epoch {start_epoch + 1}"})
        started = time.perf_counter()
        callbacks = self.callbacks(1, params.epochs, head)
        if params.augment:
            self.compile_for(self.trainer, params.learning_rate)
            self.trainer.fit(
                self.train_data,
                validation_data=self.val_data,
                epochs=params.epochs,
                initial_epoch=start_epoch,
                callbacks=callbacks,
                verbose=0,
            )
        else:
            # The frozen base in inference mode gives the same features every epoch.
            n_images = len(self.train_files) + len(self.val_files)
            self.report("log", {"message": f"computing base features of {n_images} images once"})
            extractor = self.keras.Model(self.inputs, self.features)
            train_x, train_y = _features(
                extractor, self.dataset(self.train_files, False), self.stop_check
            )
            val_x, val_y = _features(extractor, self.val_data, self.stop_check)
            self.speed["phase1_feature_images_per_s"] = n_images / (time.perf_counter() - started)
            self.compile_for(head, params.learning_rate)
            head.fit(
                train_x,
                train_y,
                batch_size=params.batch_size,
                validation_data=(val_x, val_y),
                epochs=params.epochs,
                initial_epoch=start_epoch,
                callbacks=callbacks,
                verbose=0,
            )
        self.speed["phase1_images_per_s"] = (
            len(self.train_files) * (params.epochs - start_epoch) / (time.perf_counter() - started)
        )
        self.stop_check()
        self.checkpoint.save(head, 1, params.epochs, self.history)

    # -- phase 2: the top of the base, with a low learning rate -----------------------------

    def phase2(self) -> None:
        params, state = self.params, self.state
        if not params.fine_tune_epochs:
            return
        _unfreeze(self.keras, self.base, params.unfreeze)
        start_epoch = state.epochs_done(2) if state else 0
        if state is not None and state.phase == 2:
            self.model.load_weights(self.checkpoint.directory / state.weights)
        if start_epoch >= params.fine_tune_epochs:
            return
        self.report("log", {"message": f"phase 2: fine-tuning from epoch {start_epoch + 1}"})
        self.compile_for(self.trainer, params.fine_tune_learning_rate)
        started = time.perf_counter()
        self.trainer.fit(
            self.train_data,
            validation_data=self.val_data,
            epochs=params.fine_tune_epochs,
            initial_epoch=start_epoch,
            callbacks=self.callbacks(2, params.fine_tune_epochs, self.model),
            verbose=0,
        )
        self.speed["phase2_images_per_s"] = (
            len(self.train_files)
            * (params.fine_tune_epochs - start_epoch)
            / (time.perf_counter() - started)
        )
        self.stop_check()

    # -- validation, and the saved model ----------------------------------------------------

    def finish(self, class_names: list[str]) -> TrainingResult:
        predictions = []
        truth = []
        for x, y in self.val_data:
            predictions.append(np.argmax(np.asarray(self.model(x, training=False)), axis=1))
            truth.append(np.asarray(y))
        predicted, actual = np.concatenate(predictions), np.concatenate(truth)
        confusion = np.zeros((self.n_classes, self.n_classes), dtype=int)
        for t, p in zip(actual, predicted, strict=True):
            confusion[t, p] += 1
        path = self.workdir / "model.keras"
        self.model.save(path)
        return TrainingResult(
            model_path=path,
            class_names=class_names,
            history=self.history,
            val_accuracy=float(np.mean(predicted == actual)),
            confusion_matrix=confusion.tolist(),
            images_per_second={k: round(v, 1) for k, v in self.speed.items()},
        )


def _progress_callback(run: _Run, phase: int, total_epochs: int, model_to_save: Any) -> Any:
    """Reports progress and epochs, stops at a cancel, and checkpoints after every epoch."""
    keras = run.keras

    class Progress(keras.callbacks.Callback):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.last = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch, self.started = epoch, time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if run.should_stop():
                self.model.stop_training = True
                return
            now = time.perf_counter()
            if now - self.last >= 1.0:
                self.last = now
                done = (batch + 1) / run.steps
                elapsed = now - self.started
                run.report(
                    "progress",
                    {
                        "phase": phase,
                        "epoch": self.epoch + 1,
                        "epochs": total_epochs,
                        "batch": batch + 1,
                        "batches": run.steps,
                        "eta_s": round(elapsed / done * (1 - done), 1) if done else None,
                    },
                )

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            for key, value in metrics.items():
                run.history.setdefault(f"phase{phase}_{key}", []).append(value)
            seconds = time.perf_counter() - self.started
            run.report(
                "epoch",
                {"phase": phase, "epoch": epoch + 1, "seconds": round(seconds, 2), **metrics},
            )
            run.checkpoint.save(model_to_save, phase, epoch + 1, run.history)

    return Progress()


def _features(
    extractor: Any, data: Any, stop_check: Callable[[], None]
) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow as tf

    # One compiled graph for every batch: calling the model eagerly per batch ran at a
    # third of the speed of Keras's own fit loop.
    forward = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)
    xs, ys = [], []
    for x, y in data:
        stop_check()
        xs.append(np.asarray(forward(x)))
        ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)


def _calibrate_batchnorm(keras: Any, base: Any, data: Any, batches: int) -> None:
    """Set every BatchNormalization's moving statistics from ``batches`` of real images."""
    norms = [
        layer
        for layer in base._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # the statistics of this batch replace the initial ones
    for i, (x, _) in enumerate(data):
        if i == batches:
            break
        base(x, training=True)
        for layer in norms:  # later batches average in
            layer.momentum = i / (i + 1)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def _unfreeze(keras: Any, base: Any, unfreeze: float) -> None:
    """Make the top layers of ``base`` trainable, except BatchNormalization layers."""
    layers = base.layers
    count = int(unfreeze) if unfreeze >= 1 else round(unfreeze * len(layers))
    base.trainable = True
    for i, layer in enumerate(layers):
        top = i >= len(layers) - count
        layer.trainable = top and not isinstance(layer, keras.layers.BatchNormalization)
