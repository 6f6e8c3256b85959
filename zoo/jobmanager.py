"""Creating, reading and cancelling jobs: every check happens here, before a job exists."""

from __future__ import annotations

import dataclasses
from typing import Any

from zoo.catalog import get_spec, list_models
from zoo.catalog.options import check_options
from zoo.datasets import DatasetStore
from zoo.errors import InvalidArgument
from zoo.export import INPUT_MODES
from zoo.jobs import Job, JobEvent, JobKind, JobState
from zoo.jobstore import JobStore
from zoo.repository import MAX_VERSION, validate_model_name
from zoo.training import FineTuneParams


class JobManager:
    def __init__(self, store: JobStore, datasets: DatasetStore) -> None:
        self.store = store
        self.datasets = datasets

    def create_finetune(
        self, base_model: str, dataset_id: str, output_model: str, params: dict[str, Any]
    ) -> Job:
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
        return self.store.create(
            JobKind.FINETUNE,
            {
                "base_model": spec.name,
                "dataset_id": dataset.id,
                "output_model": name,
                "params": checked.to_dict(),
            },
        )

    def create_export(
        self,
        model: str,
        weights: str = "imagenet",
        input: str = "uint8",
        output_model: str = "",
        version: int = 0,
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
        return self.store.create(
            JobKind.EXPORT,
            {
                "model": spec.name,
                "weights": None if weights == "none" else (weights or "imagenet"),
                "input": input or "uint8",
                "model_name": output_model or None,
                "version": version or None,
            },
        )

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def jobs(self, state: str = "", limit: int = 100) -> list[Job]:
        if state and state not in JobState.__members__:
            raise InvalidArgument(
                f"unknown job state {state!r}; states are {', '.join(JobState.__members__)}"
            )
        return self.store.jobs(JobState(state) if state else None, limit or 100)

    def cancel(self, job_id: str) -> Job:
        return self.store.request_cancel(job_id)

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        return self.store.events(job_id, after)
