"""deploy/kubernetes, checked without a cluster: every overlay renders and validates, and every
contract it has with keras-zoo holds against the real thing.

- Rendering is Kustomize's own (`kubectl kustomize`); core kinds are validated by
  `kubernetes-validate` at a pinned Kubernetes version, strictly (unknown fields fail); KEDA and
  KServe kinds by their released CRD schemas (tests/schemas), made strict the same way.
- Commands and arguments are parsed by the `zoo` CLI itself; environment variables must be
  settings `ServerConfig` reads; the probes' ports and gRPC service names are asked of a real
  `zoo serve`; every metric the alert rules, the autoscaling query and the dashboard name is one
  a running server exports; `promtool` checks the rules and queries; the KEDA PostgreSQL
  trigger's SQL runs against a real PostgreSQL over the job store's own tables.

What only a cluster can confirm is listed in docs/kubernetes.md.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifests import (
    CRDS,
    DASHBOARD,
    KUBERNETES_VERSION,
    OTHER_VARIABLES,
    OVERLAYS,
    QUANTITY,
    RULES,
    SCHEMAS,
    TREES,
    container_env,
    containers,
    find,
    grpc_probes,
    needed,
    ours,
    parse_cli,
    render,
)

from zoo.config import ServerConfig


# -- rendering and schemas -------------------------------------------------------------------
@pytest.mark.parametrize("tree", TREES)
def test_every_tree_renders_to_known_kinds(tree: str) -> None:
    docs = render(tree)
    kinds = {d["kind"] for d in docs}
    if tree == "kserve":
        assert kinds == {"ClusterServingRuntime", "InferenceService"}
        return
    core = {"Namespace", "ConfigMap", "Secret", "PersistentVolumeClaim", "Deployment",
            "Service", "PodDisruptionBudget", "Job", "NetworkPolicy"}  # fmt: skip
    autoscaling = (
        {"HorizontalPodAutoscaler"} if tree == "base" else {"ScaledObject", "TriggerAuthentication"}
    )
    database = {"StatefulSet"} if tree.endswith("with-postgres") else set()
    assert kinds == core | autoscaling | database
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"keras-zoo"}


def strict(schema: Any) -> Any:
    """A CRD schema as the API server applies it with strict field validation: an object's
    unknown fields are errors (a CRD's JSON Schema alone would let a misspelt field through)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schema(file: str) -> dict[str, Any]:
    raw = (SCHEMAS / file).read_bytes()
    if file.endswith(".gz"):
        raw = gzip.decompress(raw)
    schema = strict(json.loads(raw))
    # The schemas leave apiVersion, kind and metadata to the API server (tests/schemas/README.md).
    schema["properties"].update(apiVersion={"type": "string"}, kind={"type": "string"})
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def test_copied_schemas_are_the_released_ones() -> None:
    """The digests in tests/schemas/README.md, of what is stored (uncompressed)."""
    table = (SCHEMAS / "README.md").read_text()
    rows = re.findall(r"^\| (\S+\.json(?:\.gz)?) \|.*\| (\d+) \| ([0-9a-f]{64}) \|$", table, re.M)
    assert (
        {f for f, _, _ in rows}
        == set(CRDS.values())
        == {p.name for p in SCHEMAS.iterdir() if p.name != "README.md"}
    )
    for file, size, digest in rows:
        raw = (SCHEMAS / file).read_bytes()
        raw = gzip.decompress(raw) if file.endswith(".gz") else raw
        assert (len(raw), hashlib.sha256(raw).hexdigest()) == (int(size), digest), file


@pytest.mark.parametrize("tree", TREES)
def test_every_object_is_valid_for_its_kind(tree: str) -> None:
    import jsonschema
    import kubernetes_validate

    for doc in render(tree):
        where = f"{tree}: {doc['kind']} {doc['metadata']['name']}"
        crd = CRDS.get((doc["apiVersion"], doc["kind"]))
        try:
            if crd:
                jsonschema.validate(doc, crd_schema(crd))
            else:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except jsonschema.ValidationError as e:  # kubernetes-validate's errors are these too
            path = ".".join(str(p) for p in e.absolute_path)
            pytest.fail(f"{where} is invalid at {path}: {e.message}")


# -- contracts with the zoo CLI and ServerConfig ---------------------------------------------
def is_usage_error(error: BaseException) -> bool:
    # typer ships its own click (typer._click): match the class by name, not by import.
    return "UsageError" in {c.__name__ for c in type(error).__mro__}


@pytest.mark.parametrize("tree", [*(f"overlays/{o}" for o in OVERLAYS), "kserve"])
def test_every_container_runs_a_zoo_command_the_cli_accepts(tree: str) -> None:
    commands = {}
    for owner, _, container in ours(render(tree)):
        assert "command" not in container, f"{owner}: the image's entrypoint is zoo; use args"
        name, params = parse_cli(container["args"])
        commands[owner] = name
        if name == "export":  # export reads no settings: its repository is an argument
            assert params["repository"] == Path("/data/models"), owner
    expected = (
        {"keras-zoo": "serve"}
        if tree == "kserve"
        else {
            "keras-zoo-server": "serve",
            "keras-zoo-worker": "worker",
            "keras-zoo-export-mobilenetv2": "export",
        }
    )
    assert commands == expected


def test_a_misspelt_option_or_command_is_refused_by_the_parser() -> None:
    for args, message in (
        (["serve", "--metric-port", "8002"], "--metric-port"),
        (["serve", "--port", "grpc"], "integer"),
        (["serv"], "No such command"),
        (["export", "--repository", "/data/models"], "Missing"),
    ):
        with pytest.raises(Exception, match=message) as error:
            parse_cli(args)
        assert is_usage_error(error.value), args


@pytest.mark.parametrize("tree", [*(f"overlays/{o}" for o in OVERLAYS), "kserve"])
def test_every_variable_is_a_setting_and_every_setting_parses(tree: str) -> None:
    docs = render(tree)
    known = set(ServerConfig.env_names().values())
    for owner, _, container in ours(docs):
        env = container_env(docs, container)
        unknown = {k for k in env if k not in known} - OTHER_VARIABLES
        assert not unknown, f"{owner} sets variables no setting reads: {sorted(unknown)}"
        settings = {k: v for k, v in env.items() if k in known}
        settings.update(ZOO_TOKEN="t", ZOO_DATABASE="postgresql://u@h/db")  # the Secret's keys
        config = ServerConfig.load(env=settings)  # raises on a value of the wrong type
        if container.get("envFrom"):
            assert (config.repository, config.data_dir) == (Path("/data/models"), Path("/data/zoo"))


def test_the_server_drains_within_its_grace_and_sizes_itself_from_its_limit() -> None:
    docs = render("overlays/cpu")
    server = find(docs, "Deployment", "keras-zoo-server")
    pod = server["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = ServerConfig.load(env=container_env(docs, container))
    assert config.workers == 0
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + config.grace_seconds + 5
    resources = container["resources"]
    # zoo serve reads its CPU quota (the limit): a request below it would size for cores the
    # pod is not guaranteed; a fractional limit would leave part of it unused.
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"]
    assert float(resources["limits"]["cpu"]).is_integer()
    assert server["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("tree", [f"overlays/{o}" for o in OVERLAYS])
def test_every_pod_runs_unprivileged_on_a_read_only_root(tree: str) -> None:
    for owner, pod, container in containers(render(tree)):
        assert pod["securityContext"]["runAsNonRoot"] is True, owner
        assert pod["automountServiceAccountToken"] is False, owner
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, owner
        assert context["allowPrivilegeEscalation"] is False, owner
        assert context["capabilities"]["drop"] == ["ALL"], owner
        resources = container["resources"]
        assert "limits" in resources and "requests" in resources, owner
        for kind in ("limits", "requests"):
            for name, value in resources[kind].items():
                assert QUANTITY.match(str(value)), (
                    f"{owner}: {kind}.{name} {value!r} is no quantity"
                )


def test_overlays_differ_as_documented() -> None:
    base, cpu, gpu, pg = (render(t) for t in TREES[:4])
    assert find(base, "HorizontalPodAutoscaler", "keras-zoo-server")
    assert find(base, "Deployment", "keras-zoo-worker")["spec"]["replicas"] == 1
    for docs in (cpu, gpu, pg):
        assert find(docs, "Deployment", "keras-zoo-worker")["spec"]["replicas"] == 0  # KEDA's
        assert find(docs, "ScaledObject", "keras-zoo-worker")["spec"]["minReplicaCount"] == 0
    gpus = {
        (owner, c["image"]): c["resources"]["limits"].get("nvidia.com/gpu")
        for owner, _, c in containers(gpu)
    }
    assert gpus == {
        ("keras-zoo-server", "keras-zoo:serve-gpu"): 1,
        ("keras-zoo-worker", "keras-zoo:train-gpu"): 1,
        ("keras-zoo-export-mobilenetv2", "keras-zoo:train-gpu"): None,
    }
    assert not any("nvidia.com/gpu" in c["resources"]["limits"] for _, _, c in containers(cpu))
    url = find(pg, "Secret", "keras-zoo")["stringData"]["database-url"]
    service = find(pg, "Service", "postgres")
    assert (
        url
        == f"postgresql://zoo:zoo@{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/zoo"
    )
    assert find(pg, "StatefulSet", "postgres")["spec"]["serviceName"] == "postgres"


def test_shared_volumes_are_read_write_many_and_mounted_where_the_settings_point() -> None:
    docs = render("overlays/cpu")
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert {n: c["spec"]["accessModes"] for n, c in claims.items()} == {
        "keras-zoo-models": ["ReadWriteMany"], "keras-zoo-data": ["ReadWriteMany"],
    }  # fmt: skip
    for owner, pod, container in ours(docs):
        volumes = {
            v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]
        }
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert mounts["/data/models"] == "keras-zoo-models", owner
        assert mounts["/data/zoo"] == "keras-zoo-data", owner


# -- the probes and the metrics, against a real server --------------------------------------
def test_probes_and_ports_are_the_servers(server) -> None:
    """Every port a manifest names is the one its args give `zoo serve`, and every gRPC probe's
    service answers SERVING on a real server."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    cpu, kserve = render("overlays/cpu"), render("kserve")
    service = find(cpu, "Service", "keras-zoo")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"grpc", "http", "metrics"}
    assert (by_name["grpc"]["appProtocol"], by_name["http"]["appProtocol"]) == ("grpc", "http")
    policy = find(cpu, "NetworkPolicy", "keras-zoo-server")
    assert {p["port"] for p in policy["spec"]["ingress"][0]["ports"]} == set(by_name)
    checked = []
    # The server Deployment names its ports; the KServe runtime names none (KServe sends
    # REST to 8080, and a grpc-v2 InferenceService names the gRPC port h2c).
    ((_, _, server_container),) = [x for x in ours(cpu) if x[0] == "keras-zoo-server"]
    _, params = parse_cli(server_container["args"])
    ports = {p["name"]: p["containerPort"] for p in server_container["ports"]}
    assert ports == {
        "grpc": params["port"], "http": params["http_port"], "metrics": params["metrics_port"]
    }  # fmt: skip
    for name, port in ports.items():
        assert by_name[name]["port"] == port and by_name[name]["targetPort"] == name
    annotations = find(cpu, "Deployment", "keras-zoo-server")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/port"] == str(params["metrics_port"])
    for container in (
        server_container,
        find(kserve, "ClusterServingRuntime", "keras-zoo")["spec"]["containers"][0],
    ):
        _, params = parse_cli(container["args"])
        probes = grpc_probes(container)
        assert probes and {port for port, _ in probes} == {params["port"]}
        checked += [name for _, name in probes]
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in sorted(set(checked)):
            answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name


def scrape(metrics_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        return r.read().decode()


def exported_metrics(text: str) -> set[str]:
    """Names of the series a server's /metrics holds samples of."""
    return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))


def test_requests_in_flight_counts_a_request_while_it_runs() -> None:
    import asyncio

    import grpc

    from server.interceptors import Guard
    from server.metrics import Metrics

    metrics = Metrics()
    seen = []

    def in_flight() -> float | None:
        return metrics.registry.get_sample_value("zoo_requests_in_flight", {"method": "ModelInfer"})

    async def infer(request: Any, context: Any) -> str:
        seen.append(in_flight())
        if request == "fail":
            raise RuntimeError("a failure is still counted out")
        return "answer"

    handler = grpc.unary_unary_rpc_method_handler(infer)
    wrapped = Guard(metrics).wrap("/inference.GRPCInferenceService/ModelInfer", handler)

    class Context:
        def code(self) -> None:
            return None

    assert asyncio.run(wrapped.unary_unary("request", Context())) == "answer"
    with pytest.raises(RuntimeError):
        asyncio.run(wrapped.unary_unary("fail", Context()))
    assert seen == [1.0, 1.0]
    assert in_flight() == 0.0


def promql_queries() -> dict[str, str]:
    """Every PromQL expression in the manifests: alert rules, KEDA's query, the dashboard."""
    queries = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            queries[f"rule {rule['alert']}"] = rule["expr"]
    for doc in render("overlays/cpu"):
        if doc["kind"] == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                if trigger["type"] == "prometheus":
                    queries[f"KEDA {doc['metadata']['name']}"] = trigger["metadata"]["query"]
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m")  # Grafana's, expanded
            queries[f"panel {panel['title']} {target['refId']}"] = expr
    return queries


def test_every_metric_queried_is_one_a_server_exports(server) -> None:
    import numpy as np
    import tritonclient.grpc as tc

    # A labelled series appears with its first sample: one inference makes them all.
    image = tc.InferInput("image", [1, 64, 64, 3], "UINT8")
    image.set_data_from_numpy(np.zeros((1, 64, 64, 3), np.uint8))
    tc.InferenceServerClient(server.address).infer("mobilenetv2", [image])
    text = scrape(server.metrics_port)
    exported = exported_metrics(text)
    # What KEDA scales on is back to 0 once the request is answered.
    assert re.search(r'^zoo_requests_in_flight\{method="ModelInfer"\} 0\.0$', text, re.M)
    queries = promql_queries()
    assert any(k.startswith("KEDA") for k in queries) and len(queries) > 15
    prometheus_own = {"up"}  # written by Prometheus for each scrape target
    for where, expr in queries.items():
        # A metric selector is a name followed by {; functions are followed by (.
        selected = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr))
        assert selected, f"{where}: no metric selector found in {expr!r}"
        missing = selected - exported - prometheus_own
        assert not missing, f"{where} names metrics no server exports: {sorted(missing)}"


def test_promtool_accepts_the_rules_and_every_query(tmp_path: Path) -> None:
    promtool = needed("promtool", "Debian's prometheus package; .ci/run installs it")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # Queries outside rule files are checked as recording rules: promtool parses each one.
    recording = [
        {"record": f"keras_zoo:query_{i}", "expr": expr}
        for i, expr in enumerate(promql_queries().values())
    ]
    queries = tmp_path / "queries.yaml"
    queries.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": recording}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(queries)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- KEDA's PostgreSQL trigger against the job store ------------------------------------------


@pytest.fixture
def postgres_store():
    from helpers import postgres_job_store

    with postgres_job_store() as store:
        yield store


def test_keda_counts_the_jobs_that_need_a_worker(postgres_store) -> None:
    from sqlalchemy import text

    from zoo.jobs.records import JobKind, JobState

    (scaled,) = [
        d for d in render("overlays/cpu")
        if d["kind"] == "ScaledObject" and d["metadata"]["name"] == "keras-zoo-worker"
    ]  # fmt: skip
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql" and trigger["metadata"]["targetQueryValue"] == "1"
    auth = find(
        render("overlays/cpu"), "TriggerAuthentication", trigger["authenticationRef"]["name"]
    )
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "keras-zoo", "key": "database-url"}
    ]
    query = text(trigger["metadata"]["query"])

    def keda() -> int:
        with postgres_store.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    store = postgres_store
    assert keda() == 0  # scaled to zero
    a = store.create(JobKind.EXPORT, {})
    b = store.create(JobKind.FINETUNE, {})
    assert keda() == 2
    assert store.claim("worker-1").id == a.id
    assert keda() == 2  # a claimed job keeps its worker
    store.set_state(a.id, JobState.SUCCEEDED)
    assert keda() == 1
    store.claim("worker-1")
    store.request_cancel(b.id)  # CANCELLING: the worker still has to stop it
    assert keda() == 1
    store.set_state(b.id, JobState.CANCELLED)
    c = store.create(JobKind.EXPORT, {})
    store.request_cancel(c.id)  # cancelled while queued: nothing to run
    assert keda() == 0
    d = store.create(JobKind.EXPORT, {})
    store.claim("worker-2")
    store.set_state(d.id, JobState.FAILED, error="boom")
    assert keda() == 0


# -- KServe -----------------------------------------------------------------------------------
def test_kserve_runtime_serves_mnt_models_over_rest_and_grpc_v2() -> None:
    docs = render("kserve")
    runtime = find(docs, "ClusterServingRuntime", "keras-zoo")
    service = find(docs, "InferenceService", "keras-zoo")
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    _, params = parse_cli(container["args"])
    assert params["repository"] == Path("/mnt/models")
    # KServe's conventions (its Triton runtime's too): REST on 8080, where traffic goes when
    # the predictor names no port; gRPC on the port a grpc-v2 predictor names h2c.
    assert (params["http_port"], params["port"]) == (8080, 9000)
    assert "ports" not in container
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] == "grpc-v2"
    assert model["ports"] == [{"name": "h2c", "containerPort": params["port"], "protocol": "TCP"}]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    claim = model["storageUri"].removeprefix("pvc://").split("/")[0]
    assert find(render("overlays/cpu"), "PersistentVolumeClaim", claim)
