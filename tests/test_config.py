"""Server configuration: defaults < TOML file < ZOO_* environment < flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zoo.config import ServerConfig, cpu_quota, usable_cpus
from zoo.errors import InvalidArgument


def test_precedence(tmp_path: Path) -> None:
    file = tmp_path / "zoo.toml"
    file.write_text(
        'port = 9000\nmetrics_port = 9001\nhost = "0.0.0.0"\neager_models = ["a", "b"]\n'
    )
    env = {"ZOO_PORT": "9100", "ZOO_DYNAMIC_BATCHING": "false", "ZOO_PROVIDERS": "cuda,cpu"}
    config = ServerConfig.load(file, env=env, overrides={"port": 9200, "token": None})
    assert config.port == 9200  # flag beats env beats file
    assert config.metrics_port == 9001  # file
    assert config.host == "0.0.0.0"
    assert config.dynamic_batching is False
    assert config.providers == ("cuda", "cpu")
    assert config.eager_models == ("a", "b")
    assert config.token is None and config.repository == Path("model_repository")


def test_defaults_need_nothing() -> None:
    config = ServerConfig.load(env={})
    assert (config.host, config.port, config.metrics_port) == ("127.0.0.1", 8001, 8002)
    assert config.max_message_bytes >= 224 * 224 * 3 * 32 * 4  # a float32 batch of 32


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ZOO_PORT": "eighty"}, "setting port must be int; received 'eighty'"),
        ({"ZOO_DYNAMIC_BATCHING": "maybe"}, "setting dynamic_batching must be bool"),
        ({"ZOO_PROVIDERS": "tpu"}, "providers must be a non-empty list of"),
        ({"ZOO_TLS_CERT": "/c.pem"}, "TLS needs both tls_cert and tls_key"),
        ({"ZOO_LOG_FORMAT": "xml"}, "log_format must be text or json"),
        ({"ZOO_MAX_BATCH_SIZE": "-1"}, "max_batch_size must be >= 0; received -1"),
    ],
)
def test_bad_values_are_clear(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ServerConfig.load(env=env)


def test_bad_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="does not exist"):
        ServerConfig.load(tmp_path / "none.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = \n")
    with pytest.raises(InvalidArgument, match="is not valid TOML"):
        ServerConfig.load(bad, env={})
    bad.write_text("prot = 1\n")
    with pytest.raises(InvalidArgument, match=r"unknown settings \['prot'\]"):
        ServerConfig.load(bad, env={})


def test_every_setting_has_an_environment_variable() -> None:
    names = ServerConfig.env_names()
    assert names["port"] == "ZOO_PORT" and names["max_queue_delay_us"] == "ZOO_MAX_QUEUE_DELAY_US"
    assert len(names) == len(set(names.values()))


def test_readme_table_lists_every_setting() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Configuration", 1)[1].split("###", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    documented = {cells[0].strip(" `"): cells[1].strip(" `") for cells in rows}
    assert documented == ServerConfig.env_names()


# -- CPU quota: a Kubernetes CPU limit is a CFS quota the affinity does not show ----------------
def fake_cgroup(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(self_cgroup)
    return root, proc


V2 = {"cgroup.controllers": "cpuset cpu io memory pids\n"}


@pytest.mark.parametrize(
    ("self_cgroup", "files", "quota"),
    [
        # cgroup v2, a container in its own namespace: its cgroup is the mount's root
        ("0::/\n", {**V2, "cpu.max": "250000 100000\n"}, 2.5),
        ("0::/\n", {**V2, "cpu.max": "max 100000\n"}, None),
        ("0::/\n", V2, None),  # the cpu controller not enabled here
        # v2 without a namespace: the process's path, and an ancestor's tighter limit wins
        (
            "0::/kubepods/pod1/c1\n",
            {
                **V2,
                "kubepods/pod1/c1/cpu.max": "400000 100000",
                "kubepods/pod1/cpu.max": "150000 100000",
            },
            1.5,
        ),
        # cgroup v1: cpu,cpuacct mounted, the quota at the mount root; -1 is no limit
        (
            "4:cpu,cpuacct:/kubepods/pod1/c1\n1:name=systemd:/\n",
            {
                "cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
                "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            0.5,
        ),
        (
            "1:cpu:/\n2:cpuacct:/\n",
            {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
            None,
        ),
        # v1 with the process's own path below the mount
        (
            "3:cpu:/box\n",
            {
                "cpu/box/cpu.cfs_quota_us": "300000",
                "cpu/box/cpu.cfs_period_us": "100000",
                "cpu/cpu.cfs_quota_us": "-1",
            },
            3.0,
        ),
        ("", {}, None),  # no cgroup filesystem at all
    ],
    ids=[
        "v2-root",
        "v2-max",
        "v2-no-cpu",
        "v2-ancestor",
        "v1-cpuacct",
        "v1-unlimited",
        "v1-path",
        "none",
    ],
)
def test_cpu_quota_from_a_fake_cgroup_tree(tmp_path: Path, self_cgroup, files, quota) -> None:
    root, proc = fake_cgroup(tmp_path, self_cgroup, files)
    assert cpu_quota(root, proc) == quota


@pytest.mark.parametrize(
    ("affinity", "quota", "cores"),
    [(64, None, 64), (64, 2.0, 2), (64, 2.5, 2), (4, 8.0, 4), (8, 0.5, 1)],
)
def test_usable_cpus_is_the_affinity_capped_by_the_quota(affinity, quota, cores) -> None:
    assert usable_cpus(affinity, quota) == cores


def test_the_runtime_sizes_itself_from_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.serving import runtime

    monkeypatch.setattr(runtime, "cpu_quota", lambda: 1.0)
    assert runtime.cpu_cores() == 1
    monkeypatch.setattr(runtime, "cpu_quota", lambda: None)
    assert runtime.cpu_cores() == len(os.sched_getaffinity(0))
