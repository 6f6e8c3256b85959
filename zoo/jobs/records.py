"""Jobs: what they are and how their state may change. Plain data and pure functions."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from zoo.catalog.weights import WeightsSource
from zoo.errors import FailedPrecondition
from zoo.jobs.training import FineTuneParams
from zoo.manifest import Evaluation


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class JobKind(enum.StrEnum):
    FINETUNE = "finetune"
    EXPORT = "export"
    SEARCH = "search"  # a parent whose trials are fine-tune jobs (zoo.jobs.search)


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# Every legal move. RUNNING -> QUEUED is a job whose worker died: another worker resumes it
# from its last checkpoint. CANCELLING may still end SUCCEEDED or FAILED when the work
# finished before it noticed the request.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLING, JobState.QUEUED}
    ),
    JobState.CANCELLING: frozenset({JobState.CANCELLED, JobState.FAILED, JobState.SUCCEEDED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class IllegalTransition(FailedPrecondition):
    """A job was asked to move to a state it cannot reach from where it is."""


def transition(current: JobState, target: JobState) -> JobState:
    """``target`` if a job in ``current`` may move there, else IllegalTransition."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing: it has ended"
        raise IllegalTransition(
            f"a job in state {current} cannot become {target}; it can become {allowed}"
        )
    return target


class EventType(enum.StrEnum):
    STATE = "state"
    EPOCH = "epoch"
    PROGRESS = "progress"
    LOG = "log"
    RESULT = "result"


@dataclass(frozen=True)
class Job:
    id: str
    kind: JobKind
    state: JobState
    params: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    worker: str | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "state": self.state.value,
            "params": self.params,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "attempts": self.attempts,
            "worker": self.worker,
            "error": self.error,
            "result": self.result,
        }

    def finetune_result(self) -> FineTuneResult | None:
        """The result of a fine-tune job that succeeded, as its record; else None."""
        if self.kind is not JobKind.FINETUNE or not self.result:
            return None
        return FineTuneResult.from_dict(self.result)


@dataclass(frozen=True)
class JobEvent:
    job_id: str
    seq: int  # 1, 2, ... per job: WatchJob(after_event=N) resumes after N
    time: datetime
    type: EventType
    payload: dict[str, Any] = field(default_factory=dict)


# What each kind of job does: written by the job manager as the job's params, read back by
# the job's process. The dict shapes are what the store holds, so they stay as they are.
@dataclass(frozen=True)
class FineTuneJobSpec:
    base_model: str  # catalog name
    dataset_id: str
    output_model: str
    params: FineTuneParams
    search_id: str | None = None  # a search's trial: the parent job's id
    trial: int | None = None  # and its number in the search, from 0

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "base_model": self.base_model,
            "dataset_id": self.dataset_id,
            "output_model": self.output_model,
            "params": self.params.to_dict(),
        }
        if self.search_id is not None:
            values.update(search_id=self.search_id, trial=self.trial)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FineTuneJobSpec:
        trial = values.get("trial")
        return cls(
            values["base_model"],
            values["dataset_id"],
            values["output_model"],
            FineTuneParams.from_dict(values.get("params", {})),
            values.get("search_id"),
            None if trial is None else int(trial),
        )


@dataclass(frozen=True)
class ExportJobSpec:
    model: str  # catalog name
    weights: WeightsSource
    input: str = "uint8"
    output_model: str | None = None  # default: the catalog name in lower case
    version: int | None = None  # default: the next free one

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "weights": self.weights.keras_arg,
            "input": self.input,
            "model_name": self.output_model,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExportJobSpec:
        return cls(
            values["model"],
            WeightsSource.parse(values.get("weights", "imagenet")),
            values.get("input") or "uint8",
            values.get("model_name") or None,
            values.get("version") or None,
        )


@dataclass(frozen=True)
class FineTuneResult:
    """What a fine-tune job leaves: the version it published and the evidence about it.

    Written by the job's process into the store (``to_dict``), read back by the API.
    """

    model: str
    version: int
    val_accuracy: float
    confusion_matrix: list[list[int]]  # validation split, by the Keras model
    class_names: list[str]
    images_per_second: dict[str, float]
    verification: dict[str, Any]
    split: str = ""  # the dataset split it trained and was tested on
    evaluation: Evaluation | None = None  # test split, by the exported ONNX model
    labels: list[str] = field(default_factory=list)  # set on the version: candidate[, stable]
    promotion: str = ""  # why it was or was not made stable (zoo.jobs.promotion)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "val_accuracy": self.val_accuracy,
            "confusion_matrix": self.confusion_matrix,
            "class_names": self.class_names,
            "images_per_second": self.images_per_second,
            "verification": self.verification,
            "split": self.split,
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "labels": self.labels,
            "promotion": self.promotion,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FineTuneResult:
        evaluation = data.get("evaluation")
        return cls(
            model=str(data["model"]),
            version=int(data["version"]),
            val_accuracy=float(data["val_accuracy"]),
            confusion_matrix=[[int(x) for x in row] for row in data["confusion_matrix"]],
            class_names=[str(c) for c in data["class_names"]],
            images_per_second={k: float(v) for k, v in data["images_per_second"].items()},
            verification=dict(data["verification"]),
            split=str(data.get("split", "")),
            evaluation=Evaluation.from_dict(evaluation) if evaluation else None,
            labels=[str(label) for label in data.get("labels", [])],
            promotion=str(data.get("promotion", "")),
        )
