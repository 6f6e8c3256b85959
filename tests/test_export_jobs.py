"""Export jobs through a real server and worker: a cancel stops the export and publishes nothing."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import TOKEN

from client import ZooClient


def test_cancelling_a_running_export_publishes_nothing(tmp_path: Path) -> None:
    from serving import start_server

    repository = tmp_path / "repo"
    repository.mkdir()
    running = start_server(
        repository, tmp_path, "--token", TOKEN, env={"ZOO_DATA_DIR": str(tmp_path / "data")}
    )
    try:
        with ZooClient(running.address, token=TOKEN) as zoo:
            job = zoo.export("MobileNetV2", weights="none")
            deadline = time.monotonic() + 240
            # wait until the export child is at work (its first stage event), then cancel
            while not any(e.type == "log" for e in job.watch() if e.type != "state"):
                assert time.monotonic() < deadline
            assert job.refresh().state in ("RUNNING", "CANCELLING")
            job.cancel()
            final = job.wait()
            assert final.state == "CANCELLED", (final.state, final.error)
            assert zoo.models("mobilenetv2", served_only=True) == []
        assert not (repository / "mobilenetv2").exists()
        staging = repository / ".staging"
        assert not staging.exists() or list(staging.iterdir()) == []
    finally:
        running.stop()
