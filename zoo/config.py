"""Server configuration: one frozen object, built once at start-up.

Precedence, lowest first: the defaults below, a TOML file (``--config FILE``), environment
variables (``ZOO_<FIELD>`` in upper case, e.g. ``ZOO_PORT``), then command-line flags.
Nothing here reads the environment at import time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import InvalidArgument

ENV_PREFIX = "ZOO_"
PROVIDERS = ("tensorrt", "cuda", "cpu")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def cpu_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs this process's CFS quota allows (a Kubernetes CPU limit), or None without one.

    A CPU limit is a quota, not a cpuset: a pod limited to 2 CPUs on a 64-core node still sees
    64 cores in its affinity, and sizing threads and model instances from those would have it
    throttled. cgroup v2 (``cpu.max``, "max 100000" or "200000 100000") along this process's
    cgroup path and its ancestors, the tightest winning; else cgroup v1
    (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, quota -1: none). A container usually sees its
    own cgroup at the mount's root, so the root is read too.
    """
    v2, v1 = "", ""
    try:
        for line in self_cgroup.read_text().splitlines():
            hierarchy, controllers, path = line.split(":", 2)
            if hierarchy == "0" and controllers == "":
                v2 = path
            elif "cpu" in controllers.split(","):
                v1 = path
    except (OSError, ValueError):  # no /proc (not Linux) or an odd line: the mount roots alone
        pass
    limits = []
    if (root / "cgroup.controllers").exists():  # cgroup v2 (unified)
        parts = [p for p in v2.strip("/").split("/") if p]
        for depth in range(len(parts), -1, -1):
            fields = _read(root.joinpath(*parts[:depth]) / "cpu.max").split()
            if len(fields) == 2 and fields[0] != "max":
                limits.append(int(fields[0]) / int(fields[1]))
    else:
        for mount in (root / "cpu,cpuacct", root / "cpu"):
            parts = [p for p in v1.strip("/").split("/") if p]
            for directory in (mount.joinpath(*parts), mount):
                quota, period = (
                    _read(directory / "cpu.cfs_quota_us"),
                    _read(directory / "cpu.cfs_period_us"),
                )
                if quota and period and int(quota) > 0:
                    limits.append(int(quota) / int(period))
                    break
            if limits:
                break
    return min(limits) if limits else None


def usable_cpus(affinity: int, quota: float | None) -> int:
    """Cores to size threads and instances for: the affinity, capped by a quota (at least 1).

    A fractional quota rounds down (1.5 CPUs: 1), as Go's automaxprocs does: two busy threads
    on 1.5 CPUs are throttled for a third of every period.
    """
    if quota is None:
        return affinity
    return max(1, min(affinity, math.floor(quota)))


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ServerConfig:
    """Every setting of ``zoo serve``; the README's table lists them with their variables."""

    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on."})
    port: int = field(default=8001, metadata={"help": "gRPC port (0 picks a free one)."})
    metrics_port: int = field(
        default=8002, metadata={"help": "Prometheus metrics HTTP port (0 picks one, -1 off)."}
    )
    http_port: int = field(
        default=8000,
        metadata={
            "help": "HTTP port: the v2 protocol over REST and the JSON API (0 picks one, -1 off)."
        },
    )
    repository: Path = field(
        default=Path("model_repository"), metadata={"help": "Model repository directory."}
    )
    max_message_bytes: int = field(
        default=256 * 2**20,
        metadata={
            "help": "Largest gRPC message accepted or sent, and largest HTTP request body "
            "(dataset archives: max_upload_bytes)."
        },
    )
    providers: tuple[str, ...] = field(
        default=PROVIDERS,
        metadata={"help": "ONNX Runtime providers allowed, in order of preference."},
    )
    intra_op_threads: int = field(
        default=0,
        metadata={
            "help": "ONNX Runtime threads per run (0: auto; on a CPU one, with one instance "
            "per core running side by side, and a lone run on every core through a second "
            "session sharing the weights)."
        },
    )
    eager_models: tuple[str, ...] = field(
        default=(), metadata={"help": "Models loaded at start-up ('*' for all); others lazily."}
    )
    memory_budget_mb: int = field(
        default=0,
        metadata={"help": "Unload least recently used models above this (0: no limit)."},
    )
    max_batch_size: int = field(
        default=0,
        metadata={
            "help": "Largest dynamic batch, capped by the model's own limit (0: auto; on "
            "a CPU the rows one core computes in 4 ms, on a GPU the model's limit)."
        },
    )
    max_queue_delay_us: int = field(
        default=0,
        metadata={
            "help": "Extra wait for a batch to fill, microseconds (0: batches form only "
            "while the previous one computes)."
        },
    )
    max_queue_size: int = field(
        default=128,
        metadata={
            "help": "Requests one model version may hold queued; more are UNAVAILABLE at "
            "once (0: no limit)."
        },
    )
    queue_timeout_ms: int = field(
        default=0,
        metadata={
            "help": "Longest a request may wait queued, milliseconds; the client's deadline "
            "applies too (0: the deadline alone)."
        },
    )
    priority_levels: int = field(
        default=0,
        metadata={
            "help": "Request priority levels, like Triton's: a request's 'priority' parameter "
            "1 (highest) to this many is served before lower ones queued earlier; 0 or none "
            "takes default_priority_level (0: priorities are ignored)."
        },
    )
    default_priority_level: int = field(
        default=0,
        metadata={"help": "The level of a request without a priority (0: the lowest level)."},
    )
    model_instances: int = field(
        default=0,
        metadata={
            "help": "Batches of one model computing at once, like Triton's instance count "
            "(0: auto; on a CPU one per core, on a GPU 2)."
        },
    )
    dynamic_batching: bool = field(
        default=True, metadata={"help": "Coalesce concurrent requests into batches."}
    )
    max_image_pixels: int = field(
        default=40_000_000, metadata={"help": "Largest image Classify decodes (pixels)."}
    )
    token: str | None = field(
        default=None, metadata={"help": "Bearer token required on mutating RPCs."}
    )
    tls_cert: Path | None = field(default=None, metadata={"help": "TLS certificate (PEM)."})
    tls_key: Path | None = field(default=None, metadata={"help": "TLS private key (PEM)."})
    grace_seconds: float = field(
        default=30.0, metadata={"help": "On SIGTERM, time to finish in-flight requests."}
    )
    log_format: str = field(default="text", metadata={"help": "text or json."})
    data_dir: Path = field(
        default=Path(".data"), metadata={"help": "Datasets, job work directories, SQLite."}
    )
    database: str = field(
        default="",
        metadata={"help": "Job store URL, e.g. postgresql://... (empty: SQLite in data_dir)."},
    )
    workers: int = field(
        default=1, metadata={"help": "Fine-tuning/export workers run by zoo serve (0: none)."}
    )
    job_stale_after_s: float = field(
        default=30.0,
        metadata={"help": "A running job whose worker is silent this long is resumed elsewhere."},
    )
    mlflow_tracking_uri: str = field(
        default="",
        metadata={
            "help": "MLflow tracking URI for fine-tune jobs (needs the mlflow extra; empty: "
            "no MLflow logging)."
        },
    )
    mlflow_experiment: str = field(
        default="keras-zoo", metadata={"help": "MLflow experiment the jobs' runs go to."}
    )
    max_upload_bytes: int = field(
        default=2 * 2**30, metadata={"help": "Largest dataset archive accepted."}
    )
    max_uploads: int = field(
        default=4,
        metadata={"help": "Dataset uploads received at once; more are RESOURCE_EXHAUSTED."},
    )
    upload_idle_s: float = field(
        default=60.0, metadata={"help": "An upload that sends nothing this long is dropped."}
    )
    watch_poll_s: float = field(
        default=1.0,
        metadata={
            "help": "On SQLite, how often the server looks for new job events for all its "
            "WatchJob streams together (PostgreSQL notifies instead)."
        },
    )

    @property
    def database_url(self) -> str:
        return self.database or str(self.data_dir / "jobs.db")

    def __post_init__(self) -> None:
        for name in (
            "max_batch_size", "model_instances", "max_queue_delay_us", "max_queue_size",
            "queue_timeout_ms", "priority_levels", "default_priority_level",
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must be >= 0; received {getattr(self, name)}")
        if self.default_priority_level > self.priority_levels:
            raise InvalidArgument(
                f"default_priority_level must be between 0 and priority_levels "
                f"({self.priority_levels}); received {self.default_priority_level}"
            )
        unknown = [p for p in self.providers if p not in PROVIDERS]
        if unknown or not self.providers:
            raise InvalidArgument(
                f"providers must be a non-empty list of {PROVIDERS}; received {self.providers}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidArgument("TLS needs both tls_cert and tls_key")
        if self.http_port < -1:
            raise InvalidArgument(f"http_port must be >= -1; received {self.http_port}")
        for name in ("upload_idle_s", "watch_poll_s"):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"{name} must be > 0; received {getattr(self, name)}")
        if self.log_format not in ("text", "json"):
            raise InvalidArgument(f"log_format must be text or json; received {self.log_format!r}")
        for name in ("port", "max_message_bytes", "max_image_pixels", "workers", "max_uploads"):
            minimum = 0 if name in ("port", "workers") else 1
            if getattr(self, name) < minimum:
                raise InvalidArgument(
                    f"{name} must be >= {minimum}; received {getattr(self, name)}"
                )

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> environment variable."""
        return {f.name: ENV_PREFIX + f.name.upper() for f in dataclasses.fields(cls)}

    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> ServerConfig:
        """Defaults < TOML ``file`` < ``env`` (ZOO_*) < ``overrides`` (flags; None = unset)."""
        values: dict[str, Any] = {}
        if file is not None:
            path = Path(file)
            try:
                data = tomllib.loads(path.read_text())
            except FileNotFoundError:
                raise InvalidArgument(f"config file {str(path)!r} does not exist") from None
            except tomllib.TOMLDecodeError as e:
                raise InvalidArgument(f"config file {str(path)!r} is not valid TOML: {e}") from None
            values.update(_check_names(data, f"config file {path}"))
        env = os.environ if env is None else env
        for name, variable in cls.env_names().items():
            if variable in env:
                values[name] = env[variable]
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        hints = typing.get_type_hints(cls)
        return cls(**{name: _coerce(name, value, hints[name]) for name, value in values.items()})


def _check_names(data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    known = {f.name for f in dataclasses.fields(ServerConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidArgument(f"{where}: unknown settings {unknown}; known: {sorted(known)}")
    return data


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn a string (env), TOML value or flag value into the field's type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None or value == "":
            return None
        hint = args[0]
    try:
        if hint is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError(value)
                return lowered in ("1", "true", "yes", "on")
            return bool(value)
        if typing.get_origin(hint) is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if hint is Path:
            return Path(value)
        return hint(value)
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"setting {name} must be {getattr(hint, '__name__', hint)}; received {value!r}"
        ) from None
