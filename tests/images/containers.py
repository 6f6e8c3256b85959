"""Helpers for the image checks: the Docker CLI of `make test-images`'s private engine.

Every container runs with `--network host` and listens on 127.0.0.1 at free ports, so nothing
here needs a Docker network, and parallel test servers on this machine do not clash.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ZOO_UID = 10001  # the images' user `zoo`


def docker_exe() -> str:
    exe = os.environ.get("DOCKER") or shutil.which("docker")
    if exe is None or "DOCKER_HOST" not in os.environ:
        pytest.skip("no Docker engine: run `make test-images`, which starts one")
    return exe


def docker(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [docker_exe(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def inspect(kind: str, name: str) -> Any:
    return json.loads(docker(kind, "inspect", name).stdout)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(container: str, timeout: float = 120) -> float:
    """Seconds from now until the container's HEALTHCHECK reports healthy."""
    start = time.monotonic()
    while True:
        state = inspect("container", container)["State"]
        health = state.get("Health", {}).get("Status")
        if health == "healthy":
            return time.monotonic() - start
        assert state["Running"], docker("logs", container, check=False).stderr[-3000:]
        assert time.monotonic() - start < timeout, f"{container}: {health} after {timeout} s"
        time.sleep(0.05)


def for_zoo(path: Path) -> Path:
    """A host directory the images' user may read and write when bind-mounted."""
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), ZOO_UID, ZOO_UID)
    os.chown(path, ZOO_UID, ZOO_UID)
    return path
