"""Helpers shared by tests (import as `from helpers import ...`)."""

from __future__ import annotations

import importlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

POSTGRES = os.environ.get("ZOO_TEST_POSTGRES_URL")


@contextmanager
def postgres_job_store() -> Iterator[Any]:
    """A JobStore on a new database of the test PostgreSQL server, dropped afterwards.

    Skips without a server, but fails under CI=true: CI always provides one (.ci/run), and a
    skip there would hide the PostgreSQL path.
    """
    import pytest
    from sqlalchemy import create_engine, text

    from zoo.jobs.store import JobStore

    if not POSTGRES:
        if os.environ.get("CI"):
            pytest.fail("CI=true but ZOO_TEST_POSTGRES_URL is not set (.ci/postgres.sh start)")
        pytest.skip("no PostgreSQL server given: set ZOO_TEST_POSTGRES_URL (.ci/postgres.sh start)")
    database = f"zoo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        POSTGRES.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {database}"))
    store = JobStore(POSTGRES.rsplit("/", 1)[0] + "/" + database)
    try:
        yield store
    finally:
        store.close()
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {database} WITH (FORCE)"))
        admin.dispose()


def pixel_sensitive_model(name: str, input_size: int, **kwargs: object) -> Any:
    """A ``weights=None`` catalog logits model whose outputs depend on the pixels."""
    import keras

    import zoo
    from zoo.export.verify import make_pixel_sensitive, verification_inputs

    spec = zoo.get_spec(name)
    keras.utils.set_random_seed(0)
    model = zoo.build_model(
        spec,
        weights=None,
        input_shape=(input_size, input_size, 3),
        classifier_activation=None,
        **kwargs,
    )
    preprocess = importlib.import_module(spec.keras_module).preprocess_input
    return make_pixel_sensitive(
        model, preprocess(verification_inputs(input_size, input_size).astype("float32"))
    )


def heavy_modules_after(statement: str) -> list[str]:
    """Which ML frameworks (and our domain) a fresh interpreter holds after ``statement``."""
    import ast
    import subprocess
    import sys

    code = (
        f"import sys; {statement}; print(sorted(m for m in ('tensorflow', 'keras', "
        "'onnxruntime', 'onnx', 'tf2onnx', 'grpc', 'zoo') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(done.stdout)


# The fine-tuning recipe the tests and the compose check share: four digit classes of 60 images
# (the next 15 of each held out) and a fast schedule. VGG16 with random weights: its features
# separate digits (a logistic regression on them scored 0.99 here), while deep random bases
# with BatchNorm (MobileNetV2 0.42, ResNet50 0.53) give a head little to learn from.
DIGIT_CLASSES = (0, 1, 2, 3)
DIGITS_PER_CLASS = 60
DIGITS_BASE = "VGG16"
DIGITS_FAST = {
    "epochs": 15,
    "fine_tune_epochs": 1,
    "learning_rate": 1e-2,
    "batch_size": 16,
    "image_size": 32,
    "unfreeze": 2,
    "weights": "none",
}


def digit_png(image: Any) -> bytes:
    """One of scikit-learn's 8x8 digits as a 32x32 RGB PNG."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    pixels = (image * 16).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).resize((32, 32)).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_digits(
    root: Any, classes: tuple[int, ...], per_class: int, held_out: int = 15
) -> list[tuple[bytes, int]]:
    """``root/<class>/<i>.png`` for ``per_class`` digits of each class; returns the next
    ``held_out`` of each as (PNG bytes, class) pairs the dataset does not contain."""
    from sklearn.datasets import load_digits

    data = load_digits()
    kept = []
    for label in classes:
        images = data.images[data.target == label]
        (root / str(label)).mkdir(parents=True)
        for i, image in enumerate(images[:per_class]):
            (root / str(label) / f"{i}.png").write_bytes(digit_png(image))
        kept += [(digit_png(image), label) for image in images[per_class : per_class + held_out]]
    return kept


def needed(tool: str, hint: str) -> str:
    """The tool's path; a skip on a developer's machine without it, a failure in CI."""
    import pytest

    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI=true but {tool} is not installed ({hint})")
        pytest.skip(f"{tool} is not installed ({hint})")
    return path
