"""A search over fine-tuning settings: a parent job whose trials are fine-tune jobs.

The request names a base (the usual fine-tune parameters) and a space over some of them;
the trials are expanded when the search is created (``expand``), so that every trial's
parameters are checked before anything exists, and each trial is a fine-tune job of its own
in the job store (``search_id`` and ``trial`` in its spec), claimed by any worker: several
workers run trials in parallel, and a killed worker's trial resumes as any job does.

- ``grid``: every combination of the listed values, in the order given (the last key varies
  fastest). ``trials`` is 0 or exactly the grid's size.
- ``random``: ``trials`` draws, seeded by ``seed``: a list is a uniform choice, a range
  ``{"low", "high", "log"}`` a uniform (or log-uniform) number; whole-number parameters
  (epochs) draw whole numbers.
- ``tpe``: Optuna's TPE (optional: the ``tune`` extra), in waves of ``parallel`` trials.
  Only the first wave exists at creation; once a wave has ended the search is claimed as
  below, ``tpe_wave`` proposes the next from every trial's validation accuracy, and
  ``JobStore.extend_search`` queues it and lets the search go in one transaction.

The parent holds no worker while its trials run; it becomes RUNNING when its first trial
starts, and once every trial has ended a worker claims it (``JobStore.claim``), builds the
table of trials (``trial_rows``), picks the best by validation accuracy (``best_trial``;
the test split stays an unbiased estimate of the chosen model) and applies the search's
``promote`` rule to that trial's version alone (``zoo.jobs.promotion``). Every trial
publishes a version, labelled ``candidate`` while it is the newest trial's; at the end
``candidate`` points at the best trial, and the other trials' versions keep no label.

Early stopping, the median rule: after each epoch a trial compares its validation accuracy
with that of the other trials of its search at the same phase and epoch; once at least
``min_trials`` of them have reported it, a trial below their median stops. It ends
CANCELLED with an error that begins with ``STOPPED_EARLY`` and says the figures.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import FailedPrecondition, InvalidArgument
from zoo.jobs.promotion import validate_promote
from zoo.jobs.records import EventType, FineTuneJobSpec, Job, JobState
from zoo.jobs.store import JobStore
from zoo.jobs.training import FineTuneParams

STRATEGIES = ("grid", "random", "tpe")
EARLY_STOPPING = ("median", "none")
MAX_TRIALS = 100
STOPPED_EARLY = "stopped early"
# The parameters a space may vary, and the type of their values.
SEARCHABLE: dict[str, type] = {
    "learning_rate": float,
    "fine_tune_learning_rate": float,
    "unfreeze": float,
    "dropout": float,
    "augment": bool,
    "epochs": int,
    "fine_tune_epochs": int,
}


@dataclass(frozen=True)
class Range:
    """A random search's interval, ends included; ``log``: log-uniform (both ends > 0)."""

    low: float
    high: float
    log: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log}


Dimension = tuple[Any, ...] | Range


def _invalid(name: str, expected: str, received: object) -> InvalidArgument:
    return InvalidArgument(f"{name} must be {expected}; received {received!r}"[:500])


def _check_value(base: dict[str, Any], key: str, value: object, where: str) -> Any:
    """``value`` for parameter ``key`` if its type and range are right (FineTuneParams's
    checks, on the base with this one value), else InvalidArgument naming ``where``."""
    kind = SEARCHABLE[key]
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        names = {bool: "true or false", int: "a whole number", float: "a number"}
        raise _invalid(where, names[kind], value)
    value = kind(value)
    try:
        FineTuneParams.from_dict({**base, key: value})
    except InvalidArgument as e:
        raise InvalidArgument(f"{where}: {e}") from None
    return value


def parse_space(space: object, strategy: str, base: dict[str, Any]) -> dict[str, Dimension]:
    """The space as given (a JSON object), checked: keys among ``SEARCHABLE``, lists of
    values for a grid, lists or ranges for a random search, every value in range."""
    if not isinstance(space, dict) or not space:
        raise _invalid("space", "a non-empty JSON object of parameter: values", space)
    parsed: dict[str, Dimension] = {}
    for key, spec in space.items():
        where = f"space.{key}"
        if key not in SEARCHABLE:
            raise _invalid("space keys", f"among {sorted(SEARCHABLE)}", key)
        if isinstance(spec, list):
            if not spec:
                raise _invalid(where, "a non-empty list of values", spec)
            values = tuple(_check_value(base, key, v, f"{where}[{i}]") for i, v in enumerate(spec))
            if len(set(values)) != len(values):
                raise _invalid(where, "a list without repeated values", spec)
            parsed[key] = values
        elif isinstance(spec, dict) and strategy != "grid":
            if SEARCHABLE[key] is bool:
                raise _invalid(where, "a list of booleans", spec)
            unknown = sorted(set(spec) - {"low", "high", "log"})
            if unknown or "low" not in spec or "high" not in spec:
                raise _invalid(where, 'a range {"low": x, "high": y, "log": false}', spec)
            low = _check_value(base, key, spec["low"], f"{where}.low")
            high = _check_value(base, key, spec["high"], f"{where}.high")
            log = spec.get("log", False)
            if not isinstance(log, bool):
                raise _invalid(f"{where}.log", "true or false", log)
            if not low < high:
                raise _invalid(f"{where}", "a range with low < high", spec)
            if log and low <= 0:
                raise _invalid(f"{where}.low", "above 0 for a log range", low)
            parsed[key] = Range(float(low), float(high), log)
        else:
            expected = "a list of values" + (" or a range" if strategy != "grid" else "")
            raise _invalid(where, expected, spec)
    return parsed


def _values(dimension: Dimension) -> tuple[Any, ...]:
    if isinstance(dimension, Range):
        raise _invalid("a grid's dimension", "a list of values", dimension.to_dict())
    return dimension


def _draw(rng: random.Random, key: str, dimension: Dimension) -> Any:
    if not isinstance(dimension, Range):
        return dimension[rng.randrange(len(dimension))]
    low, high = dimension.low, dimension.high
    if dimension.log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    if SEARCHABLE[key] is int:
        return min(int(high), max(int(low), round(value)))
    return min(high, max(low, value))  # exp(log(x)) may step just outside


def expand(
    space: dict[str, Dimension], strategy: str, trials: int, seed: int, parallel: int = 2
) -> list[dict[str, Any]]:
    """Each trial's parameters from the space: the whole grid, ``trials`` random draws, or
    TPE's first wave of ``parallel`` (the rest follow as waves end: ``tpe_wave``)."""
    if strategy == "grid":
        keys = list(space)
        points = [
            dict(zip(keys, combination, strict=True))
            for combination in itertools.product(*(_values(space[k]) for k in keys))
        ]
        if trials not in (0, len(points)):
            raise _invalid("trials", f"0 or the grid's size, {len(points)}", trials)
        if len(points) > MAX_TRIALS:
            raise _invalid("the grid's size", f"at most {MAX_TRIALS} trials", len(points))
        return points
    if not 1 <= trials <= MAX_TRIALS:
        raise _invalid("trials", f"in 1..{MAX_TRIALS} for a {strategy} search", trials)
    if strategy == "tpe":
        return tpe_wave(space, [], min(parallel, trials), seed, parallel)
    rng = random.Random(seed)
    return [{key: _draw(rng, key, dim) for key, dim in space.items()} for _ in range(trials)]


def tpe_wave(
    space: dict[str, Dimension],
    history: Sequence[tuple[dict[str, Any], float | None]],
    count: int,
    seed: int,
    startup: int,
) -> list[dict[str, Any]]:
    """The next ``count`` points Optuna's TPE proposes, given the trials so far (their
    parameters and validation accuracy, None when they have none). Seeded and rebuilt from
    the history each time, so the same history gives the same wave. The first ``startup``
    points are random, as TPE needs some history. Needs optuna (the ``tune`` extra)."""
    try:
        import optuna
    except ImportError:
        raise FailedPrecondition(
            "strategy tpe needs optuna on the server and its workers: pip install 'keras-zoo[tune]'"
        ) from None
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions: dict[str, BaseDistribution] = {}
    for key, dimension in space.items():
        if not isinstance(dimension, Range):
            distributions[key] = CategoricalDistribution(list(dimension))
        elif SEARCHABLE[key] is int:
            low, high = int(dimension.low), int(dimension.high)
            distributions[key] = IntDistribution(low, high, log=dimension.log)
        else:
            distributions[key] = FloatDistribution(dimension.low, dimension.high, log=dimension.log)
    with warnings.catch_warnings():  # constant_liar is "experimental" in optuna 4
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: the points of one wave avoid each other while none has a value
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, constant_liar=True
        )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    states = optuna.trial.TrialState
    for params, value in history:
        state = states.FAIL if value is None else states.COMPLETE
        trial = optuna.trial.create_trial(
            params=params, distributions=distributions, value=value, state=state
        )
        study.add_trial(trial)
    points = []
    for _ in range(count):
        asked = study.ask(distributions)
        points.append({key: asked.params[key] for key in space})
    return points


def tpe_history(trials: Sequence[Trial]) -> list[tuple[dict[str, Any], float | None]]:
    """What TPE learns from a search's trials: a succeeded trial's final validation
    accuracy; a stopped or failed one's best epoch (None when it reported none)."""
    return [
        (t.params, t.final_val_accuracy if t.final_val_accuracy is not None
         else t.best_val_accuracy)
        for t in trials
    ]  # fmt: skip


@dataclass(frozen=True)
class SearchJobSpec:
    """A search job's params in the store: the base, the space and the expanded trials."""

    base_model: str
    dataset_id: str
    output_model: str
    params: FineTuneParams  # the base of every trial (its promote is "never")
    space: dict[str, Any]  # as given (JSON), for the record
    strategy: str
    trials: list[dict[str, Any]]  # each trial's parameters over the base
    promote: str = "never"  # applied to the best trial's version only
    seed: int = 0
    early_stopping: str = "median"
    min_trials: int = 2  # the median rule's K: other trials that must have reported
    total: int = 0  # trials asked for (tpe creates them in waves); 0: len(trials)
    parallel: int = 2  # tpe: trials per wave

    @property
    def planned(self) -> int:
        return self.total or len(self.trials)

    def dimensions(self) -> dict[str, Dimension]:
        return parse_space(self.space, self.strategy, self.params.to_dict())

    def trial_params(self, index: int) -> FineTuneParams:
        return FineTuneParams.from_dict({**self.params.to_dict(), **self.trials[index]})

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_model": self.base_model,
            "dataset_id": self.dataset_id,
            "output_model": self.output_model,
            "params": self.params.to_dict(),
            "space": self.space,
            "strategy": self.strategy,
            "trials": self.trials,
            "promote": self.promote,
            "seed": self.seed,
            "early_stopping": self.early_stopping,
            "min_trials": self.min_trials,
            "total": self.total,
            "parallel": self.parallel,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SearchJobSpec:
        return cls(
            values["base_model"],
            values["dataset_id"],
            values["output_model"],
            FineTuneParams.from_dict(values.get("params", {})),
            dict(values["space"]),
            str(values["strategy"]),
            [dict(t) for t in values["trials"]],
            str(values.get("promote", "never")),
            int(values.get("seed", 0)),
            str(values.get("early_stopping", "median")),
            int(values.get("min_trials", 2)),
            int(values.get("total", 0)),
            int(values.get("parallel", 2)),
        )


def search_spec(
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
    parallel: int = 0,
) -> SearchJobSpec:
    """Every check of a search request; InvalidArgument names the field. Empty strings and
    zeros take the defaults (grid's size, never, median, 2, 2)."""
    strategy = strategy or "grid"
    if strategy not in STRATEGIES:
        raise _invalid("strategy", f"one of {list(STRATEGIES)}", strategy)
    early_stopping = early_stopping or "median"
    if early_stopping not in EARLY_STOPPING:
        raise _invalid("early_stopping", f"one of {list(EARLY_STOPPING)}", early_stopping)
    if not 0 <= min_trials <= MAX_TRIALS:
        raise _invalid("min_trials", f"in 0..{MAX_TRIALS} (0: 2)", min_trials)
    if not 0 <= parallel <= MAX_TRIALS:
        raise _invalid("parallel", f"in 0..{MAX_TRIALS} (0: 2)", parallel)
    parallel = parallel or 2
    if not 0 <= seed < 2**31:
        raise _invalid("seed", "in 0..2147483647", seed)
    if "promote" in params:
        raise _invalid(
            "params.promote",
            "unset: a search's promote applies to its best trial",
            params["promote"],
        )
    promote = validate_promote(promote or "never")
    base = FineTuneParams.from_dict(dict(params))
    parsed = parse_space(space, strategy, base.to_dict())
    points = expand(parsed, strategy, trials, seed, parallel)
    assert isinstance(space, dict)  # parse_space said so
    return SearchJobSpec(
        base_model, dataset_id, output_model, base, dict(space), strategy, points,
        promote, seed, early_stopping, min_trials or 2,
        trials if strategy == "tpe" else 0, parallel,
    )  # fmt: skip


# -- early stopping ----------------------------------------------------------------------


def median_rule(value: float, peers: Sequence[float], min_trials: int, where: str) -> str | None:
    """Why a trial whose validation accuracy at ``where`` is ``value`` stops, given the other
    trials' at the same point (``peers``); None when it goes on."""
    if len(peers) < min_trials or not peers:
        return None
    median = statistics.median(peers)
    if value < median:
        return (
            f"{STOPPED_EARLY} by the median rule: validation accuracy {value:.4f} at {where} "
            f"is below {median:.4f}, the median of {len(peers)} other trials there"
        )
    return None


# -- the table of trials -----------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One row of a search's table, read from the trial's job and its epoch events."""

    trial: int
    job_id: str
    params: dict[str, Any]
    state: str
    val_accuracy: list[float]  # per epoch: phase 1's, then phase 2's
    best_val_accuracy: float | None  # the best epoch's
    final_val_accuracy: float | None  # the trained model's (best weights restored)
    test_accuracy: float | None  # the exported ONNX model on the test split
    version: int | None
    duration_s: float | None
    note: str = ""  # why it failed or stopped

    @property
    def stopped_early(self) -> bool:
        return self.note.startswith(STOPPED_EARLY)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "job_id": self.job_id,
            "params": self.params,
            "state": self.state,
            "val_accuracy": self.val_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "final_val_accuracy": self.final_val_accuracy,
            "test_accuracy": self.test_accuracy,
            "version": self.version,
            "duration_s": self.duration_s,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        def number(key: str) -> float | None:
            return None if data.get(key) is None else float(data[key])

        return cls(
            trial=int(data["trial"]),
            job_id=str(data["job_id"]),
            params=dict(data["params"]),
            state=str(data["state"]),
            val_accuracy=[float(v) for v in data.get("val_accuracy", [])],
            best_val_accuracy=number("best_val_accuracy"),
            final_val_accuracy=number("final_val_accuracy"),
            test_accuracy=number("test_accuracy"),
            version=None if data.get("version") is None else int(data["version"]),
            duration_s=number("duration_s"),
            note=str(data.get("note", "")),
        )


def epoch_accuracies(epochs: Sequence[dict[str, Any]]) -> dict[tuple[int, int], float]:
    """Validation accuracy by (phase, epoch) from a trial's epoch event payloads; a resumed
    trial reports an epoch again, and its latest report counts."""
    found: dict[tuple[int, int], float] = {}
    for payload in epochs:
        if "val_accuracy" in payload:
            found[(int(payload["phase"]), int(payload["epoch"]))] = float(payload["val_accuracy"])
    return found


@dataclass(frozen=True)
class SearchResult:
    """What a search leaves: its table, the best trial and what was done with its version."""

    trials: list[Trial]
    best_trial: int | None
    model: str = ""
    version: int | None = None
    labels: list[str] = field(default_factory=list)
    promotion: str = ""
    selected_by: str = "final validation accuracy, then test accuracy, then trial order"

    def to_dict(self) -> dict[str, Any]:
        return {
            "trials": [t.to_dict() for t in self.trials],
            "best_trial": self.best_trial,
            "model": self.model,
            "version": self.version,
            "labels": self.labels,
            "promotion": self.promotion,
            "selected_by": self.selected_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResult:
        best = data.get("best_trial")
        return cls(
            trials=[Trial.from_dict(t) for t in data.get("trials", [])],
            best_trial=None if best is None else int(best),
            model=str(data.get("model", "")),
            version=None if data.get("version") is None else int(data["version"]),
            labels=[str(x) for x in data.get("labels", [])],
            promotion=str(data.get("promotion", "")),
        )


def best_trial(trials: Sequence[Trial]) -> Trial | None:
    """The succeeded trial with the highest final validation accuracy; ties go to the higher
    test accuracy, then to the earlier trial. None when no trial succeeded."""
    done = [t for t in trials if t.state == "SUCCEEDED" and t.final_val_accuracy is not None]
    if not done:
        return None
    return max(
        done,
        key=lambda t: (t.final_val_accuracy or 0.0, t.test_accuracy or 0.0, -t.trial),
    )


def trial_rows(
    spec: SearchJobSpec, children: Sequence[Job], epochs: Mapping[str, Sequence[dict[str, Any]]]
) -> list[Trial]:
    """The table of a search from its trials' jobs and their epoch event payloads (by job
    id), in trial order."""
    rows = []
    for job in children:
        index = FineTuneJobSpec.from_dict(job.params).trial
        if index is None:
            continue
        curve = [v for _, v in sorted(epoch_accuracies(epochs.get(job.id, ())).items())]
        result = job.finetune_result() if job.state is JobState.SUCCEEDED else None
        duration = (
            round((job.finished_at - job.started_at).total_seconds(), 2)
            if job.finished_at and job.started_at
            else None
        )
        rows.append(
            Trial(
                trial=index,
                job_id=job.id,
                params=spec.trials[index],
                state=job.state.value,
                val_accuracy=curve,
                best_val_accuracy=max(curve) if curve else None,
                final_val_accuracy=result.val_accuracy if result else None,
                test_accuracy=(
                    result.evaluation.accuracy if result and result.evaluation else None
                ),
                version=result.version if result else None,
                duration_s=duration,
                note=job.error or "",
            )
        )
    return sorted(rows, key=lambda t: t.trial)


def read_trials(store: JobStore, search: Job) -> list[Trial]:
    """The table of ``search`` as its trials stand in the store now."""
    children = store.children(search.id)
    epochs = {
        c.id: [e.payload for e in store.events(c.id) if e.type is EventType.EPOCH] for c in children
    }
    return trial_rows(SearchJobSpec.from_dict(search.params), children, epochs)
