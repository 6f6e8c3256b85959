"""Creating, reading and cancelling jobs: every check happens here, before a job exists."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.catalog import get_spec, list_models
from zoo.catalog.options import check_options
from zoo.catalog.weights import WeightsSource
from zoo.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from zoo.export.exporter import INPUT_MODES
from zoo.jobs.datasets import DatasetStore
from zoo.jobs.records import (
    ExportJobSpec,
    FineTuneJobSpec,
    Job,
    JobEvent,
    JobKind,
    JobState,
)
from zoo.jobs.search import SearchJobSpec, SearchResult, best_trial, read_trials, search_spec
from zoo.jobs.store import JobStore
from zoo.jobs.training import TENSORBOARD_DIR, FineTuneParams
from zoo.repository import MAX_VERSION, Repository, validate_model_name

MAX_TRAINING_LOG_BYTES = 32 * 2**20  # one message; a few-epoch run writes kilobytes


class JobManager:
    def __init__(
        self,
        store: JobStore,
        datasets: DatasetStore,
        repository: Repository | None = None,
        weights_dirs: Sequence[Path] = (),
        work_dir: Path | None = None,
    ) -> None:
        """``repository``: where jobs publish (checked for name clashes); ``weights_dirs``:
        the only directories an export may read a weights file from by path; ``work_dir``:
        where jobs keep their work (``<data_dir>/jobs``), for their training logs."""
        self.store = store
        self.datasets = datasets
        self.repository = repository
        self.weights_dirs = tuple(Path(d).resolve() for d in weights_dirs)
        self.work_dir = work_dir

    def _check_output(self, output: str, source: str, allow_other_source: bool) -> None:
        """Refuse to add a version to a model that serves something else (a client of it
        would silently get another network, maybe other classes), unless asked to."""
        if self.repository is None or allow_other_source:
            return
        try:
            manifest = self.repository.manifest(output)
        except NotFound:
            return  # a new model, or one without a manifest (not ours to judge)
        served = (
            f"a fine-tune of {manifest.training.get('base_model')}"
            if manifest.training
            else manifest.catalog_model
        )
        if served != source:
            raise AlreadyExists(
                f"model {output!r} serves {served or 'another model'}; a job making {source} "
                "would add its newest version. Choose another output name, or set "
                "allow_other_source to replace what it serves"
            )

    def _weights_path(self, weights: str) -> str:
        """A weights file by path: only inside ``weights_dirs``, and a missing file answers as
        an unreadable or forbidden one does, so the request cannot probe the file system."""
        refusal = InvalidArgument(
            f"weights {weights[:200]!r} is not 'imagenet', 'none' or a readable weights file "
            f"in the server's weights directories ({', '.join(map(str, self.weights_dirs))})"
        )
        try:
            path = Path(weights).resolve()
            inside = any(path.is_relative_to(d) for d in self.weights_dirs)
            if not inside or not path.is_file() or not os.access(path, os.R_OK):
                raise refusal
        except (OSError, ValueError):
            raise refusal from None
        return str(path)

    def create_finetune(
        self,
        base_model: str,
        dataset_id: str,
        output_model: str,
        params: dict[str, Any],
        allow_other_source: bool = False,
    ) -> Job:
        job = self._finetune_spec(base_model, dataset_id, output_model, params, allow_other_source)
        return self.store.create(JobKind.FINETUNE, job.to_dict())

    def _finetune_spec(
        self,
        base_model: str,
        dataset_id: str,
        output_model: str,
        params: dict[str, Any],
        allow_other_source: bool,
    ) -> FineTuneJobSpec:
        """Every check of a fine-tune request (also a search's base), before a job exists."""
        spec = get_spec(base_model)  # NotFound with suggestions
        dataset = self.datasets.get(dataset_id)  # NotFound / InvalidArgument
        name = validate_model_name(output_model)
        catalog = {s.name.lower() for s in list_models()}
        if name.lower() in catalog:
            raise InvalidArgument(
                f"output model {output_model!r} is the name of a catalog model; "
                "choose another name for the fine-tuned model"
            )
        checked = FineTuneParams.from_dict(params)  # InvalidArgument for bad values
        base_kwargs = check_options(spec, checked.base_kwargs, checked.weights == "imagenet")
        checked = dataclasses.replace(checked, base_kwargs=base_kwargs)
        self._check_output(name, f"a fine-tune of {spec.name}", allow_other_source)
        return FineTuneJobSpec(spec.name, dataset.id, name, checked)

    def create_search(
        self,
        base_model: str,
        dataset_id: str,
        output_model: str,
        params: dict[str, Any],
        space: object,
        strategy: str = "grid",
        trials: int = 0,
        promote: str = "",
        seed: int = 0,
        early_stopping: str = "",
        min_trials: int = 0,
        allow_other_source: bool = False,
        parallel: int = 0,
    ) -> Job:
        """A search job and its trials, every one checked first (``zoo.jobs.search``): a bad
        request creates nothing."""
        # The base and the output are checked as one fine-tune job's would be.
        base = self._finetune_spec(base_model, dataset_id, output_model, params, allow_other_source)
        base_params = base.params.to_dict()
        if "promote" not in params:  # the search's promote applies; search_spec refuses one here
            del base_params["promote"]
        search = search_spec(
            base.base_model, base.dataset_id, base.output_model, base_params, space, strategy,
            trials, promote, seed, early_stopping, min_trials, parallel,
        )  # fmt: skip

        def trial_specs(parent_id: str) -> list[dict[str, Any]]:
            return [
                FineTuneJobSpec(
                    search.base_model,
                    search.dataset_id,
                    search.output_model,
                    search.trial_params(i),
                    parent_id,
                    i,
                ).to_dict()
                for i in range(len(search.trials))
            ]

        parent, _ = self.store.create_search(search.to_dict(), trial_specs)
        return parent

    def search_table(self, job: Job) -> SearchResult:
        """A search's table as its trials stand now."""
        rows = read_trials(self.store, job)
        best = best_trial(rows)
        output = SearchJobSpec.from_dict(job.params).output_model
        return SearchResult(rows, best.trial if best else None, output)

    def create_export(
        self,
        model: str,
        weights: str = "imagenet",
        input: str = "uint8",
        output_model: str = "",
        version: int = 0,
        allow_other_source: bool = False,
    ) -> Job:
        spec = get_spec(model)
        input = input or "uint8"  # the protocol's documented default for an empty field
        if input not in INPUT_MODES:
            raise InvalidArgument(f"input must be one of {INPUT_MODES}; received {input!r}")
        if output_model:
            validate_model_name(output_model)
        if not 0 <= version <= MAX_VERSION:
            raise InvalidArgument(
                f"version must be 0 (the next free one) or a whole number up to {MAX_VERSION}; "
                f"received {version}"
            )
        source = WeightsSource.parse(weights or "imagenet")
        if source.kind == "file":
            source = WeightsSource("file", self._weights_path(str(source.path)))
        self._check_output(output_model or spec.name.lower(), spec.name, allow_other_source)
        job = ExportJobSpec(spec.name, source, input, output_model or None, version or None)
        return self.store.create(JobKind.EXPORT, job.to_dict())

    def get(self, job_id: str) -> Job:
        """The job; a search that has not ended carries its table so far as its result."""
        job = self.store.get(job_id)
        if job.kind is JobKind.SEARCH and not job.state.terminal:
            return dataclasses.replace(job, result=self.search_table(job).to_dict())
        return job

    def jobs(self, state: str = "", limit: int = 100) -> list[Job]:
        if state and state not in JobState.__members__:
            raise InvalidArgument(
                f"unknown job state {state!r}; states are {', '.join(JobState.__members__)}"
            )
        return self.store.jobs(JobState(state) if state else None, limit or 100)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job; a search's trials first. A search held by no worker (its trials were
        running) ends CANCELLED at once; its running trials stop at their next batch."""
        job = self.store.get(job_id)
        if job.kind is not JobKind.SEARCH or job.state.terminal:
            return self.store.request_cancel(job_id)
        for trial in self.store.children(job.id):
            if not trial.state.terminal and trial.state is not JobState.CANCELLING:
                with contextlib.suppress(FailedPrecondition):  # it ended meanwhile
                    self.store.request_cancel(trial.id)
        job = self.store.request_cancel(job_id)
        if job.state is JobState.CANCELLING and job.worker is None:
            job = self.store.set_state(job_id, JobState.CANCELLED)
        return job

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        return self.store.events(job_id, after)

    def training_logs(self, job_id: str) -> tuple[bytes, int]:
        """A gzipped tar of the job's TensorBoard folder, and how many files it holds."""
        job = self.store.get(job_id)  # NotFound for an unknown job
        folder = self.work_dir / job.id / TENSORBOARD_DIR if self.work_dir else None
        if folder is None or not folder.is_dir():
            raise NotFound(
                f"job {job.id} ({job.kind}, {job.state}) has no training logs on this server: "
                "fine-tune jobs write them once training starts, in the server's data directory"
            )
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
        size = sum(p.stat().st_size for p in files)
        if size > MAX_TRAINING_LOG_BYTES:
            raise ResourceExhausted(
                f"job {job.id}'s training logs are {size} bytes; at most "
                f"{MAX_TRAINING_LOG_BYTES} are sent: copy {folder} on the server instead"
            )
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in files:
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
        return buffer.getvalue(), len(files)
