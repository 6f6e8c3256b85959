"""``zoo.json``: what a published model version is, written by export and read by serving.

One class writes and reads it (``Manifest.to_dict``/``from_dict``), so the two sides cannot
drift. The format is versioned (``format``: ``keras-zoo.model/<major>``): a reader accepts its
own major version and refuses a newer one with a clear error; fields it does not know (written
by a newer minor release, or added by hand) are kept in ``extra`` and written back unchanged.
The nested documents that only people read (ONNX facts, export timings, the verification and
training reports) stay plain JSON objects.
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
