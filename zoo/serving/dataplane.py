"""The protocol-agnostic data plane: everything the gRPC services do, as domain calls.

Adapters (``server/``) translate messages to these calls and back; every check and every
error (a ``ZooError`` with a message saying what was received and what was expected) lives
here, so the v2 protocol and ``zoo.v1`` behave the same.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.catalog import get_spec, list_models
from zoo.config import ServerConfig
from zoo.errors import FailedPrecondition, InvalidArgument, NotFound, ZooError
from zoo.labels import STABLE, Labels
from zoo.manifest import Evaluation, Manifest, ManifestError
from zoo.repository import Repository
from zoo.serving.images import declared_pixels, decode_image
from zoo.serving.runtime import LoadedModel, ModelState, Runtime, TensorInfo

log = logging.getLogger("zoo.serving.dataplane")
MAX_REQUEST_BATCH = 256  # hard per-request cap; larger batches are refused


@dataclass(frozen=True)
class ModelIndexEntry:
    name: str
    version: int
    state: str
    reason: str


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class ModelSummary:
    """Catalog metadata joined with repository state (ListModels)."""

    name: str
    catalog_model: str | None
    versions: tuple[int, ...]
    loaded_versions: tuple[int, ...]
    spec: Any | None  # ModelSpec, or None for models that are not in the catalog
    input_shape: tuple[int, ...]
    num_classes: int
    provider: str
    labels: tuple[tuple[str, int], ...] = ()  # (label, version), by label


@dataclass(frozen=True)
class ModelLabels:
    """A model's labels with what a request without a version gets (PromoteVersion & co)."""

    model: str
    labels: Labels
    default_version: int


class DataPlane:
    """Serves the models of one repository; create inside a running event loop."""

    def __init__(self, config: ServerConfig, repository: Repository | None = None) -> None:
        self.config = config
        self.repository = repository or Repository(config.repository)
        self.runtime = Runtime(self.repository, config)
        self.stats = self.runtime.stats
        # Loads and image decoding run on threads; inference runs on each loaded version's
        # own instance threads (runtime.LoadedModel). ONNX Runtime releases the GIL.
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="work")
        self.ready = False

    async def start(self) -> None:
        """Load the eager models; the server is ready when this returns."""
        names = self.repository.models()
        eager = [n for n in names if any(fnmatch.fnmatch(n, p) for p in self.config.eager_models)]
        for name in eager:
            try:
                await self.load(name)
            except ZooError as e:  # one broken model must not keep the others down
                log.error("eager load of %s failed: %s", name, e)
        self.ready = True

    async def close(self) -> None:
        await self.runtime.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- models ------------------------------------------------------------------
    async def model(self, name: str, version: int | str | None = None) -> LoadedModel:
        """The loaded model, loading it on first use (on a thread: a load takes seconds)."""
        model = self.runtime.ready(name, version)
        if model is not None:
            return model
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.runtime.get, name, version)

    async def load(self, name: str) -> LoadedModel:
        """Load the default version of ``name`` (``stable``, else the newest), reloading it if
        it is loaded (Triton's rule)."""
        if name in self._loaded_names():
            await self.unload(name)
        return await self.model(name)

    async def unload(self, name: str) -> None:
        await asyncio.gather(*(m.wait_closed() for m in self.runtime.unload(name)))

    def _loaded_names(self) -> set[str]:
        return {m.name for m in self.runtime.loaded()}

    def model_ready(self, name: str, version: int | str | None = None) -> bool:
        state, _ = self.runtime.state(name, version)
        return state is ModelState.READY

    def repository_index(self, ready_only: bool = False) -> list[ModelIndexEntry]:
        entries = []
        for name in self.repository.models():
            for version in self.repository.versions(name):
                state, reason = self.runtime.state(name, version)
                if ready_only and state is not ModelState.READY:
                    continue
                entries.append(ModelIndexEntry(name, version, state.value, reason))
        return entries

    def list_models(self, pattern: str = "*") -> list[ModelSummary]:
        """Catalog models and repository models, joined by name (case-insensitive)."""
        served = {n.lower(): n for n in self.repository.models()}
        loaded = self.runtime.loaded()
        summaries: dict[str, ModelSummary] = {}
        for spec in list_models():
            repo_name = served.get(spec.name.lower())
            summaries[spec.name.lower()] = self._summary(repo_name or spec.name, spec, loaded)
        for key, repo_name in served.items():
            if key not in summaries:
                summaries[key] = self._summary(repo_name, None, loaded)
        return [
            s
            for s in summaries.values()
            if fnmatch.fnmatch(s.name.lower(), pattern.lower())
            or (s.catalog_model and fnmatch.fnmatch(s.catalog_model.lower(), pattern.lower()))
        ]

    def evaluation(self, name: str, version: int | str | None) -> tuple[int, Evaluation | None]:
        """(version, its test-split report or None) of a model in the repository; ``version``
        a number or a label; None: the default version (stable, else the newest)."""
        chosen = self.repository.get(name, version)
        try:
            return chosen.version, chosen.manifest().evaluation
        except (NotFound, ManifestError):  # no readable zoo.json: no report, as ListModels
            return chosen.version, None

    def _summary(self, name: str, spec: Any | None, loaded: list[LoadedModel]) -> ModelSummary:
        try:
            versions = tuple(self.repository.versions(name))
        except NotFound:
            versions = ()
        manifest: Manifest | None = None
        if versions:
            try:
                manifest = self.repository.manifest(name, versions[-1])
            except (NotFound, ManifestError):
                manifest = None
        catalog_model = manifest.catalog_model if manifest else None
        if spec is None and catalog_model:
            try:
                spec = get_spec(catalog_model)
            except NotFound:
                spec = None
        labels: tuple[tuple[str, int], ...] = ()
        if versions:
            try:
                labels = tuple(sorted(self.repository.labels(name).labels.items()))
            except ZooError as e:  # an unreadable labels file must not break the listing
                log.warning("model %s: %s", name, e)
        mine = [m for m in loaded if m.name == name]
        shape = manifest.input.shape if manifest else (-1, *(spec.input_shape if spec else ()))
        return ModelSummary(
            name=name,
            catalog_model=spec.name if spec else catalog_model,
            versions=versions,
            loaded_versions=tuple(sorted(m.version for m in mine)),
            spec=spec,
            input_shape=tuple(shape[1:]),
            num_classes=len(manifest.labels if manifest else ())
            or (spec.num_classes if spec else 0),
            provider=mine[-1].provider if mine else "",
            labels=labels,
        )

    # -- labels ------------------------------------------------------------------
    async def labels(self, name: str) -> ModelLabels:
        return await self._off_loop(lambda: self._model_labels(name, self.repository.labels(name)))

    async def promote(
        self, name: str, version: int, label: str = "", by: str = "", peer: str = ""
    ) -> ModelLabels:
        """Point ``label`` (default stable) at ``version``. The next request without a version
        resolves the labels again (``Runtime.get``), so it is served by the new stable; when
        the model is loaded, that version is loaded first (``_ready_for``)."""
        label = label or STABLE

        def change() -> ModelLabels:
            self._ready_for(name, label, version)
            labels = self.repository.set_label(name, label, version, by=by, peer=peer)
            return self._after_change(name, labels)

        return await self._off_loop(change)

    async def rollback(
        self, name: str, label: str = "", by: str = "", peer: str = ""
    ) -> ModelLabels:
        """Point ``label`` (default stable) back at the version it had before."""
        label = label or STABLE

        def change() -> ModelLabels:
            target = self.repository.labels(name).rollback_target(label)
            if target is not None:  # None: the rollback below says why it cannot
                self._ready_for(name, label, target)
            labels = self.repository.rollback(name, label, by=by, peer=peer)
            return self._after_change(name, labels)

        return await self._off_loop(change)

    def _ready_for(self, name: str, label: str, version: int) -> None:
        """Load ``version`` before ``label`` moves to it when that makes it the default version
        of a loaded model, so that the first request without a version after the change does
        not pay the load (hundreds of ms to seconds). A version that fails to load leaves the
        label where it was: FailedPrecondition with ONNX Runtime's reason."""
        if label != STABLE or name not in self._loaded_names():
            return
        if self.runtime.ready(name, version) is not None:
            return
        try:
            self.runtime.get(name, version)
        except FailedPrecondition as e:
            now = self.repository.labels(name).labels.get(label)
            where = "no version" if now is None else f"version {now}"
            raise FailedPrecondition(f"{e}; label {label!r} stays at {where}") from None

    def _after_change(self, name: str, labels: Labels) -> ModelLabels:
        """The labels as the caller sees them, once loaded versions that are now neither the
        default nor labelled are let go (what loading a new default does: Triton's policy)."""
        self.runtime.retire(name)
        return self._model_labels(name, labels)

    def label_changes(self) -> dict[tuple[str, str, str], int]:
        """How many times each (model, label, action) happened, from the labels' histories."""
        counts: dict[tuple[str, str, str], int] = {}
        for name in self.repository.models():
            try:
                history = self.repository.labels(name).history
            except ZooError as e:  # one unreadable labels file must not hide the others
                log.warning("model %s: %s", name, e)
                continue
            for change in history:
                key = (name, change.label, change.action)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _model_labels(self, name: str, labels: Labels) -> ModelLabels:
        return ModelLabels(name, labels, self.repository.default_version(name))

    async def _off_loop(self, call: Callable[[], ModelLabels]) -> ModelLabels:
        """A repository call that reads or fsyncs files, on a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    # -- inference ---------------------------------------------------------------
    async def infer(
        self,
        name: str,
        version: int | str | None,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        deadline: float | None = None,
        priority: int = 0,
    ) -> tuple[LoadedModel, dict[str, np.ndarray]]:
        """Run one request; ``inputs`` maps input names to arrays (batch first).

        ``deadline`` (``time.monotonic()``): the caller's; past it a queued request is dropped.
        ``priority``: 1 (highest) to the server's ``priority_levels``; 0, the default level.
        """
        model = await self.model(name, version)
        rows = self.validate_inputs(model, inputs)
        wanted = outputs or [o.name for o in model.outputs]
        unknown = [o for o in wanted if o not in {t.name for t in model.outputs}]
        if unknown:
            raise InvalidArgument(
                f"model {model.name!r} has no output {unknown[0]!r}; "
                f"outputs are {[o.name for o in model.outputs]}"
            )
        result = await model.submit(rows, deadline, priority)
        return model, {k: result[k] for k in wanted}

    @staticmethod
    def validate_inputs(model: LoadedModel, inputs: dict[str, np.ndarray]) -> np.ndarray:
        expected: TensorInfo = model.input
        if not inputs:
            raise InvalidArgument(
                f"the request has no inputs; model {model.name!r} expects {_describe(expected)}"
            )
        if set(inputs) != {expected.name}:
            raise InvalidArgument(
                f"model {model.name!r} has one input {expected.name!r}; received {sorted(inputs)}"
            )
        array = inputs[expected.name]
        if array.dtype != expected.dtype:
            raise InvalidArgument(
                f"input {expected.name!r} must be {expected.datatype}; received {array.dtype}"
            )
        shape = tuple(array.shape)
        if len(shape) != len(expected.shape) or any(
            e >= 0 and s != e for s, e in zip(shape[1:], expected.shape[1:], strict=True)
        ):
            raise InvalidArgument(
                f"input {expected.name!r} must have shape {_shape_text(expected.shape)}; "
                f"received {list(shape)}"
            )
        if shape[0] < 1:
            raise InvalidArgument(f"input {expected.name!r} has an empty batch")
        if shape[0] > MAX_REQUEST_BATCH:
            raise InvalidArgument(
                f"batch of {shape[0]} is over the limit of {MAX_REQUEST_BATCH} rows per request"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidArgument(f"input {expected.name!r} contains NaN or Inf values")
        return array

    async def classify(
        self, name: str, version: int | str | None, images: list[bytes], top_k: int = 5
    ) -> tuple[LoadedModel, list[list[Prediction]]]:
        """Encoded images -> the top-k labels of each, highest score first."""
        if not images:
            raise InvalidArgument("no images in the request; expected one or more")
        if len(images) > MAX_REQUEST_BATCH:  # before anything is decoded
            raise InvalidArgument(
                f"{len(images)} images in one request; the limit is {MAX_REQUEST_BATCH}"
            )
        model = await self.model(name, version)
        if model.input.datatype != "UINT8":
            raise FailedPrecondition(
                f"model {model.name!r} takes {model.input.datatype} input; Classify needs a "
                "model exported with uint8 input (preprocessing in the graph)"
            )
        classes = model.outputs[-1].shape[-1]
        if not 1 <= top_k <= max(classes, 1):
            raise InvalidArgument(f"top_k must be between 1 and {classes}; received {top_k}")
        height, width = model.input.shape[1], model.input.shape[2]
        loop = asyncio.get_running_loop()
        limit = self.config.max_image_pixels

        def decode() -> np.ndarray:
            declared_pixels(images, limit)  # headers only: refuse before decoding anything
            return np.stack(
                [decode_image(data, (height, width), limit, i) for i, data in enumerate(images)]
            )

        pixels = await loop.run_in_executor(self.executor, decode)
        _, outputs = await self.infer(model.name, model.version, {model.input.name: pixels})
        probabilities = outputs.get("probabilities", outputs[model.outputs[-1].name])
        labels = model.labels
        results = []
        for row in probabilities:
            top = np.argsort(-row, kind="stable")[:top_k]
            results.append(
                [
                    Prediction(labels[i] if i < len(labels) else str(i), int(i), float(row[i]))
                    for i in top
                ]
            )
        return model, results


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("batch" if i == 0 else str(d) for i, d in enumerate(shape)) + "]"


def _describe(info: TensorInfo) -> str:
    return f"{info.name!r} {info.datatype} {_shape_text(info.shape)}"
