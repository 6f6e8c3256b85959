"""A model repository on disk, laid out as Triton lays one out, plus our ``zoo.json``.

```
<root>/<model>/config.pbtxt          Triton model configuration (newest version's signature)
<root>/<model>/labels.json           version labels (stable, candidate, ...) and their history
<root>/<model>/<version>/model.onnx
<root>/<model>/<version>/zoo.json    source, preprocessing, labels, verification figures, sha256
<root>/.staging/                     versions being assembled (hidden from readers and Triton)
```

Versions are positive integers. A caller pins one by number or by label (``zoo.labels``);
otherwise the version labelled ``stable`` is served, or the newest when no version carries
that label (a repository without labels behaves as "newest wins"). A version is
assembled in ``.staging`` and renamed into place in one step, so a reader, or Triton, never
sees half a version, and a crash or kill at any moment leaves the repository as it was.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zoo import labels as version_labels
from zoo.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zoo.files import write_text_atomically
from zoo.labels import STABLE, Labels, validate_label
from zoo.lifetime import clear_dead_writers
from zoo.manifest import Manifest, ManifestError

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "zoo.json"
CONFIG_FILE = "config.pbtxt"
STAGING_DIR = ".staging"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Versions are whole numbers 1..2**53-1: exact in every JSON client, far inside int64 (a
# version past int64 once made every listing of its model fail to serialise).
MAX_VERSION = 2**53 - 1

log = logging.getLogger("zoo.repository")


def validate_model_name(name: object) -> str:
    """``name`` if it is a safe model name, else InvalidArgument saying what is allowed."""
    if (
        not isinstance(name, str)
        or not _NAME.fullmatch(name)
        or name.startswith(".")  # hidden names are ours (staging) and '.', '..' escape
    ):
        raise InvalidArgument(
            f"invalid model name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . - "
            "not starting with '.'"
        )
    return name


def _validate_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise InvalidArgument(
            f"a version is a whole number from 1 to {MAX_VERSION}; received {version!r}"
        )
    return version


def _version_of(directory_name: str) -> int | None:
    """The version a directory name stands for; None for anything else (ASCII digits only)."""
    if directory_name.isascii() and directory_name.isdigit():
        number = int(directory_name)
        if 1 <= number <= MAX_VERSION:
            return number
    return None


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    path: Path

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    def manifest(self) -> Manifest:
        """The version's ``zoo.json``; NotFound without one, ManifestError if unreadable."""
        try:
            text = (self.path / MANIFEST_FILE).read_text()
        except FileNotFoundError:
            raise NotFound(f"{self.model} version {self.version} has no {MANIFEST_FILE}") from None
        try:
            return Manifest.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ManifestError(
                f"{self.model} version {self.version}: {MANIFEST_FILE}: {e}"
            ) from None


class Repository:
    """Lists, reads and atomically adds model versions under one directory."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root)
        self._listing: dict[str, tuple[int, list[int]]] = {}
        self._labels: dict[str, tuple[tuple[int, int, int], Labels]] = {}
        self._paths: dict[tuple[str, str], str] = {}
        if self.root.exists() and not self.root.is_dir():
            raise InvalidArgument(
                f"repository path {str(self.root)!r} is a file; expected a directory"
            )
        if not self.root.exists():
            if not create:
                raise NotFound(f"repository {str(self.root)!r} does not exist")
            self.root.mkdir(parents=True)

    def __repr__(self) -> str:
        return f"Repository({str(self.root)!r})"

    def models(self) -> list[str]:
        """Names of models that have at least one version, sorted."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and self._version_numbers(p)
        )

    @staticmethod
    def _version_numbers(model_dir: Path) -> list[int]:
        # A directory named out of range (made by hand, or by an older version) is skipped
        # rather than allowed to break the listing of the model's other versions.
        numbers = ((p, _version_of(p.name)) for p in model_dir.iterdir())
        return sorted(n for p, n in numbers if n and p.is_dir() and (p / MODEL_FILE).is_file())

    def _path_of(self, model: str, file: str = "") -> str:
        """``<root>/<model>[/<file>]`` as a string, the name checked once and remembered:
        pathlib costs more than the stat itself on the request path."""
        key = (model, file)
        path = self._paths.get(key)
        if path is None:
            validate_model_name(model)
            path = os.path.join(self.root, model, file) if file else os.path.join(self.root, model)
            if len(self._paths) < 10_000:  # names come from requests: bounded
                self._paths[key] = path
        return path

    def versions(self, model: str) -> list[int]:
        """Versions of ``model``, oldest first. Unknown model: NotFound.

        Served on every request, so the listing is cached per model directory and read
        again when the directory's modification time changes, which publishing a version
        (a rename into it) always does: one stat instead of a directory scan. Removing a
        model.onnx by hand from inside a version directory is not seen until the next change.
        """
        try:  # one stat on a string path: this runs on every request
            st = os.stat(self._path_of(model))
            stamp = st.st_mtime_ns if stat.S_ISDIR(st.st_mode) else None
        except (OSError, ValueError):
            stamp = None
        cached = self._listing.get(model)
        # Timestamps tick coarsely (a few ms): a directory changed in the last second may
        # change again within the same tick, so only a settled one is served from cache.
        settled = stamp is not None and time.time_ns() - stamp > 1_000_000_000
        if settled and cached is not None and cached[0] == stamp:
            found = cached[1]
        else:
            found = self._version_numbers(self.root / model) if stamp is not None else []
            if stamp is not None:
                self._listing[model] = (stamp, found)
        if not found:
            known = ", ".join(self.models()) or "none"
            raise NotFound(f"model {model!r} is not in {self.root} (models: {known})")
        return list(found)

    def get(self, model: str, version: int | str | None = None) -> ModelVersion:
        """One version of ``model``: ``version`` (a number or a label), else the default one
        (``stable``, or the newest when no version is labelled stable)."""
        available = self.versions(model)
        if version is None or isinstance(version, str):
            chosen = self._labelled(model, version or STABLE, available, required=bool(version))
        else:
            chosen = _validate_version(version)
        if chosen not in available:
            raise NotFound(
                f"model {model!r} has no version {chosen}; it has {', '.join(map(str, available))}"
            )
        return ModelVersion(model, chosen, self.root / model / str(chosen))

    def default_version(self, model: str) -> int:
        """The version a request without one gets: ``stable``'s, else the newest."""
        return self.get(model).version

    def _labelled(self, model: str, label: str, available: list[int], *, required: bool) -> int:
        validate_label(label)
        labels = self.labels(model)
        if label not in labels.labels:
            if not required:
                return available[-1]
            known = ", ".join(f"{k} -> {v}" for k, v in sorted(labels.labels.items())) or "none"
            raise NotFound(f"model {model!r} has no version labelled {label!r} (labels: {known})")
        number = labels.labels[label]
        if number not in available:
            raise NotFound(
                f"model {model!r}: label {label!r} points at version {number}, which is not in "
                f"the repository (versions: {', '.join(map(str, available))})"
            )
        return number

    def labels(self, model: str) -> Labels:
        """The labels of ``model`` (an unknown model: NotFound).

        Read on every request without a version, so the parsed file is cached and read again
        when its inode, modification time or size changes: each write renames a new file into
        place, one history entry longer, so the next request after a promote, from this
        process or another, sees it (even if the inode is reused within a timestamp tick).
        """
        try:
            st = os.stat(self._path_of(model, version_labels.LABELS_FILE))
        except (FileNotFoundError, NotADirectoryError):
            self.versions(model)  # NotFound for an unknown model
            return Labels()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._labels.get(model)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = version_labels.read_labels(self.root / model)
        self._labels[model] = (stamp, found)
        return found

    def set_label(
        self, model: str, label: str, version: int, *, by: str = "", peer: str = ""
    ) -> Labels:
        """Point ``label`` at ``version``; the same again changes nothing (idempotent)."""
        validate_label(label)
        self.get(model, _validate_version(version))  # NotFound for an unknown version
        with self._label_writer(model) as current:
            if current.labels.get(label) == version:
                return current
            updated = version_labels.change(current, label, version, "promote", by, peer)
            self._write_labels(model, updated)
        log.info(
            "model %s: label %s -> version %s (was %s) by %r from %s",
            *(model, label, version, current.labels.get(label), by, peer or "this process"),
        )
        return updated

    def rollback(self, model: str, label: str = STABLE, *, by: str = "", peer: str = "") -> Labels:
        """Point ``label`` back at the version it pointed at before (its history as a stack)."""
        validate_label(label)
        available = self.versions(model)
        with self._label_writer(model) as current:
            target = current.rollback_target(label)
            if target is None:
                raise FailedPrecondition(
                    f"model {model!r}: label {label!r} has no earlier version to roll back to "
                    f"(it is {current.labels.get(label, 'not set')}; promote a version first)"
                )
            if target not in available:
                raise FailedPrecondition(
                    f"model {model!r}: label {label!r} was at version {target} before, which "
                    "is no longer in the repository"
                )
            updated = version_labels.change(current, label, target, "rollback", by, peer)
            self._write_labels(model, updated)
        log.info(
            "model %s: label %s rolled back to version %s (was %s) by %r from %s",
            *(model, label, target, current.labels.get(label), by, peer or "this process"),
        )
        return updated

    @contextmanager
    def _label_writer(self, model: str) -> Iterator[Labels]:
        model_dir = self.root / model
        self.versions(model)  # NotFound for an unknown model
        with version_labels.locked(model_dir):
            yield version_labels.read_labels(model_dir)

    def _write_labels(self, model: str, labels: Labels) -> None:
        """Labels first, then the config's version policy: Triton follows the labels."""
        model_dir = self.root / model
        version_labels.write_labels(model_dir, labels)
        config = model_dir / CONFIG_FILE
        if config.is_file():
            text = config.read_text()
            updated = version_labels.with_version_policy(text, labels)
            if updated != text:
                write_text_atomically(config, updated)

    def manifest(self, model: str, version: int | str | None = None) -> Manifest:
        return self.get(model, version).manifest()

    @contextmanager
    def stage(self) -> Iterator[Path]:
        """A private directory to assemble a version in; removed afterwards in any case."""
        staging = self.root / STAGING_DIR
        clear_dead_writers(staging)
        staging.mkdir(exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=staging))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(
        self, staged: Path, model: str, config_pbtxt: str, version: int | None = None
    ) -> ModelVersion:
        """Move a staged version (a directory holding model.onnx) into place atomically.

        ``version=None`` takes the next free number; a pinned version that exists raises
        AlreadyExists. The staged ``zoo.json`` gets its final model name and version number
        written into it just before the move.
        """
        validate_model_name(model)
        if not (staged / MODEL_FILE).is_file():
            raise InvalidArgument(f"staged directory {staged} has no {MODEL_FILE}")
        model_dir = self.root / model
        existing = self._version_numbers(model_dir) if model_dir.is_dir() else []
        if version is not None:
            _validate_version(version)
            if version in existing or (model_dir / str(version)).exists():
                raise AlreadyExists(f"model {model!r} already has version {version}")
            candidates: Iterator[int] = iter([version])
        else:
            start = max(existing, default=0) + 1
            if start > MAX_VERSION:
                raise InvalidArgument(
                    f"model {model!r} has version {MAX_VERSION}, the highest allowed; "
                    "publish under another name or pin a free lower version"
                )
            candidates = iter(range(start, min(start + 1000, MAX_VERSION + 1)))
        for number in candidates:
            self._write_manifest_identity(staged, model, number)
            if self._move_into_place(staged, model_dir, number, config_pbtxt):
                return ModelVersion(model, number, model_dir / str(number))
        raise AlreadyExists(f"model {model!r}: version {version} was taken by another writer")

    @staticmethod
    def _write_manifest_identity(staged: Path, model: str, number: int) -> None:
        path = staged / MANIFEST_FILE
        manifest = json.loads(path.read_text()) if path.exists() else {}
        manifest.update(model=model, version=number)
        path.write_text(json.dumps(manifest, indent=2) + "\n")

    def _move_into_place(
        self, staged: Path, model_dir: Path, number: int, config_pbtxt: str
    ) -> bool:
        """Rename ``staged`` to ``model_dir/number``; False if that number was just taken."""
        if not model_dir.exists():
            # A new model appears whole: wrap version and config in a staged model
            # directory and rename that, so no empty model directory is ever visible.
            wrapper = staged.parent / f"{staged.name}.model"
            wrapper.mkdir()
            (wrapper / CONFIG_FILE).write_text(config_pbtxt)
            os.rename(staged, wrapper / str(number))
            try:
                os.rename(wrapper, model_dir)
                return True
            except OSError:
                # Another writer created the model meanwhile: fall back to a version move.
                os.rename(wrapper / str(number), staged)
                shutil.rmtree(wrapper, ignore_errors=True)
        try:
            os.rename(staged, model_dir / str(number))
        except OSError:
            if (model_dir / str(number)).exists():
                return False
            raise
        with version_labels.locked(model_dir):  # a promote meanwhile rewrites the policy too
            labels = version_labels.read_labels(model_dir)
            if labels.stable is not None:  # Triton keeps serving stable, not the new version
                config_pbtxt = version_labels.with_version_policy(config_pbtxt, labels)
            write_text_atomically(model_dir / CONFIG_FILE, config_pbtxt)
        return True
