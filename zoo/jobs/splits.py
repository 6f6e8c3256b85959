"""Train/validation/test splits of a dataset, and the manifests that may name them.

A split is recorded with its dataset, so every job that asks for the same split evaluates on
the same test images and two versions' reports compare:

- A dataset uploaded with a manifest that has a ``split`` column has one split, written with
  the dataset (``.splits/manifest.json``, inside the same atomic rename); the fractions a job
  asks for do not apply to it.
- Otherwise the split is stratified and seeded (scikit-learn's ``train_test_split`` with
  ``stratify``: every class keeps its share in each part) and written on first use as
  ``.splits/<key>.json``, the key naming the fractions and seed. Two jobs that compute it at
  once compute the same thing, and each writes a whole file then renames it.

A class needs at least 3 images to appear in all three parts; a smaller class is refused
with a clear error rather than left out of the test split silently.

A manifest is ``manifest.csv`` (a header ``path,label[,split]``) or ``manifest.jsonl`` (one
object a line, keys ``path``, ``label`` and optional ``split``) at the top of the archive.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import InvalidArgument
from zoo.files import write_text_atomically

PARTS = ("train", "validation", "test")
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
SPLITS_DIR = ".splits"  # hidden: a class name never starts with "."
MANIFEST_SPLIT = "manifest"  # .splits/manifest.json: a manifest's split, part of the dataset
FORMAT = "keras-zoo.split/1"
MIN_PER_CLASS = 3


@dataclass(frozen=True)
class DatasetSplit:
    """Which stored images (``class/file`` paths) are in each part.

    Attributes:
        id: ``manifest`` or ``stratified-v<validation>-t<test>-s<seed>``.
        train, validation, test: stored paths relative to the dataset folder, sorted.
    """

    id: str
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def part(self, name: str) -> tuple[str, ...]:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "id": self.id, **{p: list(self.part(p)) for p in PARTS}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSplit:
        return cls(str(data["id"]), *(tuple(str(x) for x in data[p]) for p in PARTS))


def split_key(validation: float, test: float, seed: int) -> str:
    return f"stratified-v{validation:g}-t{test:g}-s{seed}"


def stratified_split(
    paths: Sequence[str], labels: Sequence[str], validation: float, test: float, seed: int
) -> DatasetSplit:
    """Split ``paths`` three ways, each class in proportion; the same inputs, the same split."""
    from sklearn.model_selection import train_test_split

    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 1):
        raise InvalidArgument(
            "validation_split and test_split must each be in (0, 1) and sum to less than 1; "
            f"received {validation!r} and {test!r}"
        )
    counts = Counter(labels)
    small = sorted((n, c) for c, n in counts.items() if n < MIN_PER_CLASS)
    if small:
        shown = ", ".join(f"{c!r} ({n})" for n, c in small[:5])
        raise InvalidArgument(
            f"every class needs at least {MIN_PER_CLASS} images to appear in train, validation "
            f"and test; {len(small)} classes have fewer: {shown}"
        )
    try:
        rest, test_part, rest_labels, _ = train_test_split(
            list(paths), list(labels), test_size=test, stratify=list(labels), random_state=seed
        )
        train_part, validation_part = train_test_split(
            rest,
            test_size=validation / (1 - test),
            stratify=rest_labels,
            random_state=seed,
        )
    except ValueError as e:  # too few images for a part to hold one of every class
        raise InvalidArgument(
            f"cannot split {len(paths)} images of {len(counts)} classes into validation "
            f"{validation:g} and test {test:g}: {e}"
        ) from None
    return DatasetSplit(
        split_key(validation, test, seed),
        tuple(sorted(train_part)),
        tuple(sorted(validation_part)),
        tuple(sorted(test_part)),
    )


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(data, indent=1) + "\n")


# --- Manifests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestRow:
    line: int  # for messages: the line (CSV: counting the header) it came from
    path: str
    label: str
    split: str | None


def parse_manifest(name: str, data: bytes) -> list[ManifestRow]:
    """The rows of ``manifest.csv`` or ``manifest.jsonl``; InvalidArgument for a bad one."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidArgument(f"{name} is not UTF-8 text: {e}") from None
    rows = _csv_rows(name, text) if name.endswith(".csv") else _jsonl_rows(name, text)
    if not rows:
        raise InvalidArgument(f"{name} lists no images; expected rows of path,label[,split]")
    with_split = [r for r in rows if r.split is not None]
    if with_split and len(with_split) != len(rows):
        first = next(r for r in rows if r.split is None)
        raise InvalidArgument(
            f"{name} line {first.line}: no split, but other rows have one; give every row a "
            f"split ({', '.join(PARTS)}) or none"
        )
    seen: dict[str, int] = {}
    for row in rows:
        if not row.path:
            raise InvalidArgument(f"{name} line {row.line}: label {row.label!r} has no image path")
        if not row.label:
            raise InvalidArgument(f"{name} line {row.line}: image {row.path!r} has no label")
        if row.split is not None and row.split not in PARTS:
            raise InvalidArgument(
                f"{name} line {row.line}: unknown split {row.split!r}; expected one of "
                f"{', '.join(PARTS)}"
            )
        if row.path in seen:
            raise InvalidArgument(
                f"{name} line {row.line}: path {row.path!r} is listed twice (first on line "
                f"{seen[row.path]})"
            )
        seen[row.path] = row.line
    return rows


def _csv_rows(name: str, text: str) -> list[ManifestRow]:
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if header[:2] != ["path", "label"] or header[2:] not in ([], ["split"]):
        raise InvalidArgument(
            f"{name} must start with the header path,label or path,label,split; "
            f"received {','.join(header) or '(nothing)'}"
        )
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise InvalidArgument(
                f"{name} line {reader.line_num}: {len(values)} fields; expected {len(header)} "
                f"({','.join(header)})"
            )
        split = values[2].strip() if len(header) == 3 else None
        rows.append(ManifestRow(reader.line_num, values[0].strip(), values[1].strip(), split))
    return rows


def _jsonl_rows(name: str, text: str) -> list[ManifestRow]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"{name} line {number}: not JSON: {e}") from None
        if not isinstance(row, dict) or not set(row) <= {"path", "label", "split"}:
            raise InvalidArgument(
                f"{name} line {number}: expected an object with path, label and optional "
                f"split; received {line.strip()[:80]!r}"
            )
        split = row.get("split")
        values = [row.get("path", ""), row.get("label", ""), split if split is not None else ""]
        if not all(isinstance(v, str) for v in values):
            raise InvalidArgument(
                f"{name} line {number}: path, label and split must be strings; received "
                f"{line.strip()[:80]!r}"
            )
        rows.append(ManifestRow(number, row.get("path", ""), row.get("label", ""), split))
    return rows
