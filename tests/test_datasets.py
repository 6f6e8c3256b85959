"""Labelled image datasets: real archives of real digits, hostile archives refused whole."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import random
import re
import stat
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.errors import InvalidArgument, NotFound, ResourceExhausted
from zoo.jobs.datasets import Dataset, DatasetLimits, DatasetStore

DIGITS = {"zero": 0, "one": 1, "two": 2}
COUNTS = {"zero": 5, "one": 4, "two": 3}


@functools.cache
def digit_pixels(digit: int, nth: int) -> np.ndarray:
    """The nth 8x8 scikit-learn digit of ``digit``, as 32x32 uint8 grey levels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    image = digits.images[np.flatnonzero(digits.target == digit)[nth]]
    small = Image.fromarray((image * 255 / 16).round().astype(np.uint8), mode="L")
    return np.asarray(small.resize((32, 32), Image.Resampling.NEAREST))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_files(counts: dict[str, int] = COUNTS, top: str = "") -> dict[str, bytes]:
    """{member path: PNG bytes}: ``counts[name]`` real digits in each class folder."""
    return {
        f"{top}{name}/{name}_{i}.png": png(digit_pixels(DIGITS[name], i))
        for name, n in counts.items()
        for i in range(n)
    }


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_tar(
    files: dict[str, bytes], mode: str = "w:gz", extra: Sequence[tarfile.TarInfo] = ()
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit all-black PNG: a few KB on disk, ``width * height`` pixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = (
        b"".join(compressor.compress(row * 1000) for _ in range(height // 1000))
        + compressor.flush()
    )
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def assert_nothing_left(root: Path) -> None:
    assert [p.name for p in root.iterdir() if p.name != ".staging"] == []
    assert list((root / ".staging").iterdir()) == []


def dataset_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


# --- Unpacking real archives ------------------------------------------------------------------


def test_zip_of_digits_unpacks_with_exact_classes_counts_and_pixels(tmp_path: Path) -> None:
    data = make_zip(digit_files())
    store = DatasetStore(tmp_path / "datasets")
    dataset = store.add([data], "digits.zip")

    assert dataset.id == hashlib.sha256(data).hexdigest()
    assert dataset.classes == ("one", "two", "zero")
    assert dataset.counts == (4, 3, 5)
    assert dataset.images == 12
    assert dataset.skipped == ()
    assert dataset.path == tmp_path / "datasets" / dataset.id
    assert dataset_dirs(tmp_path / "datasets") == [dataset.id]
    manifest = json.loads((dataset.path / "dataset.json").read_text())
    assert manifest == dataset.to_dict()
    assert json.loads(json.dumps(dataset.to_dict())) == dataset.to_dict()
    assert store.get(dataset.id) == dataset
    assert store.get(dataset.id.upper()) == dataset

    files = store.image_files(dataset.id)
    assert [(p.relative_to(dataset.path).as_posix(), i) for p, i in files] == [
        *[(f"one/one_{i}.png", 0) for i in range(4)],
        *[(f"two/two_{i}.png", 1) for i in range(3)],
        *[(f"zero/zero_{i}.png", 2) for i in range(5)],
    ]
    for path, index in files:
        nth = int(path.stem.rsplit("_", 1)[1])
        expected = digit_pixels(DIGITS[dataset.classes[index]], nth)
        np.testing.assert_array_equal(np.asarray(Image.open(path)), expected)


def test_same_archive_twice_returns_the_same_dataset_and_one_directory(tmp_path: Path) -> None:
    data = make_zip(digit_files())
    store = DatasetStore(tmp_path)
    first = store.add([data])
    second = store.add([data])
    assert second == first  # same created_at too: the existing dataset, untouched
    assert dataset_dirs(tmp_path) == [first.id]
    assert list((tmp_path / ".staging").iterdir()) == []
    assert store.list() == [first]


def test_chunked_upload_equals_single_chunk_upload(tmp_path: Path) -> None:
    data = make_tar(digit_files(), "w:gz")
    whole = DatasetStore(tmp_path / "a").add([data])
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    chunked = DatasetStore(tmp_path / "b").add(iter(chunks))
    assert len(chunks) > 100
    assert chunked.id == whole.id == hashlib.sha256(data).hexdigest()
    assert (chunked.classes, chunked.counts) == (whole.classes, whole.counts)
    a, b = (DatasetStore(tmp_path / s).image_files(whole.id) for s in "ab")
    assert [p.read_bytes() for p, _ in a] == [p.read_bytes() for p, _ in b]


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_zip_and_each_tar_flavour_of_one_content_are_distinct_datasets_alike(
    tmp_path: Path, mode: str
) -> None:
    files = digit_files()
    store = DatasetStore(tmp_path)
    from_zip = store.add([make_zip(files)])
    tar_bytes = make_tar(files, mode)
    from_tar = store.add([tar_bytes], "misleading-name.zip")
    assert from_tar.id == hashlib.sha256(tar_bytes).hexdigest() != from_zip.id
    assert (from_tar.classes, from_tar.counts) == (from_zip.classes, from_zip.counts)
    assert dataset_dirs(tmp_path) == sorted([from_zip.id, from_tar.id])


def test_single_top_folder_is_stripped_and_macos_debris_skipped(tmp_path: Path) -> None:
    files = {
        **digit_files(top="digits/"),
        "__MACOSX/digits/zero/._zero_0.png": b"\x00\x05\x16\x07",
        "digits/.DS_Store": b"\x00\x00\x00\x01Bud1",
    }
    dataset = DatasetStore(tmp_path).add([make_zip(files)])
    assert dataset.classes == ("one", "two", "zero")
    assert dataset.counts == (4, 3, 5)
    assert dataset.skipped == (
        ("__MACOSX/digits/zero/._zero_0.png", "hidden or system file"),
        ("digits/.DS_Store", "hidden or system file"),
    )
    assert sorted(p.name for p in dataset.path.iterdir()) == ["dataset.json", "one", "two", "zero"]


def test_tar_with_dot_slash_names_and_directory_members_unpacks(tmp_path: Path) -> None:
    folders = []
    for name in ["./", "./zero", "./one"]:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        folders.append(info)
    files = {f"./{k}": v for k, v in digit_files({"zero": 2, "one": 3}).items()}
    dataset = DatasetStore(tmp_path).add([make_tar(files, "w", extra=folders)])
    assert (dataset.classes, dataset.counts, dataset.skipped) == (("one", "zero"), (3, 2), ())


def test_unusable_members_are_skipped_with_reasons_and_not_counted(tmp_path: Path) -> None:
    good = digit_files()
    real_png = good["zero/zero_0.png"]
    files = {
        **good,
        "notes.txt": b"three classes of digits",
        "zero/readme.TXT": b"zeros",
        "one/truncated.png": real_png[: len(real_png) // 2],
        "one/garbage.PNG": b"this is not an image at all",
        "stray.png": real_png,
        "two/deeper/x.png": real_png,
        "zero/.hidden.png": real_png,
        "two/no_extension": real_png,
    }
    dataset = DatasetStore(tmp_path).add([make_zip(files)])
    assert (dataset.classes, dataset.counts, dataset.images) == (
        ("one", "two", "zero"),
        (4, 3, 5),
        12,
    )
    reasons = dict(dataset.skipped)
    assert [path for path, _ in dataset.skipped] == sorted(reasons)
    accepted = ".bmp, .gif, .jpeg, .jpg, .png, .webp"
    assert reasons == {
        "notes.txt": "not in a class folder (expected class_name/image)",
        "zero/readme.TXT": f"not an image: extension '.txt' is not one of {accepted}",
        "one/truncated.png": reasons["one/truncated.png"],
        "one/garbage.PNG": "could not be decoded: not a recognised image format",
        "stray.png": "not in a class folder (expected class_name/image)",
        "two/deeper/x.png": "nested too deep (expected class_name/image)",
        "zero/.hidden.png": "hidden or system file",
        "two/no_extension": f"not an image: extension '(none)' is not one of {accepted}",
    }
    assert reasons["one/truncated.png"].startswith("could not be decoded: ")
    names = sorted(p.name for p, _ in DatasetStore(tmp_path).image_files(dataset.id))
    assert "truncated.png" not in names and "garbage.PNG" not in names and len(names) == 12


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        # Over our 40M limit, under Pillow's own guard: refused from the header we read.
        (
            8000,
            "decompression bomb: the header says 8000x8000 = 64000000 pixels; max_image_pixels is 40000000",
        ),
        # Over Pillow's guard (2 x 89M pixels), which refuses it inside Image.open.
        (20000, "decompression bomb: Image size (400000000 pixels) exceeds limit of"),
    ],
)
def test_decompression_bomb_png_is_skipped(tmp_path: Path, size: int, reason: str) -> None:
    bomb = png_bomb(size, size)
    assert len(bomb) < 200_000
    files = {**digit_files({"zero": 2, "one": 2}), "one/bomb.png": bomb}
    dataset = DatasetStore(tmp_path).add([make_tar(files)])
    assert dataset.counts == (2, 2)
    ((path, why),) = dataset.skipped
    assert path == "one/bomb.png"
    assert why.startswith(reason)
    assert not (dataset.path / "one" / "bomb.png").exists()


# --- Refusals: the whole archive, nothing left on disk ------------------------------------------


def refused(
    tmp_path: Path,
    data: bytes,
    error: type[Exception],
    match: str,
    limits: DatasetLimits | None = None,
) -> str:
    root = tmp_path / "datasets"
    store = DatasetStore(root, limits) if limits else DatasetStore(root)
    with pytest.raises(error, match=match) as caught:
        store.add([data])
    assert_nothing_left(root)
    assert store.list() == []
    return str(caught.value)


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil.png", "'..' component"),
        ("zero/../../evil.png", "'..' component"),
        ("..\\evil.png", "'..' component"),
        ("zero\\..\\..\\evil.png", "'..' component"),
        ("/abs.png", "absolute path"),
        ("/etc/cron.d/evil", "absolute path"),
        ("C:/evil.png", "absolute path"),
        ("c:\\windows\\evil.png", "absolute path"),
        ("\\\\server\\share\\evil.png", "absolute path"),
    ],
)
def test_member_escaping_the_target_refuses_the_archive(
    tmp_path: Path, kind: str, name: str, why: str
) -> None:
    files = {**digit_files(), name: digit_files()["zero/zero_0.png"]}
    data = make_zip(files) if kind == "zip" else make_tar(files)
    message = refused(tmp_path, data, InvalidArgument, "refusing the archive")
    assert message.startswith(f"refusing the archive: member {name!r} has ")
    assert why in message
    assert not (tmp_path / "evil.png").exists()


@pytest.mark.parametrize(
    ("kind", "linkname", "why"),
    [
        (tarfile.SYMTYPE, "/etc/passwd", "is a symbolic link (to '/etc/passwd'); not allowed"),
        (tarfile.LNKTYPE, "zero/zero_0.png", "is a hard link (to 'zero/zero_0.png'); not allowed"),
        (tarfile.CHRTYPE, "", "is a device file; not allowed"),
        (tarfile.BLKTYPE, "", "is a device file; not allowed"),
        (tarfile.FIFOTYPE, "", "is a FIFO; not allowed"),
    ],
)
def test_tar_links_and_special_files_refuse_the_archive(
    tmp_path: Path, kind: bytes, linkname: str, why: str
) -> None:
    link = tarfile.TarInfo("one/link.png")
    link.type = kind
    link.linkname = linkname
    data = make_tar(digit_files(), extra=[link])
    message = refused(tmp_path, data, InvalidArgument, "refusing the archive")
    assert message == f"refusing the archive: member 'one/link.png' {why}"


def test_zip_member_marked_as_symlink_refuses_the_archive(tmp_path: Path) -> None:
    buffer = io.BytesIO(make_zip(digit_files()))
    with zipfile.ZipFile(buffer, "a") as archive:
        info = zipfile.ZipInfo("one/link.png")
        info.create_system = 3  # Unix
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "../../../etc/passwd")
    message = refused(tmp_path, buffer.getvalue(), InvalidArgument, "refusing the archive")
    assert (
        message
        == "refusing the archive: member 'one/link.png' is a symbolic link; links are not allowed"
    )


def test_zip_bomb_is_refused_from_declared_sizes_before_unpacking(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in digit_files().items():
            archive.writestr(name, data)
        with archive.open("zero/bomb.png", "w") as member:
            for _ in range(200):
                member.write(bytes(1_000_000))
    assert len(buffer.getvalue()) < 1_000_000  # 200 MB of zeros compress to almost nothing
    limits = DatasetLimits(max_unpacked_bytes=10_000_000)
    message = refused(tmp_path, buffer.getvalue(), ResourceExhausted, "declares at least", limits)
    declared = 200_000_000 + sum(len(v) for v in digit_files().values())
    assert message == (
        f"the archive declares at least {declared} bytes of content; max_unpacked_bytes is "
        "10000000, so it is refused before unpacking anything"
    )


def test_zip_member_whose_declared_size_lies_is_refused(tmp_path: Path) -> None:
    data = bytearray(make_zip({**digit_files(), "zero/liar.png": bytes(5_000_000)}))
    honest = 5_000_000
    # Patch the uncompressed size of the member, in its local header and in the central
    # directory, from 5 MB to 1000 bytes: the declared total now passes the limit.
    for signature, size_at in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)]:
        at = data.find(signature)
        while struct.unpack_from("<I", data, at + size_at)[0] != honest:
            at = data.find(signature, at + 1)
        struct.pack_into("<I", data, at + size_at, 1000)
    limits = DatasetLimits(max_unpacked_bytes=1_000_000)
    message = refused(tmp_path, bytes(data), InvalidArgument, "could not be read", limits)
    assert message.startswith(
        "the archive is corrupt: member 'zero/liar.png' could not be read: Bad CRC-32"
    )


def test_member_larger_than_max_file_bytes_is_stopped_while_streaming(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    big = png(noise)
    assert len(big) > 10_000
    files = {**digit_files(), "two/noise.png": big}
    limits = DatasetLimits(max_file_bytes=5_000)
    message = refused(tmp_path, make_tar(files), ResourceExhausted, "max_file_bytes", limits)
    assert message == (
        "member 'two/noise.png' unpacks to more than 5000 bytes (max_file_bytes); refusing the archive"
    )


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    limits = DatasetLimits(max_files=5)
    message = refused(tmp_path, make_zip(digit_files()), ResourceExhausted, "max_files", limits)
    assert (
        message
        == "the archive has more than 5 members (max_files); refusing it before unpacking anything"
    )


def test_oversized_tar_header_is_refused_before_it_is_read_into_memory(tmp_path: Path) -> None:
    info = tarfile.TarInfo("zero/big-header.png")
    info.pax_headers = {"comment": "x" * 2_000_000}
    data = make_tar(digit_files(), "w:gz", extra=[info])
    refused(tmp_path, data, ResourceExhausted, "tar header block is larger than 1048576 bytes")


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_truncated_archive_is_refused(tmp_path: Path, mode: str) -> None:
    data = make_tar(digit_files(), mode)
    # Plain tar: cut inside the second member's data (header 512 + data 512 + header 512).
    cut = 3 * 512 + 100 if mode == "w" else len(data) * 2 // 3
    message = refused(tmp_path, data[:cut], InvalidArgument, "corrupt")
    assert message.startswith("the archive is corrupt or truncated: ")


def test_one_class_only_is_refused_saying_what_was_found(tmp_path: Path) -> None:
    files = {**digit_files({"zero": 3}), "one/notes.txt": b"no images here"}
    message = refused(tmp_path, make_zip(files), InvalidArgument, "need at least")
    assert message == (
        "found 1 class ('zero' with 3 images); need at least 2 classes with an image each; "
        "1 members skipped, e.g. 'one/notes.txt': not an image: extension '.txt' is not one of "
        ".bmp, .gif, .jpeg, .jpg, .png, .webp"
    )


def test_min_classes_is_a_limit(tmp_path: Path) -> None:
    limits = DatasetLimits(min_classes=4)
    message = refused(tmp_path, make_zip(digit_files()), InvalidArgument, "need at least", limits)
    assert message == (
        "found 3 classes ('one' with 4 images, 'two' with 3 images, 'zero' with 5 images); "
        "need at least 4 classes with an image each"
    )


def test_invalid_class_name_is_refused(tmp_path: Path) -> None:
    files = {**digit_files(), "cats & dogs/a.png": digit_files()["zero/zero_0.png"]}
    message = refused(tmp_path, make_zip(files), InvalidArgument, "not a valid class name")
    assert message.startswith("class folder 'cats & dogs' is not a valid class name: use 1-64")


@pytest.mark.parametrize("size", [0, 1000])
def test_bytes_that_are_not_an_archive_are_refused(tmp_path: Path, size: int) -> None:
    data = random.Random(0).randbytes(size)
    root = tmp_path / "datasets"
    with pytest.raises(InvalidArgument) as caught:
        DatasetStore(root).add([data], "photos.rar")
    head = data[:16].hex() or "(nothing)"
    assert str(caught.value) == (
        f"expected a zip or tar archive; received {size} bytes starting {head} (file 'photos.rar')"
    )
    assert_nothing_left(root)


def test_upload_over_max_archive_bytes_stops_while_streaming(tmp_path: Path) -> None:
    consumed = 0

    def endless() -> Iterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 1
            yield bytes(1000)

    root = tmp_path / "datasets"
    store = DatasetStore(root, DatasetLimits(max_archive_bytes=10_000))
    with pytest.raises(ResourceExhausted) as caught:
        store.add(endless())
    assert str(caught.value) == (
        "the archive is larger than max_archive_bytes: received 11000 bytes so far; "
        "the limit is 10000 bytes"
    )
    assert consumed == 11
    assert_nothing_left(root)


# --- Reading, listing, deleting ----------------------------------------------------------------


def test_get_list_delete(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    first = store.add([make_zip(digit_files())])
    second = store.add([make_zip(digit_files({"one": 1, "two": 1}))])
    assert first.created_at < second.created_at
    assert store.list() == [first, second]
    assert second.classes == ("one", "two") and second.counts == (1, 1)

    store.delete(first.id)
    assert store.list() == [second]
    assert dataset_dirs(tmp_path) == [second.id]
    assert list((tmp_path / ".staging").iterdir()) == []
    with pytest.raises(NotFound, match=f"dataset {first.id} is not in .* \\(1 datasets stored\\)"):
        store.get(first.id)
    with pytest.raises(NotFound, match=first.id):
        store.delete(first.id)
    with pytest.raises(NotFound, match=first.id):
        store.image_files(first.id)


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, "a" * 63, "../" + "a" * 61, 42])
def test_malformed_ids_are_invalid_arguments(tmp_path: Path, bad: object) -> None:
    store = DatasetStore(tmp_path)
    for call in (store.get, store.delete, store.image_files):
        with pytest.raises(InvalidArgument, match="a dataset id is 64 hex characters"):
            call(bad)  # type: ignore[arg-type]


def test_staging_debris_of_dead_processes_is_invisible_and_cleaned(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    staging = tmp_path / ".staging"
    (staging / f"{dead_pid}-half" / "zero").mkdir(parents=True)
    (staging / f"{dead_pid}-half" / "dataset.json").write_text("{}")
    (staging / f"{dead_pid}-x.upload").write_bytes(b"partial")
    (staging / f"{os.getpid()}-busy").mkdir()  # a live writer's: left alone
    store = DatasetStore(tmp_path)
    assert store.list() == []
    dataset = store.add([make_zip(digit_files())])
    assert sorted(p.name for p in staging.iterdir()) == [f"{os.getpid()}-busy"]
    assert store.list() == [dataset]


def test_limits_are_validated() -> None:
    with pytest.raises(
        InvalidArgument, match=r"DatasetLimits.max_files must be a positive integer; received 0"
    ):
        DatasetLimits(max_files=0)
    with pytest.raises(
        InvalidArgument, match=r"DatasetLimits.min_classes must be a positive integer; received -1"
    ):
        DatasetLimits(min_classes=-1)


def test_dataset_is_frozen(tmp_path: Path) -> None:
    dataset = DatasetStore(tmp_path).add([make_zip(digit_files())])
    assert isinstance(dataset, Dataset)
    with pytest.raises(AttributeError):
        dataset.images = 0  # type: ignore[misc]


def test_parallel_uploads_of_one_archive_leave_one_dataset(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = make_zip(digit_files())
    store = DatasetStore(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: store.add([data]), range(4)))
    assert all(r == store.get(results[0].id) for r in results)
    assert dataset_dirs(tmp_path) == [results[0].id]
    assert list((tmp_path / ".staging").iterdir()) == []


# --- Limits at exactly the limit, archives as real archivers make them ---------------------------


def test_limits_are_frozen_and_a_boolean_or_one_are_judged_as_integers() -> None:
    with pytest.raises(
        InvalidArgument, match=r"DatasetLimits.max_files must be a positive integer; received True"
    ):
        DatasetLimits(max_files=True)
    assert DatasetLimits(min_classes=1, max_files=1).min_classes == 1  # 1 is positive
    limits = DatasetLimits()
    with pytest.raises(AttributeError):
        limits.max_files = 10**9  # type: ignore[misc]


def test_a_store_root_is_made_with_its_parents_and_a_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "datasets"
    dataset = DatasetStore(root).add([make_zip(digit_files())])
    assert dataset.path == root / dataset.id
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InvalidArgument) as caught:
        DatasetStore(tmp_path / "file")
    assert str(caught.value) == (
        f"dataset store path {str(tmp_path / 'file')!r} is a file; expected a directory"
    )


def test_an_archive_exactly_at_every_limit_is_accepted_and_one_over_is_refused(
    tmp_path: Path,
) -> None:
    files = digit_files()
    limits = DatasetLimits(
        max_files=len(files),
        max_unpacked_bytes=sum(len(v) for v in files.values()),
        max_file_bytes=max(len(v) for v in files.values()),
    )
    data = make_tar(files)  # a tar: its members unpack to exactly their declared sizes
    dataset = DatasetStore(tmp_path / "exact", limits).add([data])
    assert (dataset.counts, dataset.skipped) == ((4, 3, 5), ())

    over = [
        ({"max_files": limits.max_files - 1}, "more than 11 members (max_files)"),
        (
            {"max_unpacked_bytes": limits.max_unpacked_bytes - 1},
            f"declares at least {limits.max_unpacked_bytes} bytes",
        ),
        (
            {"max_file_bytes": limits.max_file_bytes - 1},
            f"unpacks to more than {limits.max_file_bytes - 1} bytes (max_file_bytes)",
        ),
    ]
    for i, (changes, match) in enumerate(over):
        tighter = dataclasses.replace(limits, **changes)
        refused(tmp_path / str(i), data, ResourceExhausted, re.escape(match), tighter)


def test_an_archive_at_exactly_max_archive_bytes_is_accepted(tmp_path: Path) -> None:
    data = make_zip(digit_files())
    exact = DatasetStore(tmp_path / "exact", DatasetLimits(max_archive_bytes=len(data)))
    assert exact.add([data]).images == 12
    over = DatasetStore(tmp_path / "over", DatasetLimits(max_archive_bytes=len(data) - 1))
    with pytest.raises(ResourceExhausted, match=f"received {len(data)} bytes so far"):
        over.add([data])


def test_a_file_name_of_255_bytes_is_used_and_one_of_256_skipped(tmp_path: Path) -> None:
    image = digit_files()["zero/zero_0.png"]
    longest = "z" * 251 + ".png"
    too_long = "z" * 252 + ".png"
    files = {**digit_files(), f"zero/{longest}": image, f"zero/{too_long}": image}
    dataset = DatasetStore(tmp_path).add([make_zip(files)])
    assert dataset.counts == (4, 3, 6)
    assert dataset.skipped == ((f"zero/{too_long}", "file name is longer than 255 bytes"),)
    assert (dataset.path / "zero" / longest).read_bytes() == image


def folder_members(names: Sequence[str]) -> list[tarfile.TarInfo]:
    folders = []
    for name in names:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        folders.append(info)
    return folders


def tar_as_made_by_tar(files: dict[str, bytes], folders: Sequence[str]) -> bytes:
    """A tar like ``tar czf``'s: each folder's member before the files in it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info in folder_members(folders):
            archive.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_tar_with_its_folders_first_and_one_top_folder_unpacks(tmp_path: Path) -> None:
    files = {f"./{k}": v for k, v in digit_files(top="digits/").items()}
    folders = ["./", "./digits", "./digits/zero", "./digits/one", "./digits/two"]
    dataset = DatasetStore(tmp_path).add([tar_as_made_by_tar(files, folders)])
    assert (dataset.classes, dataset.counts, dataset.skipped) == (
        ("one", "two", "zero"),
        (4, 3, 5),
        (),
    )


def test_a_zip_made_on_windows_has_folder_members_without_a_unix_mode(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in ["digits/", "digits/zero/", "digits/one/"]:
            info = zipfile.ZipInfo(folder)
            info.create_system = 0  # MS-DOS: the attributes say "directory", no st_mode
            info.external_attr = 0x10
            archive.writestr(info, b"")
        for name, data in digit_files({"zero": 2, "one": 3}, top="digits/").items():
            archive.writestr(name, data)
    dataset = DatasetStore(tmp_path).add([buffer.getvalue()])
    assert (dataset.classes, dataset.counts, dataset.skipped) == (("one", "zero"), (3, 2), ())


def test_a_file_beside_the_class_folders_under_the_top_folder_is_skipped(tmp_path: Path) -> None:
    files = {**digit_files(top="digits/"), "digits/README.txt": b"three digits"}
    dataset = DatasetStore(tmp_path).add([make_zip(files)])
    assert dataset.counts == (4, 3, 5)
    assert dataset.skipped == (
        ("digits/README.txt", "not in a class folder (expected class_name/image)"),
    )


def test_a_gzip_cut_in_its_first_block_is_refused_as_corrupt(tmp_path: Path) -> None:
    data = make_tar(digit_files(), "w:gz")[:30]
    message = refused(tmp_path, data, InvalidArgument, "corrupt")
    assert message == (
        "the archive is corrupt or truncated: Compressed file ended before the end-of-stream "
        "marker was reached"
    )


def test_a_zip_whose_central_directory_is_damaged_is_refused(tmp_path: Path) -> None:
    data = bytearray(make_zip(digit_files()))
    at = data.find(b"PK\x01\x02")
    data[at : at + 4] = b"PK\x09\x09"
    message = refused(tmp_path, bytes(data), InvalidArgument, "corrupt")
    assert message == "the zip archive is corrupt: Bad magic number for central directory"


def test_folders_that_are_not_datasets_are_not_listed(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    dataset = store.add([make_zip(digit_files())])
    (tmp_path / ("0" * 64)).mkdir()  # an id's name, no dataset.json: not a dataset
    (tmp_path / "backup").mkdir()  # a dataset.json, not an id's name
    (tmp_path / "backup" / "dataset.json").write_text(json.dumps(dataset.to_dict()))
    assert store.list() == [dataset]
    with pytest.raises(NotFound, match=r"\(1 datasets stored\)"):
        store.get("0" * 64)


def test_a_dataset_deleted_by_another_caller_meanwhile_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, other = DatasetStore(tmp_path), DatasetStore(tmp_path)
    dataset = store.add([make_zip(digit_files())])
    found_it = store.get

    def found_then_deleted_by_the_other(dataset_id: str) -> Dataset:
        found = found_it(dataset_id)
        other.delete(dataset_id)  # between this caller's look-up and its own removal
        return found

    monkeypatch.setattr(store, "get", found_then_deleted_by_the_other)
    with pytest.raises(NotFound) as caught:
        store.delete(dataset.id)
    assert str(caught.value) == f"dataset {dataset.id} was deleted by another caller"
    assert_nothing_left(tmp_path)


def test_an_archive_added_by_another_caller_while_unpacking_is_returned_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zoo.jobs.datasets as datasets

    data = make_zip(digit_files())
    store, other = DatasetStore(tmp_path), DatasetStore(tmp_path)
    decode = datasets._image_problem
    added_meanwhile: list[Dataset] = []

    def decode_while_the_other_adds(path: Path, max_pixels: int) -> str:
        monkeypatch.setattr(datasets, "_image_problem", decode)  # once: the other decodes plainly
        added_meanwhile.append(other.add([data]))  # finishes before this caller's rename
        return decode(path, max_pixels)

    monkeypatch.setattr(datasets, "_image_problem", decode_while_the_other_adds)
    dataset = store.add([data])
    assert dataset == added_meanwhile[0]  # the other's dataset, created_at included
    assert dataset_dirs(tmp_path) == [dataset.id]
    assert list((tmp_path / ".staging").iterdir()) == []


def test_an_image_of_exactly_max_image_pixels_is_used_and_a_class_of_no_usable_image_left_out(
    tmp_path: Path,
) -> None:
    files = {**digit_files(), "three/broken.png": b"not a png"}
    dataset = DatasetStore(tmp_path, DatasetLimits(max_image_pixels=32 * 32)).add([make_zip(files)])
    assert dataset.counts == (4, 3, 5)  # every digit is 32x32 = max_image_pixels
    assert sorted(p.name for p in dataset.path.iterdir()) == ["dataset.json", "one", "two", "zero"]


def test_too_few_classes_names_five_and_no_more(tmp_path: Path) -> None:
    image = digit_files()["zero/zero_0.png"]
    files = {f"{c}/a.png": image for c in "abcde"}
    limits = DatasetLimits(min_classes=6)
    message = refused(tmp_path, make_zip(files), InvalidArgument, "need at least", limits)
    assert message.startswith("found 5 classes ('a' with 1 image, 'b' with 1 image, 'c' with 1 ")
    assert "'e' with 1 image); need at least 6" in message


def test_class_folders_without_a_top_folder_and_a_deeper_file_are_not_stripped(
    tmp_path: Path,
) -> None:
    files = {**digit_files(), "two/deeper/x.png": digit_files()["zero/zero_0.png"]}
    dataset = DatasetStore(tmp_path).add([make_zip(files)])
    assert (dataset.classes, dataset.counts) == (("one", "two", "zero"), (4, 3, 5))
    assert dataset.skipped == (("two/deeper/x.png", "nested too deep (expected class_name/image)"),)
