"""``zoo.json``: what a published model version is, written by export and read by serving.

One class writes and reads it (``Manifest.to_dict``/``from_dict``), so the two sides cannot
drift. The format is versioned (``format``: ``keras-zoo.model/<major>``): a reader accepts its
own major version and refuses a newer one with a clear error; fields it does not know (written
by a newer minor release, or added by hand) are kept in ``extra`` and written back unchanged.
The nested documents that only people read (ONNX facts, export timings, the verification and
training reports) stay plain JSON objects; the test-split evaluation, which programs compare
(promotion), is a typed record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

FORMAT = "keras-zoo.model/1"
FORMAT_PREFIX = "keras-zoo.model/"
DEFAULT_MAX_BATCH = 32  # a version whose manifest names no limit


class ManifestError(ValueError):
    """A manifest that cannot be read: not an object, a newer format, a wrong field type."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, v2 datatype and shape (batch first, -1 dynamic)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(
            name=_str(data, "name"),
            datatype=_str(data, "datatype"),
            shape=tuple(int(d) for d in _list(data, "shape")),
        )


@dataclass(frozen=True)
class InputSpec(TensorSpec):
    """The image input: layout, colour order and the preprocessing the graph holds."""

    layout: str = "NHWC"
    color: str = "RGB"
    preprocessing: str = ""
    preprocessing_in_graph: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "layout": self.layout,
            "color": self.color,
            "preprocessing": self.preprocessing,
            "preprocessing_in_graph": self.preprocessing_in_graph,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        base = TensorSpec.from_dict(data)
        return cls(
            name=base.name,
            datatype=base.datatype,
            shape=base.shape,
            layout=str(data.get("layout", "NHWC")),
            color=str(data.get("color", "RGB")),
            preprocessing=str(data.get("preprocessing", "")),
            preprocessing_in_graph=bool(data.get("preprocessing_in_graph", True)),
        )


@dataclass(frozen=True)
class Source:
    """Where the version came from: the catalog model, its constructor arguments, weights."""

    catalog_model: str | None = None
    constructor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, Any] = field(default_factory=lambda: {"kind": "none"})
    keras_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "catalog_model": self.catalog_model,
            "constructor_kwargs": dict(self.constructor_kwargs),
            "weights": dict(self.weights),
            "keras_version": self.keras_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Source:
        catalog_model = data.get("catalog_model")
        return cls(
            catalog_model=str(catalog_model) if catalog_model else None,
            constructor_kwargs=dict(data.get("constructor_kwargs") or {}),
            weights=dict(data.get("weights") or {"kind": "none"}),
            keras_version=data.get("keras_version"),
        )


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall, F1 and support of one class (or an average over classes)."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassMetrics:
        return cls(
            name=str(data["name"]),
            precision=float(data["precision"]),
            recall=float(data["recall"]),
            f1=float(data["f1"]),
            support=int(data["support"]),
        )


@dataclass(frozen=True)
class Misclassified:
    """A test image the model got wrong: its path in the dataset and what the model said."""

    path: str
    true_label: str
    predicted_label: str
    confidence: float  # the probability of the predicted label

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "true_label": self.true_label,
            "predicted_label": self.predicted_label,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Misclassified:
        return cls(
            path=str(data["path"]),
            true_label=str(data["true_label"]),
            predicted_label=str(data["predicted_label"]),
            confidence=float(data["confidence"]),
        )


@dataclass(frozen=True)
class ConfusedPair:
    """How many test images of ``true_label`` the model called ``predicted_label``."""

    true_label: str
    predicted_label: str
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "true_label": self.true_label,
            "predicted_label": self.predicted_label,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfusedPair:
        return cls(str(data["true_label"]), str(data["predicted_label"]), int(data["count"]))


@dataclass(frozen=True)
class Evaluation:
    """A fine-tuned version's report on its dataset's test split, by the ONNX model served.

    ``split`` names the recorded split (``zoo.jobs.splits``): two versions evaluated on the
    same split were judged on the same test images.
    """

    split: str
    images: int
    accuracy: float
    top5_accuracy: float | None  # only with more than 5 classes
    classes: tuple[ClassMetrics, ...]
    macro: ClassMetrics
    weighted: ClassMetrics
    confusion_matrix: tuple[tuple[int, ...], ...]  # rows: true class; columns: predicted
    most_confused: tuple[ConfusedPair, ...]
    worst_mistakes: tuple[Misclassified, ...]  # highest confidence first

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "images": self.images,
            "accuracy": self.accuracy,
            "top5_accuracy": self.top5_accuracy,
            "classes": [c.to_dict() for c in self.classes],
            "macro": self.macro.to_dict(),
            "weighted": self.weighted.to_dict(),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "most_confused": [p.to_dict() for p in self.most_confused],
            "worst_mistakes": [m.to_dict() for m in self.worst_mistakes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        top5 = data.get("top5_accuracy")
        return cls(
            split=str(data["split"]),
            images=int(data["images"]),
            accuracy=float(data["accuracy"]),
            top5_accuracy=float(top5) if top5 is not None else None,
            classes=tuple(ClassMetrics.from_dict(c) for c in data["classes"]),
            macro=ClassMetrics.from_dict(data["macro"]),
            weighted=ClassMetrics.from_dict(data["weighted"]),
            confusion_matrix=tuple(tuple(int(x) for x in row) for row in data["confusion_matrix"]),
            most_confused=tuple(ConfusedPair.from_dict(p) for p in data["most_confused"]),
            worst_mistakes=tuple(Misclassified.from_dict(m) for m in data["worst_mistakes"]),
        )


@dataclass(frozen=True)
class Manifest:
    """The ``zoo.json`` of one model version."""

    input: InputSpec
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] = ()
    source: Source = field(default_factory=Source)
    model: str | None = None  # set when published
    version: int | None = None
    max_batch_size: int = DEFAULT_MAX_BATCH
    onnx: Mapping[str, Any] = field(default_factory=dict)
    export: Mapping[str, Any] = field(default_factory=dict)
    verification: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] | None = None  # a fine-tune's report
    evaluation: Evaluation | None = None  # a fine-tune's test-split report
    format: str = FORMAT
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields this release does not know

    @property
    def catalog_model(self) -> str | None:
        return self.source.catalog_model

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            **self.extra,
            "format": self.format,
            "model": self.model,
            "version": self.version,
            "source": self.source.to_dict(),
            "input": self.input.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs],
            "labels": list(self.labels),
            "max_batch_size": self.max_batch_size,
            "onnx": dict(self.onnx),
            "export": dict(self.export),
            "verification": dict(self.verification),
        }
        if self.training is not None:
            data["training"] = dict(self.training)
        if self.evaluation is not None:
            data["evaluation"] = self.evaluation.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, Mapping):
            raise ManifestError(f"a manifest is a JSON object; received {type(data).__name__}")
        fmt = str(data.get("format", FORMAT))
        if not fmt.startswith(FORMAT_PREFIX) or _major(fmt) > _major(FORMAT):
            raise ManifestError(
                f"manifest format {fmt!r} is not one this release reads (up to {FORMAT!r}); "
                "upgrade keras-zoo"
            )
        known = {f.name for f in fields(cls)}
        try:
            input_data = data["input"]
            max_batch = data.get("max_batch_size", DEFAULT_MAX_BATCH)
            if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
                raise ManifestError(
                    f"max_batch_size must be a positive integer; received {max_batch!r}"
                )
            version = data.get("version")
            return cls(
                format=fmt,
                model=data.get("model"),
                version=int(version) if version is not None else None,
                source=Source.from_dict(data.get("source") or {}),
                input=InputSpec.from_dict(input_data),
                outputs=tuple(TensorSpec.from_dict(o) for o in data.get("outputs") or ()),
                labels=tuple(str(label) for label in data.get("labels") or ()),
                max_batch_size=max_batch,
                onnx=dict(data.get("onnx") or {}),
                export=dict(data.get("export") or {}),
                verification=dict(data.get("verification") or {}),
                training=dict(data["training"]) if data.get("training") else None,
                evaluation=(
                    Evaluation.from_dict(data["evaluation"]) if data.get("evaluation") else None
                ),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except ManifestError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ManifestError(f"manifest field missing or of the wrong type: {e}") from None

    def published_as(self, model: str, version: int) -> Manifest:
        """The same manifest with its repository identity set."""
        from dataclasses import replace

        return replace(self, model=model, version=version)


def _major(fmt: str) -> int:
    try:
        return int(fmt.removeprefix(FORMAT_PREFIX).split(".")[0])
    except ValueError:
        return 1 << 30


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise ManifestError(f"{key} must be a string; received {value!r}")
    return value


def _list(data: Mapping[str, Any], key: str) -> Sequence[Any]:
    value = data[key]
    if not isinstance(value, list | tuple):
        raise ManifestError(f"{key} must be a list; received {value!r}")
    return value
