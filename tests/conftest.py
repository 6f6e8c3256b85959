"""Shared fixtures. Every test runs with its own Keras home and without the network."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # a unix socket path
        return True
    host = str(address[0]) if isinstance(address, tuple) else ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection that leaves the machine fails the test at once."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        if not _is_local(address):
            raise AssertionError(f"test tried to reach the network: {address!r}")
        real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def keras_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty Keras home so no test reads or writes ~/.keras."""
    home = tmp_path_factory.mktemp("keras_home")
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def run_zoo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``zoo`` console script as a user would."""
    exe = Path(sys.executable).with_name("zoo")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def zoo_cli() -> Iterator[object]:
    yield run_zoo


TOKEN = "test-token"


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[bytes, int]]]:
    """A labelled digits folder (``<class>/<i>.png``) and held-out (PNG, class) pairs."""
    from helpers import DIGIT_CLASSES, DIGITS_PER_CLASS, write_digits

    root = tmp_path_factory.mktemp("digits") / "digits"
    return root, write_digits(root, DIGIT_CLASSES, DIGITS_PER_CLASS)


@pytest.fixture(scope="session")
def served_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with a small pixel-sensitive uint8 model, a float32 one and a broken one."""
    from helpers import pixel_sensitive_model

    from zoo.catalog import Preprocessing
    from zoo.catalog.labels import imagenet_labels
    from zoo.export.exporter import export_model

    root = tmp_path_factory.mktemp("served")
    # `make mutation` builds it once for all its runs (the serving code it mutates does not
    # take part in exports); each run gets its own copy.
    cache = os.environ.get("ZOO_TEST_SERVED_CACHE")
    if cache and Path(cache).exists():
        shutil.copytree(cache, root, dirs_exist_ok=True)
        return root
    model = pixel_sensitive_model("MobileNetV2", 64, alpha=0.35)
    export_model(
        model,
        root,
        model_name="mobilenetv2",
        preprocessing=Preprocessing.TF,
        labels=imagenet_labels(),
    )
    export_model(
        model, root, model_name="tiny-f32", input="float32", preprocessing=Preprocessing.TF
    )
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"this is not an ONNX file")
    if cache:  # renamed into place whole: a parallel run sees all of it or none
        staged = Path(f"{cache}.{os.getpid()}")
        shutil.copytree(root, staged)
        try:
            staged.rename(cache)
        except OSError:  # another run got there first
            shutil.rmtree(staged)
    return root


@pytest.fixture(scope="session")
def server(served_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real `zoo serve` process over the served repository, with a token and 8 MiB messages."""
    from serving import start_server

    workdir = tmp_path_factory.mktemp("server")
    running = start_server(
        served_repository,
        workdir,
        "--token",
        TOKEN,
        env={
            "ZOO_MAX_MESSAGE_BYTES": str(8 * 2**20),
            "ZOO_EAGER_MODELS": "mobilenetv2",
            # batches of up to 8 on 2 instances, so that concurrent load forms batches
            "ZOO_MAX_BATCH_SIZE": "8",
            "ZOO_MODEL_INSTANCES": "2",
        },
    )
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]
