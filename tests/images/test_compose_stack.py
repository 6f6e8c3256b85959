"""The compose stack end to end: deploy/docker-compose.cpu.yml with the CI override.

Server (`serve`), two workers (`train`), PostgreSQL and Prometheus (images from Debian's
packages, `make images-services`), every service on the host's network at free ports of
127.0.0.1. Through it: upload a labelled image set, fine-tune, classify held-out images with
the new model; kill the worker running a job and watch the other resume it from its
checkpoint; Prometheus scrapes the server; `down` then `up` keeps every model, dataset, job
and event.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from containers import docker, free_port
from helpers import DIGIT_CLASSES, DIGITS_BASE, DIGITS_FAST, DIGITS_PER_CLASS

from client import ZooClient

pytestmark = pytest.mark.images

ROOT = Path(__file__).resolve().parents[2]
FILES = ("deploy/docker-compose.cpu.yml", "deploy/docker-compose.ci.yml")


def compose(
    files: list[Path], env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe is not None, "docker-compose is not installed"
    done = subprocess.run(
        [exe, *[a for f in files for a in ("-f", str(f))], *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"docker-compose {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def host_network_stack(env: dict[str, str], into: Path) -> Path:
    """The CPU stack with the CI override, as one file without the published ports.

    Docker refuses port bindings on a host-network container, and an override can only add to
    a list, so the merged configuration (`docker-compose config`) loses its `ports:` here.
    """
    merged = yaml.safe_load(compose([ROOT / f for f in FILES], env, "config").stdout)
    for service in merged["services"].values():
        assert service["network_mode"] == "host"
        service.pop("ports", None)
    path = into / "docker-compose.yml"
    path.write_text(yaml.safe_dump(merged))
    return path


@dataclass
class Stack:
    project: str
    file: Path
    env: dict[str, str]
    address: str
    prometheus: str

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return compose([self.file], self.env, "-p", self.project, *args, timeout=timeout)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).stdout.split()

    def up(self) -> float:
        started = time.monotonic()
        self.compose("up", "-d", "--no-build", "--scale", "worker=2")
        return time.monotonic() - started


def networks() -> set[str]:
    return set(docker("network", "ls", "-q").stdout.split())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port, metrics, pg, prom = free_port(), free_port(), free_port(), free_port()
    config = tmp_path_factory.mktemp("prometheus") / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 2s, evaluation_interval: 2s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: zoo, metrics_path: /metrics, static_configs: [{{targets: ['127.0.0.1:{metrics}']}}]}}\n"
    )
    config.chmod(0o644)
    config.parent.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DOCKER_HOST": os.environ["DOCKER_HOST"],
        "POSTGRES_IMAGE": "keras-zoo-postgres:15",
        "PROMETHEUS_IMAGE": "keras-zoo-prometheus:bookworm",
        "ZOO_CI_PORT": str(port),
        "ZOO_CI_METRICS_PORT": str(metrics),
        "ZOO_CI_PG_PORT": str(pg),
        "ZOO_CI_PROMETHEUS_PORT": str(prom),
        "ZOO_CI_PROMETHEUS_CONFIG": str(config),
    }
    file = host_network_stack(env, config.parent)
    running = Stack(
        f"zooci{uuid.uuid4().hex[:8]}", file, env, f"127.0.0.1:{port}", f"127.0.0.1:{prom}"
    )
    before = networks()
    try:
        print(f"\ncompose up (postgres, server, 2 workers, prometheus): {running.up():.1f} s")
        assert networks() == before  # host networking only: compose made no network
        yield running
    finally:
        for service in ("server", "worker"):
            logs = running.compose("logs", "--no-color", "--tail", "40", service)
            print(logs.stdout[-4000:])
        running.compose("down", "-v", "--timeout", "30")


def test_finetune_classify_resume_metrics_and_restart(stack: Stack, digits) -> None:
    folder, held_out = digits
    started = time.monotonic()
    with ZooClient(stack.address) as zoo:
        dataset = zoo.upload_dataset(folder)
        assert dataset.counts == (DIGITS_PER_CLASS,) * len(DIGIT_CLASSES)

        # fine-tune to SUCCEEDED, then classify held-out digits with the new model
        job = zoo.finetune(DIGITS_BASE, dataset, "digits", **DIGITS_FAST)
        final = job.wait()
        assert final.state == "SUCCEEDED", final.error
        finetune_s = time.monotonic() - started
        results = zoo.classify([png for png, _ in held_out], "digits", top_k=1)
        predicted = [int(r.top.label) for r in results]
        accuracy = float(np.mean([p == y for p, (_, y) in zip(predicted, held_out, strict=True)]))
        print(f"\nupload + fine-tune in the worker container: {finetune_s:.1f} s; "
              f"held-out accuracy {accuracy:.3f} (chance 0.25)")  # fmt: skip
        assert accuracy >= 0.7

        # kill the worker running a job: the other one resumes it from its checkpoint
        params = {**DIGITS_FAST, "epochs": 400, "patience": 400, "fine_tune_epochs": 0}
        resumed = zoo.finetune(DIGITS_BASE, dataset, "resumed", **params)
        seen = 0
        for event in resumed.watch():
            seen += event.type == "epoch"
            if seen == 20:
                break
        busy = [c for c in stack.containers("worker")
                if "zoo.jobs.child" in docker("top", c, "-eo", "pid,args").stdout]  # fmt: skip
        assert len(busy) == 1, busy
        (other,) = set(stack.containers("worker")) - set(busy)
        docker("kill", busy[0])
        killed_at = time.monotonic()
        final = resumed.wait()
        assert final.state == "SUCCEEDED", final.error
        assert final.attempts == 2
        messages = [e.payload.get("message", "") for e in resumed.watch()]
        (handover,) = [m for m in messages if "resuming on" in m]
        other_name = handover.rsplit(" ", 1)[1]
        assert other_name in docker("logs", other).stderr  # "worker <name> polling ..."
        starts = [m for m in messages if m.startswith("phase 1: training the head from epoch")]
        assert starts[0].endswith("epoch 1") and int(starts[-1].rsplit(" ", 1)[1]) > 1
        print(f"killed worker's job resumed by the other ({handover}); "
              f"done {time.monotonic() - killed_at:.1f} s after the kill")  # fmt: skip

        # Prometheus scrapes the server's metrics port
        deadline = time.monotonic() + 60
        while True:
            url = f"http://{stack.prometheus}/api/v1/targets"
            with urllib.request.urlopen(url, timeout=5) as answer:
                targets = json.load(answer)["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            if health.get("zoo") == "up" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert health == {"zoo": "up"}

        before = state_of(zoo)
    assert len(before["jobs"]) == 2 and before["models"] == {"digits": (1,), "resumed": (1,)}

    # down, then up: the volumes keep every model, dataset, job and event
    stack.compose("down", "--timeout", "30")
    print(f"compose up again: {stack.up():.1f} s")
    with ZooClient(stack.address) as zoo:
        assert state_of(zoo) == before
        again = zoo.classify([png for png, _ in held_out], "digits", top_k=1)
        assert [int(r.top.label) for r in again] == predicted
    print(f"end to end through the compose stack: {time.monotonic() - started:.1f} s")


def state_of(zoo: ZooClient) -> dict[str, object]:
    jobs = sorted(zoo.jobs(), key=lambda j: j.id)
    return {
        "models": {m.name: m.versions for m in zoo.models(served_only=True)},
        "datasets": sorted((d.id, d.counts) for d in zoo.datasets()),
        "jobs": [(j.id, j.state, j.attempts) for j in jobs],
        "events": [[(e.seq, e.type) for e in j.watch()] for j in jobs],
    }
