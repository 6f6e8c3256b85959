"""Build a Keras model from the catalog, with weights from the local cache only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.catalog import ModelSpec, get_spec
from zoo.catalog import weights as weights_cache
from zoo.catalog.options import refuse_reshaping_imagenet
from zoo.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    import keras


def import_keras() -> Any:
    """Import Keras on the TensorFlow backend (the backend this project pins and exports)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def resolve_spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    return name_or_spec if isinstance(name_or_spec, ModelSpec) else get_spec(name_or_spec)


def validate_input_shape(spec: ModelSpec, input_shape: Any) -> tuple[int, int, int]:
    """``input_shape`` as an (H, W, 3) tuple within the model's limits, or InvalidArgument."""
    if input_shape is None:
        return spec.input_shape
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"input_shape must be (height, width, 3); received {input_shape!r}"
        ) from None
    if len(shape) != 3 or shape[2] != 3:
        raise InvalidArgument(
            f"input_shape must be (height, width, 3) with 3 RGB channels; received {shape}"
        )
    if min(shape[:2]) < spec.min_input_size:
        raise InvalidArgument(
            f"{spec.name} needs height and width >= {spec.min_input_size}; received {shape[:2]}"
        )
    return (shape[0], shape[1], shape[2])


def build_model(
    name: str | ModelSpec,
    weights: weights_cache.WeightsSource | str | os.PathLike[str] | None = "imagenet",
    include_top: bool = True,
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
    *,
    allow_download: bool = False,
    weights_dir: str | os.PathLike[str] | None = None,
    **constructor_kwargs: Any,
) -> keras.Model:
    """Build a ``keras.applications`` model by catalog name.

    Args:
        name: catalog name (case-insensitive, e.g. ``"MobileNetV2"``) or a ``ModelSpec``.
        weights: ``"imagenet"`` (from the local cache), ``None`` (random initialisation) or
            the path of a weights file. Defaults to ``"imagenet"``.
        include_top: keep the 1000-class classifier. Defaults to True.
        num_classes: size of the classifier when ``include_top`` and weights are not
            ImageNet's. Defaults to the spec's 1000.
        input_shape: (height, width, 3). Defaults to the model's input size; other sizes
            need ``include_top=False`` or non-ImageNet weights.
        allow_download: fetch missing ImageNet weights from Keras's servers. Defaults to
            False: a missing file raises ``WeightsNotFound`` saying how to seed it.
        weights_dir: the weights cache. Defaults to ``$KERAS_HOME/models``.
        **constructor_kwargs: passed to the Keras constructor (e.g. ``alpha=0.35``).

    Raises:
        NotFound: unknown model, or a weights path that does not exist.
        WeightsNotFound: ImageNet weights are not cached and downloading was not allowed.
        IntegrityError: the cached file does not match its published hash.
        InvalidArgument: an impossible combination of arguments.
    """
    spec = resolve_spec(name)
    shape = validate_input_shape(spec, input_shape)
    source = weights_cache.WeightsSource.parse(weights)
    pretrained = source.kind == "imagenet"
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise InvalidArgument(f"num_classes must be a positive integer; received {num_classes!r}")
    if num_classes is not None and not include_top:
        raise InvalidArgument(
            "num_classes applies to the built-in classifier, so it needs include_top=True; "
            "for transfer learning build with include_top=False and add your own head"
        )
    if pretrained and include_top:
        if num_classes not in (None, spec.num_classes):
            raise InvalidArgument(
                f"ImageNet weights with include_top=True have {spec.num_classes} classes; "
                f"received num_classes={num_classes}. Use include_top=False for a new head"
            )
        if shape != spec.input_shape:
            raise InvalidArgument(
                f"ImageNet weights with include_top=True need input_shape {spec.input_shape}; "
                f"received {shape}. Use include_top=False for other sizes"
            )
    if pretrained:
        # the catalog's weights files are for the default architecture only
        refuse_reshaping_imagenet(spec, constructor_kwargs)
        weights_arg: str | None = str(
            weights_cache.locate(spec, include_top, weights_dir, allow_download)
        )
    elif source.kind == "none":
        weights_arg = None
    else:
        path = Path(str(source.path))
        if not path.is_file():
            raise NotFound(
                f"weights file {str(path)!r} does not exist; "
                "expected 'imagenet', None or the path of a Keras weights file"
            )
        weights_arg = str(path)

    keras = import_keras()
    constructor = getattr(keras.applications, spec.constructor)
    kwargs: dict[str, Any] = {
        "weights": weights_arg,
        "include_top": include_top,
        "input_shape": shape,
        **constructor_kwargs,
    }
    if include_top:
        kwargs["classes"] = num_classes or spec.num_classes
    return constructor(**kwargs)
