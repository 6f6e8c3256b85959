"""The baseline for ``make bench-finetune``: fine-tuning written the way the keras.io
transfer-learning guide does it, timed per phase. ``python -m bench.finetune_plain DIR JSON``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main() -> None:
    import keras
    import tensorflow as tf

    folder, settings = sys.argv[1], json.loads(sys.argv[2])
    size, batch = settings["image_size"], settings["batch_size"]
    spec_module = importlib.import_module(settings["keras_module"])
    keras.utils.set_random_seed(0)
    train, val = keras.utils.image_dataset_from_directory(
        folder,
        validation_split=settings["validation_split"],
        subset="both",
        seed=0,
        image_size=(size, size),
        batch_size=batch,
    )
    train = train.map(lambda x, y: (spec_module.preprocess_input(x), y)).prefetch(tf.data.AUTOTUNE)
    val = val.map(lambda x, y: (spec_module.preprocess_input(x), y)).prefetch(tf.data.AUTOTUNE)
    images = sum(int(x.shape[0]) for x, _ in train)
    base = getattr(keras.applications, settings["base"])(
        weights=None, include_top=False, input_shape=(size, size, 3), **settings["base_kwargs"]
    )
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(settings["classes"], activation="softmax")(x)
    model = keras.Model(inputs, outputs)

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.seconds.append(time.perf_counter() - self.started)

    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    phase1 = Timer()
    model.fit(train, validation_data=val, epochs=settings["epochs"], callbacks=[phase1], verbose=0)
    base.trainable = True
    count = int(settings["unfreeze"])
    for layer in base.layers[: len(base.layers) - count]:
        layer.trainable = False
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    model.compile(
        keras.optimizers.Adam(1e-5), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    phase2 = Timer()
    model.fit(
        train,
        validation_data=val,
        epochs=settings["fine_tune_epochs"],
        callbacks=[phase2],
        verbose=0,
    )
    print(
        "RESULT "
        + json.dumps(
            {
                "train_images": images,
                "phase1_epoch_seconds": phase1.seconds,
                "phase2_epoch_seconds": phase2.seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
