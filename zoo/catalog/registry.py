"""The registry: a name -> ``ModelSpec`` table filled by the family modules at import time."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable

from zoo.catalog.spec import ModelSpec
from zoo.errors import AlreadyExists, NotFound

_SPECS: dict[str, ModelSpec] = {}  # lower-case name -> spec


def register(*specs: ModelSpec) -> None:
    """Add specs to the catalog. A name already taken (case-insensitively) raises."""
    for spec in specs:
        key = spec.name.lower()
        if key in _SPECS:
            raise AlreadyExists(f"model {spec.name!r} is already registered")
        _SPECS[key] = spec


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders embedded numbers numerically: ResNet50 before ResNet101."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name))


def list_models(
    pattern: str = "*", exclude: Iterable[str] = (), family: str | None = None
) -> list[ModelSpec]:
    """Specs whose names match ``pattern`` and none of ``exclude`` (fnmatch, case-insensitive).

    Args:
        pattern: shell-style pattern, e.g. ``"ResNet*"``. Defaults to ``"*"``.
        exclude: patterns removed after the include step. Defaults to none.
        family: keep only this family (e.g. ``"resnet"``), case-insensitive. Defaults to all.

    Returns:
        The matching specs in natural order of their names.
    """
    if isinstance(exclude, str):
        exclude = (exclude,)
    pattern = pattern.lower()
    excludes = [e.lower() for e in exclude]
    found = [
        spec
        for key, spec in _SPECS.items()
        if fnmatch.fnmatchcase(key, pattern)
        and not any(fnmatch.fnmatchcase(key, e) for e in excludes)
        and (family is None or spec.family == family.lower())
    ]
    return sorted(found, key=lambda s: natural_key(s.name))


def families() -> list[str]:
    return sorted({s.family for s in _SPECS.values()}, key=natural_key)


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name`` (case-insensitive).

    Raises:
        NotFound: no model has that name; the message suggests the closest names.
    """
    spec = _SPECS.get(name.lower())
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name.lower(), list(_SPECS), n=3, cutoff=0.5)
    hint = (
        f"; did you mean {', '.join(_SPECS[c].name for c in close)}?"
        if close
        else "; `zoo models` lists them"
    )
    raise NotFound(f"unknown model {name!r}: the catalog has {len(_SPECS)} models{hint}")
