"""Export a catalog (or any Keras) image classifier into the model repository as ONNX.

The heavy work runs in a child process (``zoo.export.child``): TensorFlow keeps the memory
it took, and the caller (a CLI, a server, a job worker) must not grow. This module only
validates arguments, stages the version, reads the child's progress, writes ``zoo.json`` and
``config.pbtxt`` and publishes the version atomically. An export whose verification fails
is not published.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import selectors
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zoo import errors
from zoo.catalog import ModelSpec, Preprocessing
from zoo.catalog.build import resolve_spec, validate_input_shape
from zoo.catalog.labels import imagenet_class_index
from zoo.catalog.weights import WeightsSource, locate
from zoo.export.records import (
    CatalogSource,
    ChildRequest,
    ChildResult,
    ChildSource,
    KerasFileSource,
)
from zoo.export.triton_config import render_config
from zoo.extras import require
from zoo.lifetime import child_env
from zoo.manifest import Evaluation, InputSpec, Manifest, Source, TensorSpec
from zoo.repository import (
    MANIFEST_FILE,
    MODEL_FILE,
    ModelVersion,
    Repository,
    validate_model_name,
)

INPUT_MODES = ("uint8", "float32")
Progress = Callable[[str, str], None]


@dataclass(frozen=True)
class ExportResult:
    """What an export produced: the published version and its figures."""

    model: str
    version: int
    path: Path
    onnx_bytes: int
    seconds: float
    peak_rss_bytes: int
    verification: dict[str, Any]
    manifest: Manifest

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "path": str(self.path),
            "onnx_bytes": self.onnx_bytes,
            "seconds": round(self.seconds, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "verification": self.verification,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _lines(process: subprocess.Popen[str], should_stop: Callable[[], bool] | None) -> Iterator[str]:
    """The child's stdout lines; kills it and raises Cancelled once ``should_stop()``."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            if should_stop is not None and should_stop():
                process.kill()
                process.wait()
                raise errors.Cancelled("the export was cancelled; nothing was published")
            if selector.select(timeout=0.25):
                line = process.stdout.readline()  # the child writes whole lines, flushed
                if not line:
                    return
                yield line


def _run_child(
    request: ChildRequest,
    workdir: Path,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None = None,
) -> ChildResult:
    request_path = workdir / "request.json"
    request_path.write_text(json.dumps(request.to_dict()))
    with tempfile.TemporaryFile(mode="w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "zoo.export.child", str(request_path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **child_env(), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        final: dict[str, Any] | None = None
        for line in _lines(process, should_stop):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a library printing to stdout
            if event.get("event") == "stage" and progress is not None:
                progress(event["stage"], event["message"])
            elif event.get("event") in ("result", "error"):
                final = event
        code = process.wait()
        if final is not None and final["event"] == "error":
            error_class = getattr(errors, final["error"], errors.Internal)
            raise error_class(final["message"])
        if final is None or code != 0:
            stderr.seek(0)
            tail = [ln for ln in stderr.read().strip().splitlines() if ln.strip()][-1:]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            hint = " (out of memory?)" if code == -signal.SIGKILL else ""
            raise errors.Internal(
                f"the export process {how}{hint}: {tail[0] if tail else 'no error output'}"
            )
        final.pop("event")
        return ChildResult.from_dict(final)


def _labels(spec: ModelSpec | None, num_classes: int, labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != num_classes:
            raise errors.InvalidArgument(
                f"{len(labels)} labels given for a model with {num_classes} outputs"
            )
        return list(labels)
    if spec is not None and num_classes == 1000:
        return [name for _, name in imagenet_class_index()]
    return [f"class_{i}" for i in range(num_classes)]


def export_model(
    name_or_keras_model: str | ModelSpec | Path | Any,
    repository: str | os.PathLike[str] | Repository,
    *,
    model_name: str | None = None,
    version: int | None = None,
    weights: WeightsSource | str | os.PathLike[str] | None = "imagenet",
    input: str = "uint8",
    input_shape: tuple[int, int, int] | None = None,
    preprocessing: str | Preprocessing | None = None,
    labels: Sequence[str] | None = None,
    max_batch_size: int = 32,
    opset: int | None = None,
    rel_tol: float = 1e-4,
    float32_margin: float = 2.0,
    weights_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = False,
    progress: Progress | None = None,
    training: Mapping[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    evaluate: Callable[[Path, Manifest], Evaluation | None] | None = None,
    verification_images: Sequence[str | os.PathLike[str]] = (),
    **constructor_kwargs: Any,
) -> ExportResult:
    """Export a model to ``<repository>/<model_name>/<version>/model.onnx``, verified.

    Args:
        name_or_keras_model: a catalog name or spec, a built Keras model (a classifier), or
            the path of a saved ``.keras`` model.
        repository: repository directory (created if missing) or a ``Repository``.
        model_name: name in the repository. Defaults to the catalog name in lower case, or
            the Keras model's name.
        version: version number to write. Defaults to the next free one.
        weights: ``"imagenet"`` (from the local cache), ``None``/``"none"`` or a weights
            file, for catalog models. Defaults to ``"imagenet"``.
        input: ``"uint8"`` (raw RGB pixels, preprocessing inside the graph) or ``"float32"``
            (the bare network; the caller preprocesses). Defaults to ``"uint8"``.
        input_shape: (height, width, 3) for catalog models. Defaults to the model's.
        preprocessing: mode of a Keras model given directly (caffe, tf, torch, builtin).
        labels: class names. Defaults to the ImageNet names for 1000-class catalog models.
        max_batch_size: written to config.pbtxt. Defaults to 32.
        opset: ONNX opset. Defaults to tf2onnx's default.
        rel_tol: verification tolerance relative to the logit scale. Defaults to 1e-4.
        float32_margin: where that fails, the export is judged against float64 Keras logits
            and may be this many times as far from them as Keras's float32 logits are (see
            ``zoo.export.verify``). Defaults to 2.
        weights_dir: the weights cache. Defaults to ``$KERAS_HOME/models``.
        allow_download: fetch missing ImageNet weights. Defaults to False.
        progress: called with (stage, message) while the child works.
        training: a fine-tune's report, kept in zoo.json as ``training``.
        should_stop: polled while the child works; once it returns True the child is killed,
            nothing is published and ``Cancelled`` is raised (a cancelled export job).
        evaluate: called with the verified ``model.onnx`` and its manifest before publishing;
            what it returns is kept in zoo.json as ``evaluation`` (a fine-tune's test report).
        verification_images: image files to verify on, in place of noise and the shipped
            photographs (a fine-tune's held-out images: the inputs its statistics fit; see
            ``zoo.export.verify``). Files that do not decode are skipped; when none decodes,
            the standard inputs are used. The manifest's ``verification.input_set`` says which.
        **constructor_kwargs: passed to the Keras constructor (e.g. ``alpha=0.35``).

    Raises:
        NotFound, InvalidArgument, AlreadyExists, WeightsNotFound: bad arguments, checked
            before any work. FailedPrecondition: verification failed; nothing was published.
    """
    require("export")
    if input not in INPUT_MODES:
        raise errors.InvalidArgument(f"input must be one of {INPUT_MODES}; received {input!r}")
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise errors.InvalidArgument(
            f"max_batch_size must be a positive integer; received {max_batch_size!r}"
        )
    repo = repository if isinstance(repository, Repository) else Repository(repository)
    what = _resolve(
        name_or_keras_model, model_name, weights, input_shape, preprocessing, labels,
        weights_dir, allow_download,
    )  # fmt: skip
    if version is not None and version in _existing_versions(repo, what.name):
        raise errors.AlreadyExists(f"model {what.name!r} already has version {version}")

    with repo.stage() as staged:
        source = _child_source(
            what, staged, input_shape, weights_dir, allow_download, constructor_kwargs
        )
        version_dir = staged / "version"
        version_dir.mkdir()
        model_file = version_dir / MODEL_FILE
        request = ChildRequest(
            source=source,
            input=input,
            opset=opset,
            output=str(model_file),
            rel_tol=rel_tol,
            float32_margin=float32_margin,
            images=tuple(os.fspath(p) for p in verification_images),
        )
        result = _run_child(request, staged, progress, should_stop)
        verification = dict(result.verification)
        if not verification["passed"]:
            exact = verification.get("max_abs_exact_diff")
            diff = (
                f"max |logit diff| {verification['max_abs_logit_diff']:.3g}"
                if exact is None
                else f"max |logit diff| from float64 Keras {exact:.3g} (Keras float32's "
                f"{verification['keras_float32_error']:.3g})"
            )
            raise errors.FailedPrecondition(
                f"verification failed, nothing was published: {diff} against tolerance "
                f"{verification['tolerance']:.3g}, top-1 agreement "
                f"{verification['top1_agreement']:.0%}"
            )
        if should_stop is not None and should_stop():
            raise errors.Cancelled("the export was cancelled; nothing was published")
        if progress is not None:
            progress("publish", "writing the version into the repository")
        manifest = _manifest(what.spec, source, result, model_file, input, what.mode, labels)
        manifest = replace(manifest, max_batch_size=max_batch_size, training=training)
        if evaluate is not None:
            manifest = replace(manifest, evaluation=evaluate(model_file, manifest))
        (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        config = render_config(
            what.name,
            [manifest.input],
            list(manifest.outputs),
            max_batch_size,
        )
        published: ModelVersion = repo.publish(version_dir, what.name, config, version)
    return ExportResult(
        model=what.name,
        version=published.version,
        path=published.path,
        onnx_bytes=published.model_file.stat().st_size,
        seconds=result.seconds,
        peak_rss_bytes=result.peak_rss_bytes,
        verification=verification,
        manifest=published.manifest(),
    )


@dataclass(frozen=True)
class _What:
    """What an export takes, checked before any work: a catalog model, a file or a model."""

    name: str  # in the repository
    mode: str  # the preprocessing put into the graph
    spec: ModelSpec | None = None
    weights: WeightsSource | None = None  # catalog models
    keras_model: Any = None  # a built Keras model given directly
    keras_file: Path | None = None


def _resolve(
    name_or_keras_model: str | ModelSpec | Path | Any,
    model_name: str | None,
    weights: WeightsSource | str | os.PathLike[str] | None,
    input_shape: tuple[int, int, int] | None,
    preprocessing: str | Preprocessing | None,
    labels: Sequence[str] | None,
    weights_dir: str | os.PathLike[str] | None,
    allow_download: bool,
) -> _What:
    if isinstance(name_or_keras_model, (str, ModelSpec)):
        spec = resolve_spec(name_or_keras_model)
        validate_input_shape(spec, input_shape)
        source = WeightsSource.parse(weights)
        if source.kind == "file" and not Path(str(source.path)).is_file():
            raise errors.NotFound(
                f"weights file {source.path!r} does not exist; "
                "expected 'imagenet', 'none' or the path of a Keras weights file"
            )
        if source.kind == "imagenet":
            locate(spec, True, weights_dir, allow_download)  # fail fast, before the child
        name = validate_model_name(model_name or spec.name.lower())
        return _What(name, spec.preprocessing.value, spec=spec, weights=source)
    if isinstance(name_or_keras_model, Path):
        if not name_or_keras_model.is_file():
            raise errors.NotFound(f"Keras model file {str(name_or_keras_model)!r} does not exist")
        if preprocessing is None:
            raise errors.InvalidArgument(
                "a Keras model file needs preprocessing= to put in the graph"
            )
        name = validate_model_name(model_name or name_or_keras_model.stem)
        mode = Preprocessing(preprocessing).value
        return _What(name, mode, keras_file=name_or_keras_model)
    keras_model = name_or_keras_model
    if preprocessing is None:
        raise errors.InvalidArgument(
            "a Keras model needs preprocessing= one of "
            f"{[p.value for p in Preprocessing]}, to put into the graph"
        )
    name = validate_model_name(model_name or keras_model.name)
    _labels(None, int(keras_model.output_shape[-1]), labels)  # fail fast on a mismatch
    return _What(name, Preprocessing(preprocessing).value, keras_model=keras_model)


def _child_source(
    what: _What,
    staged: Path,
    input_shape: tuple[int, int, int] | None,
    weights_dir: str | os.PathLike[str] | None,
    allow_download: bool,
    constructor_kwargs: dict[str, Any],
) -> ChildSource:
    """The ``source`` of the child's request; a model given directly is saved for it first."""
    if what.spec is None:
        path = what.keras_file or staged / "source.keras"
        if what.keras_model is not None:
            what.keras_model.save(path)
        return KerasFileSource(path=str(path), preprocessing=what.mode)
    assert what.weights is not None
    return CatalogSource(
        name=what.spec.name,
        weights=what.weights.keras_arg,
        input_shape=input_shape,
        weights_dir=str(weights_dir) if weights_dir else None,
        allow_download=allow_download,
        constructor_kwargs=constructor_kwargs,
    )


def _existing_versions(repo: Repository, name: str) -> list[int]:
    try:
        return repo.versions(name)
    except errors.NotFound:
        return []


def _manifest(
    spec: ModelSpec | None,
    source: ChildSource,
    result: ChildResult,
    model_file: Path,
    input_mode: str,
    mode: str,
    labels: Sequence[str] | None,
) -> Manifest:
    num_classes = result.num_classes
    weights_info: dict[str, Any] = {"kind": "none"}
    constructor_kwargs: dict[str, Any] = {}
    if isinstance(source, KerasFileSource):
        weights_info = {"kind": "keras_model"}
    else:
        constructor_kwargs = dict(source.constructor_kwargs)
        if source.weights == "imagenet":
            assert spec is not None
            wf = spec.weights_top
            weights_info = {
                "kind": "imagenet", "file_name": wf.file_name, "file_hash": wf.file_hash
            }  # fmt: skip
        elif source.weights is not None:
            path = Path(source.weights)
            weights_info = {"kind": "file", "file_name": path.name, "sha256": _sha256(path)}
    height, width, _ = result.input_shape
    return Manifest(
        source=Source(
            catalog_model=spec.name if spec else None,
            constructor_kwargs=constructor_kwargs,
            weights=weights_info,
            keras_version=result.keras_version,
        ),
        input=InputSpec(
            name="image",
            datatype="UINT8" if input_mode == "uint8" else "FP32",
            shape=(-1, height, width, 3),
            layout="NHWC",
            color="RGB",
            preprocessing=mode,
            preprocessing_in_graph=input_mode == "uint8",
        ),
        outputs=(
            TensorSpec("logits", "FP32", (-1, num_classes)),
            TensorSpec("probabilities", "FP32", (-1, num_classes)),
        ),
        labels=tuple(_labels(spec, num_classes, labels)),
        onnx={
            "file": MODEL_FILE,
            "sha256": _sha256(model_file),
            "bytes": model_file.stat().st_size,
            "opset": result.opset,
            "nodes": result.nodes,
        },
        export={
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds": round(result.seconds, 3),
            "peak_rss_bytes": result.peak_rss_bytes,
            "route": "stateless trace + numpy weight folding (zoo.export.convert)",
            "host": platform.node(),
        },
        verification=dict(result.verification),
    )
