"""The pretrained-weights cache: offline first.

Files live where Keras itself looks, ``$KERAS_HOME/models`` (``~/.keras/models`` by default),
under the names Keras uses, so a cache seeded here also serves plain Keras. Nothing is
downloaded unless a caller asks for it: this service runs in air-gapped data centres, where
an operator copies the files in with ``zoo weights seed DIR`` and every file is checked
against the hash Keras publishes before it is used.
"""

from __future__ import annotations

import enum
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zoo.catalog import ModelSpec, list_models
from zoo.catalog.spec import WeightsFile
from zoo.errors import IntegrityError, InvalidArgument, NotFound, WeightsNotFound

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from; the one place that reads "imagenet"/"none"/a path.

    ``imagenet``: the published file, from the cache; ``none``: random initialisation; a
    path: a Keras weights file. Requests, jobs and the CLI spell these as strings (JSON has
    no None for "no weights"), the Keras constructors as ``"imagenet"``/``None``/a path.
    """

    kind: str  # "imagenet" | "none" | "file"
    path: str | None = None

    @classmethod
    def parse(cls, value: WeightsSource | str | os.PathLike[str] | None) -> WeightsSource:
        if isinstance(value, WeightsSource):
            return value
        if value is None or value == "none":
            return cls("none")
        if value == "imagenet":
            return cls("imagenet")
        text = os.fspath(value)
        if not text:
            raise InvalidArgument("weights is empty; expected 'imagenet', 'none' or a file path")
        return cls("file", text)

    @property
    def keras_arg(self) -> str | None:
        """What ``keras.applications`` constructors take as ``weights``."""
        return {"imagenet": "imagenet", "none": None}.get(self.kind, self.path)

    def __str__(self) -> str:
        """The string form requests and job records use."""
        return self.path if self.kind == "file" and self.path else self.kind


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The weights cache: ``explicit``, else ``$KERAS_HOME/models``, else ``~/.keras/models``."""
    if explicit is not None:
        return Path(explicit)
    keras_home = os.environ.get("KERAS_HOME")
    base = Path(keras_home) if keras_home else Path.home() / ".keras"
    return base / "models"


def file_hash(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


class FileState(enum.StrEnum):
    VERIFIED = "verified"
    UNVERIFIED = "present, no published hash"
    MISSING = "missing"
    MISMATCH = "hash mismatch"


@dataclass(frozen=True)
class FileStatus:
    model: str
    include_top: bool
    file: WeightsFile
    path: Path
    state: FileState

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "include_top": self.include_top,
            "file_name": self.file.file_name,
            "path": str(self.path),
            "state": self.state.name.lower(),
        }


def check_file(wf: WeightsFile, path: Path) -> FileState:
    if not path.is_file():
        return FileState.MISSING
    if wf.file_hash is None or wf.hash_algorithm is None:
        return FileState.UNVERIFIED
    if file_hash(path, wf.hash_algorithm) != wf.file_hash.lower():
        return FileState.MISMATCH
    return FileState.VERIFIED


def status(
    specs: Iterable[ModelSpec] | None = None, directory: str | os.PathLike[str] | None = None
) -> list[FileStatus]:
    """Which weights files are present in the cache and whether their hashes match."""
    root = cache_dir(directory)
    result = []
    for spec in list_models() if specs is None else specs:
        for include_top in (True, False):
            wf = spec.weights_file(include_top)
            path = root / wf.file_name
            result.append(FileStatus(spec.name, include_top, wf, path, check_file(wf, path)))
    return result


def _known_files(specs: Iterable[ModelSpec]) -> dict[str, WeightsFile]:
    return {wf.file_name: wf for spec in specs for wf in (spec.weights_top, spec.weights_notop)}


@dataclass(frozen=True)
class SeedReport:
    copied: tuple[str, ...]
    unverified: tuple[str, ...]  # copied, but Keras publishes no hash for them
    refused: tuple[str, ...]  # one message per file whose hash did not match
    ignored: tuple[str, ...]  # files that are no catalog model's weights

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.__dict__.items()}


def _copy_atomically(source: Path, target: Path) -> None:
    # A reader never sees half a file: copy beside the target, then rename over it.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _walk(source: Path) -> Iterator[Path]:
    return (p for p in sorted(source.rglob("*")) if p.is_file())


def seed(
    source: str | os.PathLike[str],
    directory: str | os.PathLike[str] | None = None,
    specs: Iterable[ModelSpec] | None = None,
) -> SeedReport:
    """Copy the weights files found under ``source`` into the cache, checking each hash.

    A file whose hash does not match the published one is refused and not copied; files
    that are no model's weights are ignored. Returns what happened to each file.
    """
    src = Path(source)
    if not src.is_dir():
        raise NotFound(f"seed source {str(src)!r} is not a directory")
    known = _known_files(list_models() if specs is None else specs)
    root = cache_dir(directory)
    copied: list[str] = []
    unverified: list[str] = []
    refused: list[str] = []
    ignored: list[str] = []
    for path in _walk(src):
        wf = known.get(path.name)
        if wf is None:
            ignored.append(path.name)
            continue
        state = check_file(wf, path)
        if state is FileState.MISMATCH:
            assert wf.hash_algorithm is not None
            refused.append(
                f"{path}: {wf.hash_algorithm} {file_hash(path, wf.hash_algorithm)} does not "
                f"match the published {wf.file_hash}; the file is corrupt or not the "
                "published one, so it was not copied"
            )
            continue
        _copy_atomically(path, root / wf.file_name)
        (unverified if state is FileState.UNVERIFIED else copied).append(wf.file_name)
    return SeedReport(tuple(copied), tuple(unverified), tuple(refused), tuple(ignored))


def locate(
    spec: ModelSpec,
    include_top: bool,
    directory: str | os.PathLike[str] | None = None,
    allow_download: bool = False,
) -> Path:
    """Path of the verified weights file of ``spec``; downloads only if ``allow_download``.

    Raises:
        WeightsNotFound: the file is not in the cache and downloading was not allowed.
        IntegrityError: the cached file does not match its published hash.
    """
    wf = spec.weights_file(include_top)
    root = cache_dir(directory)
    path = root / wf.file_name
    state = check_file(wf, path)
    if state is FileState.MISSING:
        if not allow_download:
            raise WeightsNotFound(
                f"weights for {spec.name} (include_top={include_top}) are not in the cache: "
                f"expected {path}. Copy {wf.file_name} there with `zoo weights seed DIR`, "
                f"or on a machine with internet run `zoo weights fetch {spec.name}` "
                f"(source: {wf.origin})"
            )
        return download(wf, root)
    if state is FileState.MISMATCH:
        raise IntegrityError(
            f"{path} does not match its published {wf.hash_algorithm} {wf.file_hash}; "
            "delete it and seed or fetch it again"
        )
    return path


def download(wf: WeightsFile, directory: Path) -> Path:
    """Fetch one file with Keras's own downloader, which checks the published hash."""
    from keras.utils import get_file  # heavy: only when a download is really asked for

    if directory.name != "models":
        raise InvalidArgument(
            f"weights directory {str(directory)!r} must be named 'models' (as Keras lays it out)"
        )
    path = get_file(
        fname=wf.file_name,
        origin=wf.origin,
        file_hash=wf.file_hash,
        cache_subdir="models",
        cache_dir=str(directory.parent),
    )
    return Path(path)


def fetch(
    specs: Iterable[ModelSpec], directory: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Download (or find) both weights files of each spec, hash-checked."""
    return [
        locate(spec, top, directory, allow_download=True) for spec in specs for top in (True, False)
    ]
