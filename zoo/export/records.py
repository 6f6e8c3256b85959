"""What crosses the process boundary of an export: the child's request and its result.

``zoo.export.exporter`` writes a ``ChildRequest`` as JSON for ``python -m zoo.export.child`` and
reads the ``ChildResult`` it prints back; both sides use these classes, so a key cannot be
written under one name and read under another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CatalogSource:
    """A catalog model, built in the child with these arguments."""

    name: str
    weights: str | None  # Keras's ``weights=`` argument: "imagenet", a file path, or None
    input_shape: tuple[int, int, int] | None = None
    weights_dir: str | None = None
    allow_download: bool = False
    constructor_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "catalog",
            "name": self.name,
            "weights": self.weights,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "weights_dir": self.weights_dir,
            "allow_download": self.allow_download,
            "constructor_kwargs": dict(self.constructor_kwargs),
        }


@dataclass(frozen=True)
class KerasFileSource:
    """A saved Keras model (``.keras``), with the preprocessing to put into the graph."""

    path: str
    preprocessing: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "keras_file", "path": self.path, "preprocessing": self.preprocessing}


ChildSource = CatalogSource | KerasFileSource


def source_from_dict(data: Mapping[str, Any]) -> ChildSource:
    if data["kind"] == "keras_file":
        return KerasFileSource(path=data["path"], preprocessing=data["preprocessing"])
    if data["kind"] != "catalog":
        raise ValueError(f"unknown export source kind {data['kind']!r}")
    shape = data.get("input_shape")
    return CatalogSource(
        name=data["name"],
        weights=data["weights"],
        input_shape=(int(shape[0]), int(shape[1]), int(shape[2])) if shape else None,
        weights_dir=data.get("weights_dir"),
        allow_download=bool(data.get("allow_download", False)),
        constructor_kwargs=dict(data.get("constructor_kwargs") or {}),
    )


@dataclass(frozen=True)
class ChildRequest:
    source: ChildSource
    input: str  # "uint8" (preprocessing in the graph) or "float32"
    output: str  # where the child writes model.onnx
    opset: int | None
    rel_tol: float
    float32_margin: float
    images: tuple[str, ...] = ()  # verify on these files, not the standard inputs

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.to_dict(),
            "input": self.input,
            "output": self.output,
            "opset": self.opset,
            "rel_tol": self.rel_tol,
            "float32_margin": self.float32_margin,
            "images": list(self.images),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChildRequest:
        return cls(
            source=source_from_dict(data["source"]),
            input=data["input"],
            output=data["output"],
            opset=data.get("opset"),
            rel_tol=float(data["rel_tol"]),
            float32_margin=float(data["float32_margin"]),
            images=tuple(str(p) for p in data.get("images", ())),
        )


@dataclass(frozen=True)
class ChildResult:
    """The child's figures: what the graph takes and gives, and how the check went."""

    preprocessing: str
    input_shape: tuple[int, int, int]
    num_classes: int
    seconds: float
    peak_rss_bytes: int
    keras_version: str
    verification: Mapping[str, Any]  # zoo.export.verify.Verification.to_dict()
    opset: int
    nodes: int
    folded_nodes: int
    initializers: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "preprocessing": self.preprocessing,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "seconds": self.seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "keras_version": self.keras_version,
            "verification": dict(self.verification),
            "opset": self.opset,
            "nodes": self.nodes,
            "folded_nodes": self.folded_nodes,
            "initializers": self.initializers,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChildResult:
        height, width, channels = (int(d) for d in data["input_shape"])
        return cls(
            preprocessing=data["preprocessing"],
            input_shape=(height, width, channels),
            num_classes=int(data["num_classes"]),
            seconds=float(data["seconds"]),
            peak_rss_bytes=int(data["peak_rss_bytes"]),
            keras_version=data["keras_version"],
            verification=dict(data["verification"]),
            opset=int(data["opset"]),
            nodes=int(data["nodes"]),
            folded_nodes=int(data["folded_nodes"]),
            initializers=int(data["initializers"]),
        )
