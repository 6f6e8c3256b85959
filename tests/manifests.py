"""deploy/kubernetes as data, for the manifest checks (tests/test_k8s.py) and the image checks
that start a container the way a manifest says (tests/images/test_pod.py): rendering with
Kustomize, finding objects and containers, and reading a container's arguments and
environment with the zoo CLI's own parser and the settings' own names."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from helpers import needed

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).with_name("schemas")
KUBERNETES_VERSION = "1.37.0"  # kubernetes-validate's newest schemas (its version is pinned)
OVERLAYS = ["cpu", "gpu", "with-postgres"]
TREES = ["base", *(f"overlays/{o}" for o in OVERLAYS), "kserve"]
RULES = KUBE / "base" / "monitoring" / "keras-zoo-rules.yaml"
DASHBOARD = KUBE / "base" / "monitoring" / "keras-zoo-dashboard.json"
CRDS = {
    (
        "serving.kserve.io/v1alpha1",
        "ClusterServingRuntime",
    ): "clusterservingruntime-serving-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-serving-v1beta1.json.gz",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
}
# Variables in our containers that are not ServerConfig settings, and why they are there.
OTHER_VARIABLES = {"KERAS_HOME"}  # the export Job's weights cache on the data volume
POD_KINDS = {"Deployment", "StatefulSet", "Job"}
# A resource quantity as the API server parses it (kubernetes-validate lets any string through).
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


@functools.cache
def _render(tree: str) -> tuple[dict[str, Any], ...]:
    kubectl = needed("kubectl", "kubectl with its built-in Kustomize renders the manifests")
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBE / tree)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def render(tree: str) -> list[dict[str, Any]]:
    return [json.loads(json.dumps(d)) for d in _render(tree)]  # a private copy for each test


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(object name, pod spec, container) for every container, init containers included."""
    found = []
    for d in docs:
        if d["kind"] in POD_KINDS:
            pod = d["spec"]["template"]["spec"]
        elif d["kind"] == "ClusterServingRuntime":
            pod = d["spec"]
        else:
            continue
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            found.append((d["metadata"]["name"], pod, c))
    return found


def ours(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [x for x in containers(docs) if x[2]["image"].startswith("keras-zoo:")]


def parse_cli(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``zoo ARGS`` with the CLI's own (typer/click) commands, without running them.

    Returns the subcommand's path and its parsed parameters; a usage error raises. The groups
    take no options of their own here, so what follows a group's name is its subcommand's.
    """
    import typer

    from server.cli import app

    command: Any = typer.main.get_command(app)
    context = command.make_context("zoo", list(args))
    path = []
    while hasattr(command, "resolve_command"):  # a group
        name, command, args = command.resolve_command(context, list(args))
        path.append(name)
        context = command.make_context(name, list(args), parent=context)
    return " ".join(path), dict(context.params)


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it; Secret values are placeholders."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        obj = find(docs, kind, ref["name"])
        env.update(obj.get("data") or obj.get("stringData") or {})
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "from-a-secret")
    return env


def grpc_probes(container: dict[str, Any]) -> list[tuple[int, str]]:
    return [
        (container[p]["grpc"]["port"], container[p]["grpc"].get("service", ""))
        for p in ("startupProbe", "livenessProbe", "readinessProbe")
        if p in container
    ]
