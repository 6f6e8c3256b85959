"""Typed results of the SDK."""

from __future__ import annotations

from dataclasses import dataclass
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
