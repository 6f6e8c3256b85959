"""The `serve` image started the way the Kubernetes manifests start it, asked what the kubelet asks.

The container gets the manifest's arguments, environment (ConfigMap and Secret, the Secret's
placeholders replaced), user, read-only root, dropped capabilities, CPU and memory limits and
mounts, and is then probed as the kubelet would: the startup probe every `periodSeconds` until it
passes or `failureThreshold` runs out, then liveness and readiness, each a grpc.health.v1 Check
of the probe's service with the probe's timeout. Two things differ from a pod, on purpose: host
networking (the rule for containers here), so the manifest's ports become free ports of
127.0.0.1 (every probe's port is mapped the same way), and the repository is a bind mount
instead of a volume claim. Stopping checks the termination contract: the preStop sleep plus the
drain fit in `terminationGracePeriodSeconds`, and the server exits 0.
"""

from __future__ import annotations

import os
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from containers import docker, for_zoo, free_port, inspect
from grpc_health.v1 import health_pb2, health_pb2_grpc
from manifests import container_env, find, parse_cli, render

pytestmark = pytest.mark.images

IMAGE = "keras-zoo:serve"
OPTIONS = {"port": "--port", "http_port": "--http-port", "metrics_port": "--metrics-port"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import pixel_sensitive_model

    from zoo.catalog import Preprocessing
    from zoo.export.exporter import export_model

    root = tmp_path_factory.mktemp("pod") / "models"
    model = pixel_sensitive_model("MobileNetV2", 64, alpha=0.35)
    export_model(model, root, model_name="mobilenetv2", preprocessing=Preprocessing.TF)
    return for_zoo(root)


def as_local(args: list[str]) -> tuple[list[str], dict[int, int]]:
    """The manifest's args with 127.0.0.1 for the host and free ports for its ports, and the
    mapping from each manifest port to the local one."""
    _, params = parse_cli(args)
    ports = {params[p]: free_port() for p in OPTIONS if params.get(p) is not None}
    local = list(args)
    for i, arg in enumerate(args[:-1]):
        if arg == "--host":
            local[i + 1] = "127.0.0.1"
        elif arg in OPTIONS.values():
            local[i + 1] = str(ports[int(args[i + 1])])
    return local, ports


def docker_options(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """What the kubelet applies from the pod and container spec, in `docker run` options."""
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    options = ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', 0)}"]
    if security.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    for capability in security.get("capabilities", {}).get("drop", []):
        options += ["--cap-drop", capability]
    limits = container["resources"]["limits"]
    options += ["--cpus", str(limits["cpu"]), "--memory", limits["memory"].replace("Gi", "g")]
    return options


def check(port: int, service: str, timeout: float) -> int:
    """One grpc.health.v1 Check, as the kubelet's gRPC probe sends it; the status, or -1."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return -1
    return int(answer.status)


def run_probe(probe: dict[str, Any], ports: dict[int, int], container: str) -> float:
    """Probe until it passes, within the probe's failure threshold; seconds it took."""
    spec = probe["grpc"]
    period, threshold = probe.get("periodSeconds", 10), probe.get("failureThreshold", 3)
    started = time.monotonic()
    for _ in range(threshold):
        if check(ports[spec["port"]], spec.get("service", ""), probe.get("timeoutSeconds", 1)) == 1:
            return time.monotonic() - started
        assert inspect("container", container)["State"]["Running"], docker(
            "logs", container, check=False
        ).stderr[-3000:]
        time.sleep(period)
    logs = docker("logs", container, check=False).stderr[-3000:]
    pytest.fail(f"probe {spec} failed {threshold} times every {period} s:\n{logs}")


@pytest.mark.parametrize(
    ("tree", "kind", "owner"),
    [
        ("overlays/cpu", "Deployment", "keras-zoo-server"),
        ("kserve", "ClusterServingRuntime", "keras-zoo"),
    ],
)
def test_the_manifests_container_passes_the_kubelets_probes_and_stops_within_its_grace(
    tree: str, kind: str, owner: str, repository: Path, tmp_path: Path
) -> None:
    docs = render(tree)
    obj = find(docs, kind, owner)
    pod = obj["spec"] if kind == "ClusterServingRuntime" else obj["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    args, ports = as_local(container["args"])
    env = container_env(docs, container)
    env["ZOO_TOKEN"] = "pod-test-token"
    if "ZOO_DATABASE" in env:  # the Secret's placeholder URL: CI's PostgreSQL, else SQLite
        url = os.environ.get("ZOO_TEST_POSTGRES_URL")
        if url is None:
            del env["ZOO_DATABASE"]
        else:
            env["ZOO_DATABASE"] = url
    _, params = parse_cli(container["args"])
    mounts = {str(params.get("repository") or env["ZOO_REPOSITORY"]): repository}
    if "ZOO_DATA_DIR" in env and not env["ZOO_DATA_DIR"].startswith("/tmp"):
        (tmp_path / "data").mkdir()
        mounts[env["ZOO_DATA_DIR"]] = for_zoo(tmp_path / "data")
    volumes = [x for target, source in mounts.items() for x in ("-v", f"{source}:{target}")]
    name = f"zoo-pod-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "-d", "--name", name, "--network", "host", "--tmpfs", "/tmp",
        *docker_options(pod, container), *volumes,
        *(x for k, v in env.items() for x in ("-e", f"{k}={v}")), IMAGE, *args,
    )  # fmt: skip
    try:
        started = time.monotonic()
        if "startupProbe" in container:
            run_probe(container["startupProbe"], ports, name)
        for probe in ("livenessProbe", "readinessProbe"):
            run_probe(container[probe], ports, name)
        print(f"\n{tree}: startup, liveness and readiness probes passed "
              f"{time.monotonic() - started:.1f} s after `docker run`")  # fmt: skip
        http = ports[params["http_port"]]
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=10) as r:
            assert r.status == 200
        grace = pod.get("terminationGracePeriodSeconds", 30)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        budget = grace - pre_stop.get("seconds", 0)  # what SIGTERM leaves before SIGKILL
        stopping = time.monotonic()
        docker("stop", "--time", str(budget), name)
        took = time.monotonic() - stopping
        state = inspect("container", name)["State"]
        assert state["ExitCode"] == 0, docker("logs", name, check=False).stderr[-3000:]
        assert took < budget
    finally:
        docker("rm", "-f", "-v", name, check=False)
