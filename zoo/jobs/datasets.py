"""Labelled image datasets for fine-tuning, uploaded as a zip or tar archive.

An archive holds ``class_name/image.ext``, optionally under one common top folder
(``digits/0/a.png``), which is stripped. Or it holds a manifest, ``manifest.csv`` or
``manifest.jsonl`` at its top (``zoo.jobs.splits``), whose rows name each image's path in the
archive, its label and optionally its split; images it does not list are skipped, and a bad
manifest refuses the archive. On disk:

```
<root>/<id>/dataset.json        the manifest: Dataset.to_dict()
<root>/<id>/<class>/<image>     the images that decoded, one folder per class (a manifest's
                                images are named by their archive path, '/' written '__')
<root>/<id>/.splits/            recorded train/validation/test splits (zoo.jobs.splits)
<root>/.staging/                uploads and unpacking in progress (hidden from readers)
```

The id is the sha256 of the archive bytes, so uploading the same archive twice is a no-op.
A dataset is unpacked in ``.staging`` and renamed into place in one step: a reader never sees
half a dataset, and a crash leaves only staging debris, which the next ``add`` removes.

Archives are hostile until proven otherwise. A member that could land outside the target
(``..``, absolute paths, drive letters, backslashes), a link or a device file refuses the whole
archive; sizes and member counts are checked from the headers before anything is written and
again, by counting bytes, while writing. Members that are merely unusable (not an image, hidden,
undecodable, too many pixels) are skipped and listed with the reason.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, cast

from zoo.errors import InvalidArgument, NotFound, ResourceExhausted
from zoo.jobs.splits import (
    MANIFEST_NAMES,
    MANIFEST_SPLIT,
    PARTS,
    SPLITS_DIR,
    DatasetSplit,
    ManifestRow,
    parse_manifest,
    split_key,
    stratified_split,
    write_atomically,
)
from zoo.lifetime import clear_dead_writers

MANIFEST_FILE = "dataset.json"
STAGING_DIR = ".staging"
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
_CLASS_NAME = re.compile(r"[A-Za-z0-9_.+ -]{1,64}")
_DATASET_ID = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")
_CHUNK = 1 << 20
# Bytes a tar may spend on the headers (pax, GNU long names) in front of one member. tarfile
# reads a pax header whole into memory, so a header that claims gigabytes must be stopped early.
_TAR_HEADER_BUDGET = 1 << 20
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# What a damaged archive raises while it is read (gzip and bz2 raise OSError subclasses).
_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class DatasetLimits:
    """Limits that keep one upload from exhausting disk, memory or time.

    Args:
        max_archive_bytes: largest upload accepted, counted while it streams in.
            Defaults to 2 GiB.
        max_files: most members (files and folders) an archive may hold. Defaults to 100,000.
        max_unpacked_bytes: most bytes all members may unpack to, declared and actual.
            Defaults to 8 GiB.
        max_file_bytes: most bytes one member may unpack to. Defaults to 64 MiB.
        max_image_pixels: most pixels an image's header may declare; larger images are
            skipped as decompression bombs. Defaults to 40,000,000.
        min_classes: fewest classes, each with at least one decodable image. Defaults to 2.
    """

    max_archive_bytes: int = 2 * 2**30
    max_files: int = 100_000
    max_unpacked_bytes: int = 8 * 2**30
    max_file_bytes: int = 64 * 2**20
    max_image_pixels: int = 40_000_000
    min_classes: int = 2

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(
                    f"DatasetLimits.{name} must be a positive integer; received {value!r}"
                )


@dataclass(frozen=True)
class Dataset:
    """One unpacked dataset.

    Attributes:
        id: hex sha256 of the archive bytes.
        classes: class names, sorted; a class's index is its label.
        counts: images per class, in the order of ``classes``.
        images: total number of images.
        skipped: (member path, reason) for every archive member that was not used.
        created_at: when it was unpacked, ISO 8601 in UTC.
        path: the directory holding ``dataset.json`` and one folder per class.
    """

    id: str
    classes: tuple[str, ...]
    counts: tuple[int, ...]
    images: int
    skipped: tuple[tuple[str, str], ...]
    created_at: str
    path: Path

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict; the content of ``dataset.json``."""
        return {
            "id": self.id,
            "classes": list(self.classes),
            "counts": list(self.counts),
            "images": self.images,
            "skipped": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "created_at": self.created_at,
            "path": str(self.path),
        }


def _dataset_from_manifest(data: dict[str, Any], path: Path) -> Dataset:
    # ``path`` comes from where the manifest lies, so a moved root still reads correctly.
    return Dataset(
        id=data["id"],
        classes=tuple(data["classes"]),
        counts=tuple(data["counts"]),
        images=data["images"],
        skipped=tuple((s["path"], s["reason"]) for s in data["skipped"]),
        created_at=data["created_at"],
        path=path,
    )


def validate_dataset_id(dataset_id: object) -> str:
    """``dataset_id`` in lower case if it is 64 hex characters, else InvalidArgument."""
    if not isinstance(dataset_id, str) or not _DATASET_ID.fullmatch(dataset_id.lower()):
        raise InvalidArgument(
            "a dataset id is 64 hex characters (the sha256 of the archive); "
            f"received {dataset_id!r}"
        )
    return dataset_id.lower()


class DatasetStore:
    """Adds, reads and deletes datasets under one directory.

    Args:
        root: directory holding the datasets; created if missing.
        limits: size and count limits for uploads. Defaults to ``DatasetLimits()``.
    """

    def __init__(
        self, root: str | os.PathLike[str], limits: DatasetLimits = DatasetLimits()
    ) -> None:
        self.root = Path(root)
        self.limits = limits
        if self.root.exists() and not self.root.is_dir():
            raise InvalidArgument(
                f"dataset store path {str(self.root)!r} is a file; expected a directory"
            )
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DatasetStore({str(self.root)!r})"

    def add(self, chunks: Iterable[bytes], filename_hint: str = "") -> Dataset:
        """Receive an archive as a stream of byte chunks and unpack it as a dataset.

        Args:
            chunks: the archive's bytes in order, in chunks of any size.
            filename_hint: the uploader's file name, used only in error messages; the format
                is detected from the content. Defaults to "".

        Returns:
            The new dataset, or the existing one if this archive was added before.

        Raises:
            ResourceExhausted: the archive, a member, the member count or the unpacked total
                is over a limit.
            InvalidArgument: not a zip or tar archive, a hostile or corrupt member, an invalid
                class name, or fewer than ``min_classes`` classes with a decodable image.
        """
        staging = self._staging()
        upload, dataset_id, size, head = self._receive(chunks, staging)
        try:
            final = self.root / dataset_id
            if (final / MANIFEST_FILE).is_file():
                return self.get(dataset_id)
            with _open_archive(upload, size, head, filename_hint) as source:
                unpacked = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=staging))
                try:
                    dataset = _unpack(source, unpacked, self.limits, dataset_id, final)
                    (unpacked / MANIFEST_FILE).write_text(
                        json.dumps(dataset.to_dict(), indent=2) + "\n"
                    )
                    try:
                        os.rename(unpacked, final)
                    except OSError:
                        if (final / MANIFEST_FILE).is_file():  # the same archive, in parallel
                            return self.get(dataset_id)
                        raise
                    return dataset
                finally:
                    shutil.rmtree(unpacked, ignore_errors=True)  # nothing left after the rename
        finally:
            upload.unlink(missing_ok=True)

    def get(self, dataset_id: str) -> Dataset:
        """The dataset with id ``dataset_id``. Malformed id: InvalidArgument; absent: NotFound."""
        dataset_id = validate_dataset_id(dataset_id)
        path = self.root / dataset_id
        try:
            data = json.loads((path / MANIFEST_FILE).read_text())
        except FileNotFoundError:
            stored = len(self._ids())
            raise NotFound(
                f"dataset {dataset_id} is not in {self.root} ({stored} datasets stored); "
                "upload the archive to create it"
            ) from None
        return _dataset_from_manifest(data, path)

    def delete(self, dataset_id: str) -> None:
        """Remove a dataset; readers see it whole until it is gone. Absent: NotFound."""
        dataset = self.get(dataset_id)
        tomb = self._staging() / f"{os.getpid()}-{secrets.token_hex(8)}.deleted"
        try:
            os.rename(dataset.path, tomb)
        except FileNotFoundError:
            raise NotFound(f"dataset {dataset.id} was deleted by another caller") from None
        shutil.rmtree(tomb, ignore_errors=True)

    def image_files(self, dataset_id: str) -> list[tuple[Path, int]]:
        """(image path, class index) for every image, by class index and then file name."""
        dataset = self.get(dataset_id)
        files: list[tuple[Path, int]] = []
        for index, name in enumerate(dataset.classes):
            folder = dataset.path / name
            files.extend((p, index) for p in sorted(folder.iterdir()) if p.is_file())
        return files

    def split(
        self, dataset_id: str, validation: float = 0.15, test: float = 0.15, seed: int = 0
    ) -> DatasetSplit:
        """The dataset's recorded split: its manifest's, else the stratified one for these
        fractions and seed, computed and written on first use (``zoo.jobs.splits``)."""
        dataset = self.get(dataset_id)
        folder = dataset.path / SPLITS_DIR
        fixed = folder / f"{MANIFEST_SPLIT}.json"
        if fixed.is_file():
            return DatasetSplit.from_dict(json.loads(fixed.read_text()))
        key = split_key(validation, test, seed)
        path = folder / f"{key}.json"
        if path.is_file():
            return DatasetSplit.from_dict(json.loads(path.read_text()))
        files = self.image_files(dataset.id)
        split = stratified_split(
            [p.relative_to(dataset.path).as_posix() for p, _ in files],
            [dataset.classes[c] for _, c in files],
            validation,
            test,
            seed,
        )
        write_atomically(path, split.to_dict())
        return split

    def split_files(
        self, dataset_id: str, split: DatasetSplit
    ) -> dict[str, list[tuple[Path, int]]]:
        """{part: [(image path, class index)]} for the three parts of ``split``."""
        dataset = self.get(dataset_id)
        index = {name: i for i, name in enumerate(dataset.classes)}
        return {
            part: [(dataset.path / rel, index[rel.split("/")[0]]) for rel in split.part(part)]
            for part in PARTS
        }

    def _ids(self) -> list[str]:
        return sorted(
            p.name
            for p in self.root.iterdir()
            if _DATASET_ID.fullmatch(p.name) and (p / MANIFEST_FILE).is_file()
        )

    def _staging(self) -> Path:
        staging = self.root / STAGING_DIR
        staging.mkdir(exist_ok=True)
        clear_dead_writers(staging)
        return staging

    def _receive(self, chunks: Iterable[bytes], staging: Path) -> tuple[Path, str, int, bytes]:
        """Write the chunks to a staging file: (path, sha256 hex, size, first 16 bytes)."""
        limit = self.limits.max_archive_bytes
        fd, name = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=".upload", dir=staging)
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    if not isinstance(chunk, (bytes, bytearray, memoryview)):
                        raise InvalidArgument(
                            f"archive chunks must be bytes; received {type(chunk).__name__}"
                        )
                    data = bytes(chunk)
                    size += len(data)
                    if size > limit:
                        raise ResourceExhausted(
                            f"the archive is larger than max_archive_bytes: received {size} "
                            f"bytes so far; the limit is {limit} bytes"
                        )
                    digest.update(data)
                    out.write(data)
                    head = (head + data[:16])[:16]
        except BaseException:
            os.unlink(name)
            raise
        return Path(name), digest.hexdigest(), size, head

    # Defined last: inside the class body, ``list`` below names this method, not the type.
    def list(self) -> list[Dataset]:
        """Every dataset, oldest first."""
        datasets = [self.get(dataset_id) for dataset_id in self._ids()]
        return sorted(datasets, key=lambda d: (d.created_at, d.id))


# --- Reading archives -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One archive member, as its headers describe it."""

    index: int
    name: str  # as written in the archive, for messages
    parts: tuple[str, ...]  # path components, with '' and '.' dropped
    is_file: bool
    size: int  # declared uncompressed size
    skip: str = ""  # why it cannot be used at all (encrypted, sparse, ...), or ""


class _Source(Protocol):
    def entries(self) -> Generator[_Entry, None, None]:
        """Every member in archive order; refuses hostile ones as it meets them."""
        ...

    def streams(self, wanted: set[int]) -> Generator[tuple[int, IO[bytes]], None, None]:
        """(entry index, content stream) for the wanted entries, in archive order."""
        ...


def _refuse(name: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"refusing the archive: member {name!r} {why}")


def _member_parts(name: str) -> tuple[str, ...]:
    unified = name.replace("\\", "/")  # archives made on Windows separate with backslashes
    if unified.startswith("/") or _DRIVE.match(unified):
        raise _refuse(name, "has an absolute path; members must be relative (class/image.png)")
    parts = tuple(part for part in unified.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _refuse(name, "has a '..' component that could escape the dataset folder")
    return parts


class _ZipSource:
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive

    def entries(self) -> Generator[_Entry, None, None]:
        for index, info in enumerate(self.archive.infolist()):
            parts = _member_parts(info.filename)
            mode = info.external_attr >> 16  # Unix st_mode, when the archiver stored one
            if stat.S_ISLNK(mode):
                raise _refuse(info.filename, "is a symbolic link; links are not allowed")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(info.filename, f"is a special file (mode {mode:o})")
            skip = ""
            if info.flag_bits & 0x1:
                skip = "is encrypted"
            elif info.compress_type not in _ZIP_METHODS:
                skip = f"uses unsupported compression method {info.compress_type}"
            is_dir = info.is_dir() or stat.S_ISDIR(mode)
            yield _Entry(index, info.filename, parts, not is_dir, info.file_size, skip)

    def streams(self, wanted: set[int]) -> Generator[tuple[int, IO[bytes]], None, None]:
        infos = self.archive.infolist()
        for index in sorted(wanted):
            with self.archive.open(infos[index]) as stream:
                yield index, stream


class _Budget:
    """A read-only stream that refuses to deliver more than ``limit`` bytes in total."""

    def __init__(self, raw: io.BufferedIOBase, limit: int) -> None:
        self.raw = raw
        self.limit = limit
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        allowed = self.limit - self.position + 1
        data = self.raw.read(allowed if size < 0 else min(size, allowed))
        self.position += len(data)
        if self.position > self.limit:
            raise ResourceExhausted(
                f"a tar header block is larger than {_TAR_HEADER_BUDGET} bytes; "
                "refusing the archive"
            )
        return data


def _decompressed(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    return open(path, "rb")


class _TarSource:
    """A tar, read twice as a stream: once to check every header, once to copy members."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def is_tar(path: Path) -> bool:
        with _decompressed(path) as raw:
            try:
                budget = _Budget(raw, _TAR_HEADER_BUDGET)
                with tarfile.open(fileobj=cast(IO[bytes], budget), mode="r|"):
                    return True
            except tarfile.ReadError:
                return False
            except _READ_ERRORS as e:  # a gzip, bz2 or xz stream that breaks off
                raise InvalidArgument(f"the archive is corrupt or truncated: {e}") from None

    def entries(self) -> Generator[_Entry, None, None]:
        with _decompressed(self.path) as raw:
            budget = _Budget(raw, _TAR_HEADER_BUDGET)
            with tarfile.open(fileobj=cast(IO[bytes], budget), mode="r|") as tar:
                for index, info in enumerate(tar):
                    yield self._entry(index, info)
                    # tar.offset is where the next header starts, after this member's data.
                    budget.limit = tar.offset + _TAR_HEADER_BUDGET

    @staticmethod
    def _entry(index: int, info: tarfile.TarInfo) -> _Entry:
        parts = _member_parts(info.name)
        if info.issym():
            raise _refuse(info.name, f"is a symbolic link (to {info.linkname!r}); not allowed")
        if info.islnk():
            raise _refuse(info.name, f"is a hard link (to {info.linkname!r}); not allowed")
        if info.ischr() or info.isblk():
            raise _refuse(info.name, "is a device file; not allowed")
        if info.isfifo():
            raise _refuse(info.name, "is a FIFO; not allowed")
        if info.isdir():
            return _Entry(index, info.name, parts, False, 0)
        if not info.isfile():
            raise _refuse(info.name, f"has unsupported tar type {info.type!r}")
        skip = "is a sparse file" if info.issparse() else ""
        return _Entry(index, info.name, parts, True, info.size, skip)

    def streams(self, wanted: set[int]) -> Generator[tuple[int, IO[bytes]], None, None]:
        if not wanted:
            return
        last = max(wanted)
        # The first pass read every header through a budget; this pass reads the same bytes.
        with (
            _decompressed(self.path) as raw,
            tarfile.open(fileobj=cast(IO[bytes], raw), mode="r|") as tar,
        ):
            for index, info in enumerate(tar):
                if index in wanted:
                    stream = tar.extractfile(info)
                    if stream is not None:
                        yield index, stream
                if index >= last:
                    return


@contextmanager
def _open_archive(path: Path, size: int, head: bytes, hint: str) -> Iterator[_Source]:
    """Detect the format by content, not by name, and open it."""
    # Tar first: a tar whose last member is a zip also passes zipfile.is_zipfile.
    if _TarSource.is_tar(path):
        yield _TarSource(path)
        return
    if zipfile.is_zipfile(path):
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise InvalidArgument(f"the zip archive is corrupt: {e}") from None
        with archive:
            yield _ZipSource(archive)
        return
    named = f" (file {hint!r})" if hint else ""
    raise InvalidArgument(
        f"expected a zip or tar archive; received {size} bytes starting "
        f"{head.hex() or '(nothing)'}{named}"
    )


_T = TypeVar("_T")


def _checked(items: Generator[_T, None, None]) -> Iterator[_T]:
    """``items``, with a damaged archive's read errors turned into InvalidArgument."""
    with closing(items):  # closes the archive at once when the caller stops early
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except _READ_ERRORS as e:
                raise InvalidArgument(f"the archive is corrupt or truncated: {e}") from None
            yield item


# --- Unpacking --------------------------------------------------------------------------------


def _scan(source: _Source, limits: DatasetLimits) -> list[_Entry]:
    """Every entry, refusing too many members or too many declared bytes as soon as seen."""
    entries: list[_Entry] = []
    declared = 0
    for entry in _checked(source.entries()):
        entries.append(entry)
        if len(entries) > limits.max_files:
            raise ResourceExhausted(
                f"the archive has more than {limits.max_files} members (max_files); "
                "refusing it before unpacking anything"
            )
        declared += entry.size if entry.is_file else 0
        if declared > limits.max_unpacked_bytes:
            raise ResourceExhausted(
                f"the archive declares at least {declared} bytes of content; "
                f"max_unpacked_bytes is {limits.max_unpacked_bytes}, so it is refused "
                "before unpacking anything"
            )
    return entries


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _plan(
    entries: list[_Entry],
) -> tuple[dict[int, tuple[str, str]], list[tuple[str, str]]]:
    """Where each usable file goes, {index: (class, file name)}, and the skipped members."""
    visible = [e.parts for e in entries if e.is_file and e.parts and not _is_hidden(e.parts)]
    top = visible[0][0] if visible else ""
    strip = int(
        bool(visible)
        and all(len(p) >= 2 and p[0] == top for p in visible)
        and any(len(p) >= 3 for p in visible)
    )
    targets: dict[int, tuple[str, str]] = {}
    skipped: list[tuple[str, str]] = []
    taken: set[tuple[str, str]] = set()
    for entry in entries:
        if not entry.is_file:
            continue
        parts = entry.parts[strip:]
        extension = os.path.splitext(parts[-1])[1].lower() if parts else ""
        if entry.skip:
            reason = entry.skip
        elif _is_hidden(entry.parts):
            reason = "hidden or system file"
        elif len(parts) < 2:
            reason = "not in a class folder (expected class_name/image)"
        elif len(parts) > 2:
            reason = "nested too deep (expected class_name/image)"
        elif extension not in IMAGE_EXTENSIONS:
            reason = (
                f"not an image: extension {extension or '(none)'!r} is not one of "
                f"{', '.join(IMAGE_EXTENSIONS)}"
            )
        elif len(os.fsencode(parts[1])) > 255:
            reason = "file name is longer than 255 bytes"
        elif (parts[0], parts[1]) in taken:
            reason = "duplicate of an earlier member"
        else:
            _validate_class_name(parts[0])
            taken.add((parts[0], parts[1]))
            targets[entry.index] = (parts[0], parts[1])
            continue
        skipped.append((entry.name, reason))
    return targets, skipped


def _find_manifest(entries: list[_Entry]) -> tuple[_Entry, int] | None:
    """The manifest member and how many leading folders its paths are relative to, if any:
    ``manifest.csv`` at the top, or under the one folder everything else is in."""
    visible = [e for e in entries if e.is_file and e.parts and not _is_hidden(e.parts)]
    for strip in (0, 1):
        for entry in visible:
            if len(entry.parts) == strip + 1 and entry.parts[-1] in MANIFEST_NAMES:
                top = entry.parts[:strip]
                if all(e.parts[:strip] == top for e in visible):
                    return entry, strip
    return None


def _read_member(source: _Source, entry: _Entry, limits: DatasetLimits) -> bytes:
    for _, stream in _checked(source.streams({entry.index})):
        data = stream.read(limits.max_file_bytes + 1)
        if len(data) > limits.max_file_bytes:
            raise ResourceExhausted(
                f"{entry.name!r} is larger than {limits.max_file_bytes} bytes (max_file_bytes)"
            )
        return bytes(data)
    raise InvalidArgument(f"the archive is corrupt: member {entry.name!r} could not be read")


def _manifest_row_parts(name: str, row: ManifestRow) -> tuple[str, ...]:
    unified = row.path.replace("\\", "/")
    parts = tuple(part for part in unified.split("/") if part not in ("", "."))
    if unified.startswith("/") or _DRIVE.match(unified) or ".." in parts or not parts:
        raise InvalidArgument(
            f"{name} line {row.line}: path {row.path!r} points outside the archive; paths are "
            "relative to the manifest's folder, without '..'"
        )
    return parts


def _plan_manifest(
    entries: list[_Entry], manifest: _Entry, strip: int, rows: list[ManifestRow]
) -> tuple[dict[int, tuple[str, str]], list[tuple[str, str]], dict[str, str]]:
    """Like ``_plan``, from a manifest's rows: targets, skipped members and {stored: split}."""
    name = manifest.parts[-1]
    members = {
        e.parts[strip:]: e
        for e in entries
        if e.is_file and e.parts[:strip] == manifest.parts[:strip] and not _is_hidden(e.parts)
    }
    targets: dict[int, tuple[str, str]] = {}
    splits: dict[str, str] = {}
    taken: dict[tuple[str, str], int] = {}
    for row in rows:
        parts = _manifest_row_parts(name, row)
        entry = members.get(parts)
        if entry is None:
            raise InvalidArgument(
                f"{name} line {row.line}: image {row.path!r} (label {row.label!r}) is not in "
                "the archive"
            )
        extension = os.path.splitext(parts[-1])[1].lower()
        if extension not in IMAGE_EXTENSIONS:
            raise InvalidArgument(
                f"{name} line {row.line}: {row.path!r} is not an image: extension "
                f"{extension or '(none)'!r} is not one of {', '.join(IMAGE_EXTENSIONS)}"
            )
        if entry.skip:
            raise InvalidArgument(f"{name} line {row.line}: {row.path!r} {entry.skip}")
        _validate_class_name(row.label, f"{name} line {row.line}: label")
        stored = "__".join(parts)
        if len(os.fsencode(stored)) > 255:
            raise InvalidArgument(
                f"{name} line {row.line}: path {row.path!r} is longer than 255 bytes"
            )
        if (row.label, stored) in taken:
            raise InvalidArgument(
                f"{name} line {row.line}: path {row.path!r} would be stored as {stored!r}, "
                f"like line {taken[(row.label, stored)]}'s path; rename one of them"
            )
        taken[(row.label, stored)] = row.line
        targets[entry.index] = (row.label, stored)
        if row.split is not None:
            splits[f"{row.label}/{stored}"] = row.split
    listed = set(targets) | {manifest.index}
    skipped = [
        (e.name, f"not listed in {name}") for e in entries if e.is_file and e.index not in listed
    ]
    return targets, skipped, splits


def _manifest_split(name: str, splits: dict[str, str], kept: set[str]) -> DatasetSplit:
    parts = {p: tuple(sorted(k for k, v in splits.items() if v == p and k in kept)) for p in PARTS}
    empty = [p for p in PARTS if not parts[p]]
    if empty:
        raise InvalidArgument(
            f"{name} puts no usable image in the {' and '.join(empty)} split; each of "
            f"{', '.join(PARTS)} needs at least one"
        )
    return DatasetSplit(MANIFEST_SPLIT, parts["train"], parts["validation"], parts["test"])


def _validate_class_name(name: str, what: str = "class folder") -> None:
    if not _CLASS_NAME.fullmatch(name) or name.startswith(".") or name == MANIFEST_FILE:
        raise InvalidArgument(
            f"{what} {name!r} is not a valid class name: use 1-64 characters from "
            f"A-Z a-z 0-9 _ . + - and space, not starting with '.' and not {MANIFEST_FILE!r}"
        )


def _copy(stream: IO[bytes], path: Path, name: str, limits: DatasetLimits, before: int) -> int:
    """Copy one member in chunks, counting the bytes really written; returns that count."""
    written = 0
    with open(path, "xb") as out:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except _READ_ERRORS as e:
                raise InvalidArgument(
                    f"the archive is corrupt: member {name!r} could not be read: {e}"
                ) from None
            if not chunk:
                return written
            written += len(chunk)
            if written > limits.max_file_bytes:
                raise ResourceExhausted(
                    f"member {name!r} unpacks to more than {limits.max_file_bytes} bytes "
                    "(max_file_bytes); refusing the archive"
                )
            if before + written > limits.max_unpacked_bytes:
                raise ResourceExhausted(
                    f"the archive unpacks to more than {limits.max_unpacked_bytes} bytes "
                    f"(max_unpacked_bytes), more than its headers declared; refusing it"
                )
            out.write(chunk)


def _image_problem(path: Path, max_pixels: int) -> str:
    """Why the image at ``path`` is unusable, or "" if it decodes fully."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f, Image.open(f) as image:
            width, height = image.size
            if width * height > max_pixels:
                return (
                    f"decompression bomb: the header says {width}x{height} = "
                    f"{width * height} pixels; max_image_pixels is {max_pixels}"
                )
            image.verify()
        with open(path, "rb") as f, Image.open(f) as image:
            image.load()
    except Image.DecompressionBombError as e:
        return f"decompression bomb: {e}"
    except UnidentifiedImageError:
        return "could not be decoded: not a recognised image format"
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ...
        return f"could not be decoded: {e}"
    return ""


def _unpack(
    source: _Source, dest: Path, limits: DatasetLimits, dataset_id: str, final: Path
) -> Dataset:
    entries = _scan(source, limits)
    found = _find_manifest(entries)
    splits: dict[str, str] = {}
    if found is None:
        targets, skipped = _plan(entries)
    else:
        manifest, strip = found
        rows = parse_manifest(manifest.parts[-1], _read_member(source, manifest, limits))
        targets, skipped, splits = _plan_manifest(entries, manifest, strip, rows)
    counts: dict[str, int] = {}
    total = 0
    for index, stream in _checked(source.streams(set(targets))):
        class_name, file_name = targets[index]
        name = entries[index].name
        path = dest / class_name / file_name
        path.parent.mkdir(exist_ok=True)
        total += _copy(stream, path, name, limits, total)
        problem = _image_problem(path, limits.max_image_pixels)
        if problem:
            path.unlink()
            skipped.append((name, problem))
        else:
            counts[class_name] = counts.get(class_name, 0) + 1
    for folder in dest.iterdir():
        if folder.name not in counts:
            folder.rmdir()  # every image in it was skipped
    if found is not None:
        _check_manifest_labels(found[0].parts[-1], targets, counts, skipped)
    if len(counts) < limits.min_classes:
        raise InvalidArgument(_too_few_classes(counts, limits.min_classes, skipped))
    if splits:
        kept = {f"{c}/{f}" for c, f in targets.values() if (dest / c / f).is_file()}
        split = _manifest_split(found[0].parts[-1] if found else "", splits, kept)
        write_atomically(dest / SPLITS_DIR / f"{MANIFEST_SPLIT}.json", split.to_dict())
    classes = tuple(sorted(counts))
    return Dataset(
        id=dataset_id,
        classes=classes,
        counts=tuple(counts[c] for c in classes),
        images=sum(counts.values()),
        skipped=tuple(sorted(skipped)),
        created_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        path=final,
    )


def _check_manifest_labels(
    name: str,
    targets: dict[int, tuple[str, str]],
    counts: dict[str, int],
    skipped: list[tuple[str, str]],
) -> None:
    """A label the manifest names whose every image failed to decode refuses the archive."""
    empty = sorted({label for label, _ in targets.values()} - set(counts))
    if empty:
        reasons = [r for _, r in skipped if not r.startswith("not listed")]
        why = f" (e.g. {reasons[0]})" if reasons else ""
        raise InvalidArgument(
            f"{name}: label {empty[0]!r} has no image that decoded{why}; every label needs one"
        )


def _too_few_classes(counts: dict[str, int], need: int, skipped: list[tuple[str, str]]) -> str:
    shown = [f"{c!r} with {n} image{'' if n == 1 else 's'}" for c, n in sorted(counts.items())]
    found = f"found {len(counts)} class{'' if len(counts) == 1 else 'es'}"
    if shown:
        found += f" ({', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''})"
    message = f"{found}; need at least {need} classes with an image each"
    if skipped:
        path, reason = sorted(skipped)[0]
        message += f"; {len(skipped)} members skipped, e.g. {path!r}: {reason}"
    return message
