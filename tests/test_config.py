"""Server configuration: defaults < TOML file < ZOO_* environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.config import ServerConfig
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
