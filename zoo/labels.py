"""Version labels of a model (``stable``, ``candidate``, any name a user gives) and their history.

```
<root>/<model>/labels.json    {"labels": {"stable": 1, "candidate": 3}, "history": [...]}
<root>/<model>/.labels.lock   serialises writers (the server and a local command may both write)
```

A request without a version goes to ``stable``, or to the newest version when the model has
no ``stable`` label, so a repository that never used labels behaves as before labels existed.
The file is written to a temporary file in the same directory, flushed to disk and renamed
over the old one (then the directory is flushed), so a reader, a crash or a failed write sees
the old labels or the new ones, never half. Every change is appended to the history with who
asked and when: ``by`` is the identity the request *claims* (a ``by`` field, or the client's
user name); the server authenticates callers with one shared token, so it proves that the
caller holds the token, not who they are. ``peer`` is the address the server saw.

Rollback replays the history of a label as a stack: a promote pushes a version, a rollback
pops one, so two rollbacks in a row go back two steps rather than toggling between two.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zoo.errors import FailedPrecondition, InvalidArgument
from zoo.files import write_text_atomically

LABELS_FILE = "labels.json"
LOCK_FILE = ".labels.lock"
STABLE = "stable"
CANDIDATE = "candidate"
MAX_LABEL = 32
MAX_WHO = 200  # characters kept of a claimed identity or a peer address
LABEL_PATTERN = re.compile(rf"[a-z][a-z0-9_-]{{0,{MAX_LABEL - 1}}}")


def validate_label(label: object) -> str:
    """``label`` if it is a valid label name, else InvalidArgument saying what is allowed.

    A label starts with a letter, so it is never all digits (a version field holding ``"3"``
    always means version 3) and never looks like a signed number (``"-1"`` stays an error).
    """
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        shown = repr(label)[:60]
        raise InvalidArgument(
            f"invalid label {shown}: use 1-{MAX_LABEL} characters from a-z 0-9 _ -, "
            "starting with a letter (e.g. stable, candidate)"
        )
    return label


@dataclass(frozen=True)
class LabelChange:
    """One change of one label: who, when, from which version to which."""

    label: str
    version: int
    previous: int | None  # the version the label pointed at before; None: it was new
    action: str  # "promote" or "rollback"
    by: str
    peer: str
    at: str  # ISO 8601, UTC

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "version": self.version,
            "previous": self.previous,
            "action": self.action,
            "by": self.by,
            "peer": self.peer,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelChange:
        return cls(
            label=str(data["label"]),
            version=int(data["version"]),
            previous=None if data.get("previous") is None else int(data["previous"]),
            action=str(data.get("action", "promote")),
            by=str(data.get("by", "")),
            peer=str(data.get("peer", "")),
            at=str(data.get("at", "")),
        )


@dataclass(frozen=True)
class Labels:
    """A model's labels (label -> version) and the history of their changes, oldest first."""

    labels: Mapping[str, int] = field(default_factory=dict)
    history: tuple[LabelChange, ...] = ()

    @property
    def stable(self) -> int | None:
        return self.labels.get(STABLE)

    def of_version(self, version: int) -> list[str]:
        """The labels pointing at ``version``, sorted."""
        return sorted(label for label, v in self.labels.items() if v == version)

    def rollback_target(self, label: str) -> int | None:
        """The version ``label`` pointed at before its current one (the history as a stack)."""
        stack: list[int] = []
        for change in self.history:
            if change.label != label:
                continue
            if change.action == "rollback":
                if stack:
                    stack.pop()
            elif not stack or stack[-1] != change.version:
                stack.append(change.version)
        return stack[-2] if len(stack) >= 2 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": dict(sorted(self.labels.items())),
            "history": [c.to_dict() for c in self.history],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Labels:
        return cls(
            labels={str(k): int(v) for k, v in dict(data.get("labels", {})).items()},
            history=tuple(LabelChange.from_dict(c) for c in data.get("history", [])),
        )


def read_labels(model_dir: Path) -> Labels:
    """The labels stored in ``model_dir``; none when it has no labels file."""
    try:
        text = (model_dir / LABELS_FILE).read_text()
    except FileNotFoundError:
        return Labels()
    try:
        return Labels.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FailedPrecondition(
            f"{model_dir / LABELS_FILE} is not a valid labels file ({e}); fix or remove it by hand"
        ) from None


def write_labels(model_dir: Path, labels: Labels) -> None:
    """Write ``labels`` atomically: a temporary file, fsync, rename over, fsync the directory."""
    write_text_atomically(model_dir / LABELS_FILE, json.dumps(labels.to_dict(), indent=2) + "\n")


@contextlib.contextmanager
def locked(model_dir: Path) -> Iterator[None]:
    """Hold the model's label lock (one writer at a time, across processes)."""
    with open(model_dir / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def change(labels: Labels, label: str, version: int, action: str, by: str, peer: str) -> Labels:
    """``labels`` with ``label`` at ``version`` and the change appended to the history."""
    entry = LabelChange(
        label=label,
        version=version,
        previous=labels.labels.get(label),
        action=action,
        by=by[:MAX_WHO],
        peer=peer[:MAX_WHO],
        at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return Labels({**labels.labels, label: version}, (*labels.history, entry))


def triton_version_policy(labels: Labels) -> str:
    """The ``version_policy`` line of config.pbtxt that serves what this server serves by default.

    Triton has no version labels, and it answers a request without a version with the highest
    version its policy loads. So the only policy under which Triton and this server answer the
    same unversioned request with the same version is: ``latest: 1`` while the model has no
    ``stable`` label (the newest is the default), ``specific: [stable]`` once it has one. Other
    versions (a ``candidate``) stay reachable by number here but not on Triton; listing them
    in ``specific`` would make Triton's default the highest of them instead of ``stable``.
    """
    if labels.stable is None:
        return "version_policy: { latest: { num_versions: 1 } }"
    return f"version_policy: {{ specific: {{ versions: [ {labels.stable} ] }} }}"


def with_version_policy(config_pbtxt: str, labels: Labels) -> str:
    """``config_pbtxt`` with its version_policy line replaced (or added) for ``labels``."""
    policy = triton_version_policy(labels)
    lines = config_pbtxt.rstrip("\n").split("\n")
    kept = [line for line in lines if not line.startswith("version_policy:")]
    return "\n".join([*kept, policy]) + "\n"
