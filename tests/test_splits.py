"""Dataset splits and manifests: stratified, recorded once, and bad manifests refused whole."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from test_datasets import (
    DIGITS,
    digit_files,
    digit_pixels,
    make_tar,
    make_zip,
    png,
    refused,
    tar_as_made_by_tar,
)

from zoo.errors import InvalidArgument, ResourceExhausted
from zoo.jobs.datasets import DatasetLimits, DatasetStore
from zoo.jobs.splits import stratified_split

BIG = {"zero": 20, "one": 40, "two": 60}  # unequal classes: proportions must hold per class


def counts_by_class(paths: tuple[str, ...]) -> dict[str, int]:
    return dict(Counter(p.split("/")[0] for p in paths))


def test_the_split_is_stratified_recorded_once_and_the_same_for_every_job(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    dataset = store.add([make_zip(digit_files(BIG))])
    split = store.split(dataset.id, validation=0.15, test=0.15, seed=0)
    # sklearn's stratified counts: 18 test (3/6/9) of 120, then 18 validation of the 102 left
    assert counts_by_class(split.test) == {"zero": 3, "one": 6, "two": 9}
    assert counts_by_class(split.validation) == {"zero": 3, "one": 6, "two": 9}
    assert counts_by_class(split.train) == {"zero": 14, "one": 28, "two": 42}
    every = split.train + split.validation + split.test
    assert sorted(every) == sorted(
        p.relative_to(dataset.path).as_posix() for p, _ in store.image_files(dataset.id)
    )
    recorded = dataset.path / ".splits" / f"{split.id}.json"
    assert json.loads(recorded.read_text())["test"] == list(split.test)
    written = recorded.stat().st_mtime_ns

    # another job (another store object, as in another process) reads the same test images
    again = DatasetStore(tmp_path).split(dataset.id, validation=0.15, test=0.15, seed=0)
    assert again == split and recorded.stat().st_mtime_ns == written
    # computing it afresh gives the same split: the record is not what makes it stable
    recorded.unlink()
    assert store.split(dataset.id, validation=0.15, test=0.15, seed=0) == split
    # another seed is another, recorded split
    other = store.split(dataset.id, validation=0.15, test=0.15, seed=1)
    assert other.id != split.id and other.test != split.test
    assert counts_by_class(other.test) == counts_by_class(split.test)

    parts = store.split_files(dataset.id, split)
    assert {p.relative_to(dataset.path).as_posix() for p, _ in parts["test"]} == set(split.test)
    assert all(dataset.classes[c] == p.parent.name for p, c in parts["test"])


def test_a_class_too_small_for_three_parts_is_refused(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    dataset = store.add([make_zip(digit_files({"zero": 10, "one": 2}))])
    with pytest.raises(InvalidArgument) as error:
        store.split(dataset.id)
    assert str(error.value) == (
        "every class needs at least 3 images to appear in train, validation and test; "
        "1 classes have fewer: 'one' (2)"
    )
    assert not (dataset.path / ".splits").exists()
    with pytest.raises(InvalidArgument, match=r"validation_split and test_split .* 0.5 and 0.5"):
        stratified_split(["a/1", "a/2", "a/3"], ["a"] * 3, 0.5, 0.5, 0)


def manifest_archive(rows: list[str], header: str = "path,label,split") -> dict[str, bytes]:
    """Digits under images/<n>.png (no class folders), listed by a CSV manifest."""
    files = {
        f"data/images/{name}{i}.png": png(digit_pixels(DIGITS[name], i))
        for name in ("zero", "one")
        for i in range(4)
    }
    files["data/images__zero0.png"] = files["data/images/zero0.png"]  # listed by one test
    files["data/manifest.csv"] = ("\n".join([header, *rows]) + "\n").encode()
    return files


def good_rows(split: bool = True) -> list[str]:
    parts = ["train", "train", "validation", "test"]
    return [
        f"images/{name}{i}.png,{label}" + (f",{parts[i]}" if split else "")
        for name, label in (("zero", "nought"), ("one", "unit"))
        for i in range(4)
    ]


def test_a_csv_manifest_with_a_split_column_fixes_the_split(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    files = manifest_archive(good_rows())
    files["data/images/extra.png"] = files["data/images/zero0.png"]  # not listed: skipped
    dataset = store.add([make_tar(files)])
    assert dataset.classes == ("nought", "unit") and dataset.counts == (4, 4)
    assert ("data/images/extra.png", "not listed in manifest.csv") in dataset.skipped
    split = store.split(dataset.id, validation=0.3, test=0.3, seed=5)  # fractions do not apply
    assert split.id == "manifest"
    assert split.test == ("nought/images__zero3.png", "unit/images__one3.png")
    assert split.validation == ("nought/images__zero2.png", "unit/images__one2.png")
    assert len(split.train) == 4


def test_a_jsonl_manifest_without_split_gets_a_stratified_split(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    files = {
        f"pics/{name}-{i}.png": png(digit_pixels(DIGITS[name], i))
        for name in ("zero", "one")
        for i in range(10)
    }
    files["manifest.jsonl"] = "".join(
        json.dumps({"path": f"pics/{name}-{i}.png", "label": name}) + "\n"
        for name in ("zero", "one")
        for i in range(10)
    ).encode()
    dataset = store.add([make_zip(files)])
    assert dataset.classes == ("one", "zero") and dataset.counts == (10, 10)
    split = store.split(dataset.id, validation=0.2, test=0.2, seed=0)
    assert split.id == "stratified-v0.2-t0.2-s0"
    assert counts_by_class(split.test) == {"zero": 2, "one": 2}
    assert counts_by_class(split.validation) == {"zero": 2, "one": 2}


BAD_MANIFESTS = [
    (
        [*good_rows()[:-1], "images/one3.png,unit,holdout"],
        "path,label,split",
        "manifest.csv line 9: unknown split 'holdout'; expected one of train, validation, test",
    ),
    (
        [*good_rows(), "../outside.png,unit,test"],
        "path,label,split",
        "manifest.csv line 10: path '../outside.png' points outside the archive; paths are "
        "relative to the manifest's folder, without '..'",
    ),
    (
        [*good_rows(), "/etc/passwd.png,unit,test"],
        "path,label,split",
        "manifest.csv line 10: path '/etc/passwd.png' points outside the archive; paths are "
        "relative to the manifest's folder, without '..'",
    ),
    (
        [*good_rows(), "C:/images/one3.png,unit,test"],
        "path,label,split",
        "manifest.csv line 10: path 'C:/images/one3.png' points outside the archive; paths are "
        "relative to the manifest's folder, without '..'",
    ),
    (
        [*good_rows(), "images/missing.png,unit,test"],
        "path,label,split",
        "manifest.csv line 10: image 'images/missing.png' (label 'unit') is not in the archive",
    ),
    (
        [*good_rows(), ",unit,test"],
        "path,label,split",
        "manifest.csv line 10: label 'unit' has no image path",
    ),
    (
        [*good_rows(), "images/one3.png,unit,test"],
        "path,label,split",
        "manifest.csv line 10: path 'images/one3.png' is listed twice (first on line 9)",
    ),
    (
        [*good_rows(), "images__zero0.png,nought,test"],
        "path,label,split",
        "manifest.csv line 10: path 'images__zero0.png' would be stored as 'images__zero0.png', "
        "like line 2's path; rename one of them",
    ),
    (
        good_rows(split=False),
        "path,class",
        "manifest.csv must start with the header path,label or path,label,split; received "
        "path,class",
    ),
    (
        [*good_rows(split=False)[:-1], "images/one3.png,unit,test"],
        "path,label",
        "manifest.csv line 9: 3 fields; expected 2 (path,label)",
    ),
    (
        [r.replace(",test", ",train") for r in good_rows()],
        "path,label,split",
        "manifest.csv puts no usable image in the test split; each of train, validation, test "
        "needs at least one",
    ),
    (
        [r.replace("unit", "../unit") for r in good_rows()],
        "path,label,split",
        "manifest.csv line 6: label '../unit' is not a valid class name",
    ),
    (
        [r.replace("unit", ".unit") for r in good_rows()],
        "path,label,split",
        "manifest.csv line 6: label '.unit' is not a valid class name",
    ),
]


@pytest.mark.parametrize(("rows", "header", "message"), BAD_MANIFESTS)
def test_a_bad_manifest_refuses_the_archive_and_writes_nothing(
    tmp_path: Path, rows: list[str], header: str, message: str
) -> None:
    store = DatasetStore(tmp_path)
    with pytest.raises(InvalidArgument) as error:
        store.add([make_zip(manifest_archive(rows, header))])
    assert str(error.value).startswith(message)
    assert store.list() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging"]
    assert list((tmp_path / ".staging").iterdir()) == []


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("images/.hidden.png", "image 'images/.hidden.png' (label 'unit') is not in the archive"),
        ("images/README", "'images/README' is not an image: extension '(none)' is not one of"),
    ],
)
def test_a_manifest_row_naming_a_hidden_or_extensionless_member_is_refused(
    tmp_path: Path, member: str, message: str
) -> None:
    files = manifest_archive([*good_rows(), f"{member},unit,test"])
    files[f"data/{member}"] = files["data/images/one3.png"]  # a real image under that name
    with pytest.raises(InvalidArgument) as error:
        DatasetStore(tmp_path).add([make_zip(files)])
    assert str(error.value).startswith(f"manifest.csv line 10: {message}")


def test_a_manifest_path_stored_in_255_bytes_is_used_and_in_256_refused(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path)
    for extra, accepted in ((0, True), (1, False)):
        name = "x" * (255 - len("images__.png") + extra) + ".png"
        files = manifest_archive([*good_rows(), f"images/{name},unit,train"])
        files[f"data/images/{name}"] = files["data/images/one3.png"]
        if accepted:
            dataset = store.add([make_zip(files)])
            assert dataset.counts == (4, 5)
            assert len(os.fsencode(f"images__{name}")) == 255
            continue
        with pytest.raises(InvalidArgument) as error:
            store.add([make_zip(files)])
        assert str(error.value) == (
            f"manifest.csv line 10: path 'images/{name}' is longer than 255 bytes"
        )


def test_a_manifest_label_whose_images_all_fail_to_decode_is_refused(tmp_path: Path) -> None:
    files = manifest_archive(good_rows())
    for i in range(4):
        files[f"data/images/one{i}.png"] = b"\x89PNG broken"
    with pytest.raises(InvalidArgument) as error:
        DatasetStore(tmp_path).add([make_zip(files)])
    assert str(error.value).startswith(
        "manifest.csv: label 'unit' has no image that decoded (e.g. could not be decoded: "
    )
    assert DatasetStore(tmp_path).list() == []


def test_a_manifest_of_photos_in_nested_folders(tmp_path: Path) -> None:
    """scikit-image's photos as JPEG crops in nested folders, labelled and split by a JSON
    Lines manifest: images are found by their archive path, not by a class folder."""
    import io

    from PIL import Image
    from skimage import data

    files: dict[str, bytes] = {}
    rows = []
    for name in ("astronaut", "coffee", "chelsea"):
        photo = getattr(data, name)()
        for i, part in enumerate(("train", "train", "validation", "test")):
            crop = photo[i * 40 : i * 40 + 160, i * 30 : i * 30 + 160]
            buffer = io.BytesIO()
            Image.fromarray(crop).save(buffer, format="JPEG")
            path = f"shots/2024/{name}/{i}.jpg"
            files[f"photos/{path}"] = buffer.getvalue()
            rows.append(json.dumps({"path": path, "label": name, "split": part}))
    files["photos/manifest.jsonl"] = ("\n".join(rows) + "\n").encode()
    store = DatasetStore(tmp_path)
    dataset = store.add([make_tar(files)])
    assert dataset.classes == ("astronaut", "chelsea", "coffee") and dataset.counts == (4, 4, 4)
    split = store.split(dataset.id)
    assert split.test == (
        "astronaut/shots__2024__astronaut__3.jpg",
        "chelsea/shots__2024__chelsea__3.jpg",
        "coffee/shots__2024__coffee__3.jpg",
    )
    parts = store.split_files(dataset.id, split)
    assert [c for _, c in parts["test"]] == [0, 1, 2]
    assert all(p.is_file() for p, _ in parts["train"]) and len(parts["train"]) == 6


def test_a_manifest_of_exactly_max_file_bytes_is_read_and_one_byte_more_refused(
    tmp_path: Path,
) -> None:
    files = manifest_archive(good_rows())
    manifest = files["data/manifest.csv"]
    assert len(manifest) > max(len(v) for k, v in files.items() if k.endswith(".png"))
    exact = DatasetStore(tmp_path / "exact", DatasetLimits(max_file_bytes=len(manifest)))
    assert exact.add([make_zip(files)]).counts == (4, 4)
    limits = DatasetLimits(max_file_bytes=len(manifest) - 1)
    message = refused(tmp_path / "over", make_zip(files), ResourceExhausted, "larger", limits)
    assert (
        message == f"'data/manifest.csv' is larger than {len(manifest) - 1} bytes (max_file_bytes)"
    )


def test_a_manifest_zipped_on_macos_or_tarred_with_folders_is_found(tmp_path: Path) -> None:
    files = manifest_archive(good_rows())
    debris = {
        "__MACOSX/data/._manifest.csv": b"\x00\x05\x16\x07",
        "__MACOSX/data/images/._zero0.png": b"\x00\x05\x16\x07",
    }
    store = DatasetStore(tmp_path)
    from_mac = store.add([make_zip({**files, **debris})])
    assert (from_mac.classes, from_mac.counts) == (("nought", "unit"), (4, 4))
    assert from_mac.skipped == (
        ("__MACOSX/data/._manifest.csv", "not listed in manifest.csv"),
        ("__MACOSX/data/images/._zero0.png", "not listed in manifest.csv"),
        ("data/images__zero0.png", "not listed in manifest.csv"),
    )
    tarred = {f"./{k}": v for k, v in files.items()}
    from_tar = store.add([tar_as_made_by_tar(tarred, ["./", "./data", "./data/images"])])
    assert (from_tar.classes, from_tar.counts) == (("nought", "unit"), (4, 4))
    assert from_tar.skipped == (("./data/images__zero0.png", "not listed in manifest.csv"),)
    assert store.split(from_tar.id).test == ("nought/images__zero3.png", "unit/images__one3.png")


def test_a_manifest_with_splits_at_the_archive_top_fixes_the_split(tmp_path: Path) -> None:
    files = {k.removeprefix("data/"): v for k, v in manifest_archive(good_rows()).items()}
    store = DatasetStore(tmp_path)
    dataset = store.add([make_zip(files)])
    assert dataset.counts == (4, 4)
    split = store.split(dataset.id)
    assert (split.id, split.test) == (
        "manifest",
        ("nought/images__zero3.png", "unit/images__one3.png"),
    )
