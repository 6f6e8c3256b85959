"""Starting real ``zoo serve`` processes for tests (port 0, a ready file for the port)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int | None
    log: Path
    http_port: int | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    repository: Path, workdir: Path, *args: str, env: dict[str, str] | None = None
) -> ServerProcess:
    ready = workdir / f"ready-{time.monotonic_ns()}.json"
    log = workdir / f"server-{time.monotonic_ns()}.log"
    exe = Path(sys.executable).with_name("zoo")
    command = [
        *(str(exe), "serve", "-r", str(repository)),
        *("--port", "0", "--metrics-port", "0", "--http-port", "0"),
    ]
    process = subprocess.Popen(
        [*command, "--ready-file", str(ready), *args],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.05)
    info = json.loads(ready.read_text())
    return ServerProcess(process, info["port"], info["metrics_port"], log, info.get("http_port"))
