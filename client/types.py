"""Typed results of the SDK."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    name: str
    catalog_model: str
    family: str
    versions: tuple[int, ...]
    loaded_versions: tuple[int, ...]
    input_shape: tuple[int, ...]
    preprocessing: str
    num_classes: int
    parameters: int
    size_mb: float
    top1_accuracy: float
    top5_accuracy: float
    execution_provider: str
    labels: dict[str, int] = field(default_factory=dict)  # label -> version
    # model(name, version) only: that version's test-split report (zoo.json's "evaluation")
    evaluation: dict[str, Any] | None = None
    evaluated_version: int = 0

    @property
    def served(self) -> bool:
        return bool(self.versions)


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Classification:
    """The top-k predictions of one image, highest score first."""

    predictions: tuple[Prediction, ...]
    model: str
    version: int

    @property
    def top(self) -> Prediction:
        return self.predictions[0]


@dataclass(frozen=True)
class LabelChange:
    """One change of a version label: ``by`` is the identity the caller claimed (the server's
    shared token does not prove it), ``peer`` the address the server saw."""

    label: str
    version: int
    previous: int | None  # None: the label was new
    action: str  # "promote" or "rollback"
    by: str
    peer: str
    at: str  # ISO 8601, UTC


@dataclass(frozen=True)
class ModelLabels:
    """A model's version labels, the version a request without one gets, and the history."""

    model: str
    labels: dict[str, int]
    default_version: int
    history: tuple[LabelChange, ...]

    @property
    def stable(self) -> int | None:
        return self.labels.get("stable")
