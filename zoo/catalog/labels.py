"""Class names: the 1000 ImageNet classes ship with the package and are never downloaded."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def imagenet_class_index() -> tuple[tuple[str, str], ...]:
    """(WordNet id, class name) for each of the 1000 ImageNet classes, in model output order.

    Same content and order as Keras's ``imagenet_class_index.json`` (first WordNet lemma
    of each synset, spaces as underscores).
    """
    text = resources.files("zoo").joinpath("data/imagenet_class_index.json").read_text()
    index = json.loads(text)
    return tuple((index[str(i)][0], index[str(i)][1]) for i in range(len(index)))


def imagenet_labels() -> list[str]:
    return [name for _, name in imagenet_class_index()]
