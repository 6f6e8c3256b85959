"""Containers and deployment: the Dockerfile, the compose files, `zoo health`, the worker's env.

The compose files are checked by a real compose implementation's parser (Debian's
`docker-compose` package; CI installs it in `.ci/run`). Images are not built here: that needs
a Docker engine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import zoo
from zoo.config import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
GPU_FILE = ROOT / "docker-compose.yml"
CPU_FILE = ROOT / "deploy" / "docker-compose.cpu.yml"
CI_FILE = ROOT / "deploy" / "docker-compose.ci.yml"
SERVICES = {"server", "worker", "postgres", "prometheus"}
STATE_VOLUMES = {"models": "/data/models", "zoo-data": "/data/zoo", "weights": "/opt/keras"}
SERVER_VOLUMES = {"models": "/data/models", "zoo-data": "/data/zoo"}  # no weights: no TensorFlow


# -- compose ---------------------------------------------------------------------------------
def compose_config(*files: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The normalized configuration `docker-compose config` prints, parsed."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose; CI does)")
    args = [a for f in files for a in ("-f", str(f))]
    # Only the variables compose needs, so a developer's ZOO_* or WEIGHTS cannot leak in.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(env or {})}
    done = subprocess.run(
        [exe, *args, "config"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def check_stack(config: dict[str, Any], flavour: str) -> None:
    services = config["services"]
    assert set(services) == SERVICES
    assert set(STATE_VOLUMES) | {"postgres-data"} <= set(config["volumes"])
    for name, role, volumes in (
        ("server", "serve", SERVER_VOLUMES),
        ("worker", "train", STATE_VOLUMES),
    ):
        service = services[name]
        assert service["image"] == f"keras-zoo:{role}{flavour}"
        assert service["build"]["target"] == f"{role}{flavour}"
        assert service["build"]["context"] == str(ROOT)
        mounts = {v.split(":")[0]: v.split(":")[1] for v in service["volumes"]}
        assert mounts == volumes
        env = service["environment"]
        assert env["ZOO_DATABASE"] == "postgresql://zoo:zoo@postgres:5432/zoo"
        assert (env["ZOO_REPOSITORY"], env["ZOO_DATA_DIR"]) == ("/data/models", "/data/zoo")
    server, worker = services["server"], services["worker"]
    assert "args" not in server["build"] and worker["build"]["args"] == {"WEIGHTS": "none"}
    assert server["command"] == ["serve", "--host", "0.0.0.0"]
    assert worker["command"] == ["worker"]
    assert str(server["environment"]["ZOO_WORKERS"]) == "0"
    assert {(p["published"], p["target"]) for p in server["ports"]} == {
        (8001, 8001),
        (8002, 8002),
        (8000, 8000),
    }
    assert server["healthcheck"]["test"][:3] == ["CMD", "zoo", "health"]
    assert worker["healthcheck"] == {"test": ["NONE"]}  # `disable: true`, normalized
    assert services["postgres"]["image"] == "postgres:15"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data:rw"]
    assert any(
        v.startswith(f"{ROOT}/deploy/prometheus.yml:/etc/prometheus/prometheus.yml")
        for v in services["prometheus"]["volumes"]
    )
    depends = {
        (name, other): spec["condition"]
        for name, service in services.items()
        for other, spec in service.get("depends_on", {}).items()
    }
    assert depends == {
        ("server", "postgres"): "service_healthy",
        ("worker", "postgres"): "service_healthy",
        ("worker", "server"): "service_healthy",
    }


def test_compose_gpu_stack() -> None:
    config = compose_config(GPU_FILE)
    check_stack(config, "-gpu")
    for name in ("server", "worker"):
        assert gpu_devices(config["services"][name]) == [
            {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
        ]
    assert config["services"]["server"]["environment"]["ZOO_PROVIDERS"] == "cuda,cpu"


def test_compose_cpu_variant_is_the_gpu_stack_without_gpus() -> None:
    gpu, cpu = compose_config(GPU_FILE), compose_config(CPU_FILE)
    check_stack(cpu, "")
    assert not any(gpu_devices(s) for s in cpu["services"].values())
    assert cpu["services"]["server"]["environment"]["ZOO_PROVIDERS"] == "cpu"
    # Everything else is the same, so the two files cannot drift apart.
    for name, role in (("server", "serve"), ("worker", "train")):
        for config, flavour in ((gpu, "-gpu"), (cpu, "")):
            service = config["services"][name]
            assert service.pop("image") == f"keras-zoo:{role}{flavour}"
            assert service["build"].pop("target") == f"{role}{flavour}"
            service.pop("deploy", None)
            service["environment"].pop("ZOO_PROVIDERS", None)
    assert cpu == gpu


def test_compose_images_of_postgres_and_prometheus_come_from_variables() -> None:
    env = {"POSTGRES_IMAGE": "pg:local", "PROMETHEUS_IMAGE": "prom:local"}
    for path in (GPU_FILE, CPU_FILE):
        services = compose_config(path, env=env)["services"]
        assert (services["postgres"]["image"], services["prometheus"]["image"]) == (
            "pg:local",
            "prom:local",
        )


CI_ENV = {
    "ZOO_CI_PORT": "18001",
    "ZOO_CI_METRICS_PORT": "18002",
    "ZOO_CI_PG_PORT": "15432",
    "ZOO_CI_PROMETHEUS_PORT": "19090",
    "ZOO_CI_PROMETHEUS_CONFIG": "/tmp/prometheus.yml",
}


def test_compose_ci_override_puts_every_service_on_the_host_network() -> None:
    services = compose_config(CPU_FILE, CI_FILE, env=CI_ENV)["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service["network_mode"] == "host", name
        assert "networks" not in service, name
        assert service["extra_hosts"] == {
            "server": "127.0.0.1",
            "postgres": "127.0.0.1",
            "prometheus": "127.0.0.1",
        }
    server, worker = services["server"], services["worker"]
    assert server["command"] == ["serve", "--host", "127.0.0.1"]
    for service in (server, worker):
        assert service["environment"]["ZOO_DATABASE"] == "postgresql://zoo:zoo@postgres:15432/zoo"
    assert (server["environment"]["ZOO_PORT"], server["environment"]["ZOO_METRICS_PORT"]) == (
        "18001",
        "18002",
    )
    assert "127.0.0.1:18001" in server["healthcheck"]["test"]
    assert services["postgres"]["environment"]["POSTGRES_LISTEN_ADDRESSES"] == "127.0.0.1"
    assert "--web.listen-address=127.0.0.1:19090" in services["prometheus"]["command"]


def test_serve_extra_is_the_server_without_tensorflow() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    # what only a job's child process imports: TensorFlow, export, and (zoo.jobs.splits,
    # zoo.jobs.evaluation) the split, the test report's metrics and the TensorBoard writer;
    # onnx stays in serve: zoo.serving.sessions reads the weights the two sessions share
    training = {"tensorflow==2.21.0", "tensorflow[and-cuda]==2.21.0", "keras==3.15.1",
                "tf2onnx==1.17.0", "scikit-learn>=1.5", "tensorboard>=2.21"}  # fmt: skip
    assert set(extras["serve"]) == set(extras["server"]) - training
    # one CUDA major per GPU image: the server's ONNX Runtime brings CUDA 13 wheels, training
    # has TensorFlow's CUDA 12 ones
    assert set(extras["serve-gpu"]) == set(extras["gpu"]) - training - {
        "onnxruntime-gpu==1.31.1"
    } | {"onnxruntime-gpu[cuda,cudnn]==1.31.1"}


@pytest.mark.parametrize("path", [GPU_FILE, CPU_FILE], ids=["gpu", "cpu"])
def test_compose_sets_only_settings_the_server_knows(path: Path) -> None:
    config = yaml.safe_load(path.read_text())  # merge keys (<<) resolved by the YAML loader
    known = set(ServerConfig.env_names().values())
    for name in ("server", "worker"):
        env = config["services"][name]["environment"]
        used = {key for key in env if key.startswith("ZOO_")}
        assert used, name
        assert used - known == set(), f"{name} sets unknown variables {sorted(used - known)}"


def test_prometheus_scrapes_the_metrics_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    zoo_job = next(j for j in config["scrape_configs"] if j["job_name"] == "zoo")
    assert zoo_job["metrics_path"] == "/metrics"
    (sd,) = zoo_job["dns_sd_configs"]
    assert (sd["names"], sd["port"]) == (["server"], ServerConfig().metrics_port)


# -- Dockerfile ------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(rest.split())))
    return instructions


def stages() -> dict[str, list[tuple[str, str]]]:
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            current = []
            named[args.split()[-1] if " AS " in args.upper() else args] = current
        current.append((keyword, args))
    return named


def resolved(by_stage: dict[str, list[tuple[str, str]]], name: str) -> list[tuple[str, str]]:
    """A stage's instructions after those of the stages it is built FROM."""
    parent = by_stage[name][0][1].split()[0]
    inherited = resolved(by_stage, parent) if parent in by_stage else []
    return inherited + by_stage[name][1:]


TARGETS = {  # target: (the venv's build stage, the command)
    "serve": ("build-serve", '["serve", "--host", "0.0.0.0"]'),
    "train": ("build-train", '["worker"]'),
    "cpu": ("build-train", '["serve", "--host", "0.0.0.0"]'),
    "serve-gpu": ("build-serve-gpu", '["serve", "--host", "0.0.0.0"]'),
    "train-gpu": ("build-train-gpu", '["worker"]'),
    "gpu": ("build-train-gpu", '["serve", "--host", "0.0.0.0"]'),
}


def test_dockerfile_targets_user_healthcheck_entrypoint() -> None:
    by_stage = stages()
    assert by_stage["python"][0] == ("FROM", "${PYTHON_IMAGE} AS python")
    assert (by_stage["cpu"][0], by_stage["gpu"][0]) == (
        ("FROM", "train AS cpu"),
        ("FROM", "train-gpu AS gpu"),
    )
    args = dict(a.split("=", 1) for k, a in dockerfile_instructions() if k == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert args["WEIGHTS"] == "none"
    # one base for every image: no nvidia/cuda, CUDA comes as NVIDIA's pip wheels
    assert {a.split()[0] for k, a in dockerfile_instructions() if k == "FROM"} <= {
        "${PYTHON_IMAGE}", "python", "builder", "runtime", "train", "train-gpu",
    }  # fmt: skip
    for target, (build, command) in TARGETS.items():
        instructions = resolved(by_stage, target)
        stage = dict(instructions)  # the last of each instruction
        assert stage["USER"] == "zoo", target
        assert stage["ENTRYPOINT"] == '["zoo"]'
        assert stage["CMD"] == command, target
        assert "CMD zoo health --server" in stage["HEALTHCHECK"]
        assert ("COPY", f"--from={build} /opt/zoo /opt/zoo") in instructions, target
        env = " ".join(a for k, a in instructions if k == "ENV")
        for setting in ("ZOO_REPOSITORY=/data/models", "ZOO_DATA_DIR=/data/zoo", "KERAS_HOME"):
            assert setting in env, (target, setting)
        assert ("ZOO_WORKERS=0" in env) == target.startswith("serve"), target
        assert ("ZOO_PROVIDERS=cuda,cpu" in env) == target.endswith("gpu"), target
        labels = " ".join(a for k, a in instructions if k == "LABEL")
        for label in ("title", "version", "revision", "licenses", "description", "base.name"):
            assert f"org.opencontainers.image.{label}=" in labels
    # no compilers anywhere: every dependency is a wheel
    assert "build-essential" not in (ROOT / "Dockerfile").read_text()


def test_dockerfile_installs_from_the_pins_or_the_wheelhouse() -> None:
    by_stage = stages()
    builds = {"build-serve": ("serve", "cpu"), "build-train": ("server", "cpu"),
              "build-serve-gpu": ("serve-gpu", "gpu"), "build-train-gpu": ("gpu", "gpu")}  # fmt: skip
    for build, (extra, flavour) in builds.items():
        assert by_stage[build][0] == ("FROM", f"builder AS {build}")
        assert ("COPY", f"wheelhouse/{flavour}/ /wheels/") in by_stage[build]
        assert ("RUN", f"pip-install.sh {extra} /wheels") in by_stage[build]
        assert (("RUN", 'fetch-weights.sh "$WEIGHTS"') in by_stage[build]) == ("train" in build)
    script = (ROOT / "deploy" / "images" / "pip-install.sh").read_text()
    assert '--no-index --find-links "$wheels"' in script
    assert '-c constraints.txt ".[$extras]"' in script
    # the classic builder runs every stage above the target: serve's stages come first
    order = list(by_stage)
    assert order.index("serve") < order.index("build-train") < order.index("build-serve-gpu")


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"  # an allow-list
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = []
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in args:
            sources += [w for w in args.split()[:-1] if not w.startswith("--")]
    assert "constraints.txt" in sources and "deploy/fetch-weights.sh" in sources
    assert "wheelhouse/cpu/" in sources and "deploy/ca-certificates/" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert any(source.rstrip("/") == a or source.startswith(f"{a}/") for a in allowed), (
            f"{source} is excluded by .dockerignore"
        )


def test_seed13_weights_are_the_catalog_seed_models() -> None:
    script = (ROOT / "deploy" / "fetch-weights.sh").read_text()
    listed = re.search(r'SEED13="([^"]*)"', script)
    assert listed is not None
    names = listed.group(1).replace("\\\n", " ").split()
    assert sorted(names) == sorted(zoo.SEED_MODELS)
    assert len(names) == 13
    assert "zoo weights fetch '*'" in script


def test_fetch_weights_refuses_an_unknown_choice(tmp_path: Path) -> None:
    done = subprocess.run(
        ["sh", str(ROOT / "deploy" / "fetch-weights.sh"), "some"],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert "WEIGHTS must be none, seed13 or all; received 'some'" in done.stderr
    none = subprocess.run(
        ["sh", str(ROOT / "deploy" / "fetch-weights.sh"), "none"],
        env={**os.environ, "KERAS_HOME": str(tmp_path)},
    )
    assert none.returncode == 0 and (tmp_path / "models").is_dir()


def test_readme_containers_section() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.index("## Containers") < readme.index("## Errors")
    section = readme.split("## Containers", 1)[1].split("\n## ", 1)[0]
    assert "docker compose up" in section
    assert "docker compose -f deploy/docker-compose.cpu.yml up" in section
    assert "WEIGHTS" in section and "docs/operations.md" in section
    assert (ROOT / "docs" / "operations.md").exists()


# -- zoo health and zoo worker ---------------------------------------------------------------
def test_zoo_health_against_a_real_server(served_repository, tmp_path, zoo_cli) -> None:
    from serving import start_server

    running = start_server(served_repository, tmp_path, "--eager", "mobilenetv2")
    try:
        done = zoo_cli("health", "--server", running.address)
        assert (done.returncode, done.stdout.strip()) == (0, f"{running.address}: SERVING")
        done = zoo_cli("health", "--server", running.address, "--service", "mobilenetv2")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{running.address} service 'mobilenetv2': SERVING"
        done = zoo_cli("health", "--server", running.address, "--service", "broken")
        assert done.returncode == 1
        assert (
            done.stderr.strip() == f"zoo: health: {running.address} service 'broken': NOT_SERVING"
        )
        done = zoo_cli("health", "--server", running.address, "--service", "no-such-model")
        assert done.returncode == 1
        assert done.stderr.startswith(
            f"zoo: health: {running.address} service 'no-such-model': NOT_FOUND"
        )
    finally:
        assert running.stop() == 0
    done = zoo_cli("health", "--server", running.address, "--timeout", "2")
    assert done.returncode == 1
    assert done.stderr.startswith(f"zoo: health: {running.address}: UNAVAILABLE")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_worker_takes_its_settings_from_the_environment(tmp_path: Path, zoo_cli) -> None:
    help_text = zoo_cli("worker", "--help").stdout
    for variable in ("ZOO_DATABASE", "ZOO_DATA_DIR", "ZOO_REPOSITORY", "ZOO_JOB_STALE_AFTER_S"):
        assert variable in help_text
    assert "CUDA_VISIBLE_DEVICES for jobs." in help_text
    database = tmp_path / "jobs.db"
    env = {
        **os.environ,
        "ZOO_DATABASE": str(database),
        "ZOO_DATA_DIR": str(tmp_path / "data"),
        "ZOO_REPOSITORY": str(tmp_path / "models"),
        "ZOO_JOB_STALE_AFTER_S": "5",
    }
    exe = Path(sys.executable).with_name("zoo")
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        worker = subprocess.Popen([str(exe), "worker"], stderr=stderr, env=env)
        deadline = time.monotonic() + 120
        while "polling" not in log.read_text() and worker.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log.read_text()
    assert f"polling sqlite:///{database}" in log.read_text()
    assert database.exists()
