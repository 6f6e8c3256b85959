"""Architecture options a catalog model's Keras constructor takes, as data.

Fine-tuning jobs accept these as ``base_kwargs``; the server checks them when a job is
created (it has no TensorFlow, so it cannot ask Keras), and a test checks this table against
the constructors' real signatures. Arguments the zoo sets itself (weights, include_top,
input_shape, classes, pooling, classifier_activation, name) and ``include_preprocessing``
(the exported graph's preprocessing depends on it) are not options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from zoo.catalog.spec import ModelSpec
from zoo.errors import InvalidArgument


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # float, int or bool
    low: float = 0.0
    high: float = 1.0
    high_inclusive: bool = True
    shapes_weights: bool = False  # changes weight shapes: ImageNet files no longer fit

    def check(self, value: Any) -> Any:
        """``value`` as ``kind``; InvalidArgument when it is not a finite value in range."""
        number = float(value) if isinstance(value, (int, float)) else math.nan
        if self.kind is bool:
            if number not in (0.0, 1.0):
                raise InvalidArgument(f"{self.name} is true or false (1 or 0); received {value!r}")
            return bool(number)
        whole = self.kind is not int or number.is_integer()
        above = number < self.high if not self.high_inclusive else number <= self.high
        if not (math.isfinite(number) and whole and self.low <= number and above):
            closing = "]" if self.high_inclusive else ")"
            raise InvalidArgument(
                f"{self.name} must be {'a whole number' if self.kind is int else 'a number'} "
                f"in [{self.low:g}, {self.high:g}{closing}; received {value!r}"
            )
        return self.kind(number)


ALPHA = Option("alpha", float, 0.1, 4.0, shapes_weights=True)
FAMILY_OPTIONS: dict[str, tuple[Option, ...]] = {
    "mobilenet": (
        ALPHA,
        Option("depth_multiplier", int, 1, 8, shapes_weights=True),
        Option("dropout", float, 0, 1, high_inclusive=False),
    ),
    "mobilenet_v2": (ALPHA,),
    "mobilenet_v3": (
        ALPHA,
        Option("minimalistic", bool, shapes_weights=True),
        Option("dropout_rate", float, 0, 1, high_inclusive=False),
    ),
}


def options_of(spec: ModelSpec) -> tuple[Option, ...]:
    return FAMILY_OPTIONS.get(spec.family, ())


def refuse_reshaping_imagenet(spec: ModelSpec, names: Any) -> None:
    """InvalidArgument if any of ``names`` reshapes ``spec``'s weights (ImageNet's won't fit)."""
    clashing = sorted(o.name for o in options_of(spec) if o.shapes_weights and o.name in names)
    if clashing:
        raise InvalidArgument(
            f"the cached ImageNet weights are for {spec.name}'s default architecture; "
            f"received {clashing}. Pass weights=None or the path of matching weights"
        )


def check_options(
    spec: ModelSpec, values: dict[str, Any], pretrained: bool = False
) -> dict[str, Any]:
    """``values`` checked against ``spec``'s options; InvalidArgument naming what is allowed.

    ``pretrained``: ImageNet weights will be loaded, so options that reshape them are refused.
    """
    known = {o.name: o for o in options_of(spec)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidArgument(
            f"{spec.name} takes no option {shown}{more}; its options are: {allowed}"
        )
    checked = {name: known[name].check(value) for name, value in values.items()}
    if pretrained:
        refuse_reshaping_imagenet(spec, checked)
    return checked
