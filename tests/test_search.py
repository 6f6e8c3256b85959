"""Searches over fine-tuning settings: the space, the median rule, the store's parent and
trials, and (further down) real searches through a server and its workers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from helpers import postgres_job_store

from zoo.errors import InvalidArgument
from zoo.jobs.records import EventType, FineTuneJobSpec, JobKind, JobState
from zoo.jobs.search import (
    STOPPED_EARLY,
    Range,
    SearchJobSpec,
    best_trial,
    expand,
    median_rule,
    parse_space,
    read_trials,
    search_spec,
)
from zoo.jobs.store import JobStore
from zoo.jobs.training import FineTuneParams

BASE = FineTuneParams().to_dict()


def test_a_grid_expands_to_every_combination_in_the_order_given() -> None:
    space = {"learning_rate": [0.01, 0.001], "augment": [False, True], "epochs": [1, 2, 3]}
    points = expand(parse_space(space, "grid", BASE), "grid", 0, seed=0)
    assert len(points) == 12
    assert points[:4] == [
        {"learning_rate": 0.01, "augment": False, "epochs": 1},
        {"learning_rate": 0.01, "augment": False, "epochs": 2},
        {"learning_rate": 0.01, "augment": False, "epochs": 3},
        {"learning_rate": 0.01, "augment": True, "epochs": 1},
    ]
    assert points[-1] == {"learning_rate": 0.001, "augment": True, "epochs": 3}
    assert len({tuple(p.items()) for p in points}) == 12  # no point twice
    assert expand(parse_space(space, "grid", BASE), "grid", 12, seed=0) == points


def test_random_draws_are_seeded_and_inside_their_ranges() -> None:
    space = {
        "learning_rate": {"low": 1e-5, "high": 1e-1, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "epochs": {"low": 1, "high": 3},
        "augment": [True, False],
    }
    parsed = parse_space(space, "random", BASE)
    assert parsed["learning_rate"] == Range(1e-5, 1e-1, True)
    draws = expand(parsed, "random", 100, seed=7)
    assert draws == expand(parsed, "random", 100, seed=7)
    assert draws != expand(parsed, "random", 100, seed=8)
    rates = [d["learning_rate"] for d in draws]
    assert all(1e-5 <= r <= 1e-1 for r in rates)
    # log-uniform: about half the draws below the geometric middle, 1e-3
    assert 30 <= sum(r < 1e-3 for r in rates) <= 70
    assert all(0.0 <= d["dropout"] <= 0.5 for d in draws)
    assert {d["epochs"] for d in draws} == {1, 2, 3}
    assert all(isinstance(d["epochs"], int) for d in draws)
    assert {d["augment"] for d in draws} == {True, False}


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"space": {}}, "space must be a non-empty JSON object of parameter: values; received {}"),
        ({"space": [1]}, "space must be a non-empty JSON object"),
        ({"space": {"batch_size": [8]}}, "space keys must be among ['augment', 'dropout', "),
        ({"space": {"learning_rate": 0.1}}, "space.learning_rate must be a list of values; "
                                            "received 0.1"),  # fmt: skip
        ({"space": {"learning_rate": []}}, "space.learning_rate must be a non-empty list"),
        ({"space": {"learning_rate": [0.1, -1]}},
         "space.learning_rate[1]: learning_rate must be in (0, 10]; received -1.0"),
        ({"space": {"learning_rate": [0.1, "fast"]}},
         "space.learning_rate[1] must be a float; received 'fast'"),
        ({"space": {"epochs": [1.5]}}, "space.epochs[0] must be a int; received 1.5"),
        ({"space": {"augment": [1]}}, "space.augment[0] must be a boolean; received 1"),
        ({"space": {"dropout": [0.1, 0.1]}}, "space.dropout must be a list without repeated"),
        ({"space": {"dropout": {"low": 0.1, "high": 0.2}}},
         "space.dropout must be a list of values; received {'low': 0.1"),
        ({"strategy": "random", "trials": 2, "space": {"dropout": {"low": 0.3, "high": 0.2}}},
         "space.dropout must be a range with low < high"),
        ({"strategy": "random", "trials": 2,
          "space": {"learning_rate": {"low": 0.0, "high": 0.2, "log": True}}},
         "space.learning_rate.low: learning_rate must be in (0, 10]; received 0.0"),
        ({"strategy": "random", "trials": 2, "space": {"dropout": {"low": 0.1}}},
         'space.dropout must be a range {"low": x, "high": y, "log": false}'),
        ({"strategy": "random", "trials": 2, "space": {"augment": {"low": 0, "high": 1}}},
         "space.augment must be a list of booleans"),
        ({"strategy": "random", "space": {"dropout": [0.1]}},
         "trials must be in 1..100 for a random search; received 0"),
        ({"strategy": "bayes"}, "strategy must be one of ['grid', 'random']; received 'bayes'"),
        ({"trials": 3}, "trials must be 0 or the grid's size, 2; received 3"),
        ({"space": {"epochs": list(range(1, 11)), "dropout": [i / 20 for i in range(11)]}},
         "the grid's size must be at most 100 trials; received 110"),
        ({"promote": "sometimes"}, "promote must be one of ['never', 'always', 'if_better']; "
                                   "received 'sometimes'"),  # fmt: skip
        ({"early_stopping": "mean"}, "early_stopping must be one of ['median', 'none']"),
        ({"min_trials": -1}, "min_trials must be in 0..100 (0: 2); received -1"),
        ({"params": {"promote": "always"}},
         "params.promote must be unset: a search's promote applies to its best trial"),
        ({"params": {"epochs": 0}}, "epochs must be in 1..1000; received 0"),
    ],
)  # fmt: skip
def test_bad_search_requests_say_which_field(request_fields: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"params": {}, "space": {"learning_rate": [0.1, 0.01]}}
    fields.update(request_fields)
    with pytest.raises(InvalidArgument) as raised:
        search_spec("VGG16", "d", "out", **fields)
    assert message in str(raised.value)


def test_the_median_rule() -> None:
    assert median_rule(0.2, [0.9], min_trials=2, where="phase 1 epoch 1") is None  # too few
    assert median_rule(0.95, [0.9, 0.8], min_trials=2, where="phase 1 epoch 1") is None
    assert median_rule(0.75, [0.5, 0.75, 0.9], min_trials=2, where="x") is None  # at the median
    reason = median_rule(0.2, [0.9, 0.8, 0.1], min_trials=2, where="phase 1 epoch 2")
    assert reason == (
        f"{STOPPED_EARLY} by the median rule: validation accuracy 0.2000 at phase 1 epoch 2 "
        "is below 0.8000, the median of 3 other trials there"
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield JobStore(tmp_path / "jobs.db")
        return
    with postgres_job_store() as jobs:
        yield jobs


def _search(store: JobStore, trials: int = 3) -> tuple[Any, list[Any]]:
    spec = search_spec(
        "VGG16", "d", "out", {}, {"learning_rate": [10 ** -(i + 1) for i in range(trials)]}
    )

    def specs(parent: str) -> list[dict[str, Any]]:
        return [
            FineTuneJobSpec("VGG16", "d", "out", spec.trial_params(i), parent, i).to_dict()
            for i in range(trials)
        ]

    return store.create_search(spec.to_dict(), specs)


def test_a_search_waits_for_its_trials_then_one_worker_takes_it(store: JobStore) -> None:
    other = store.create(JobKind.EXPORT, {})
    parent, trials = _search(store)
    assert [t.kind for t in trials] == [JobKind.FINETUNE] * 3
    assert [FineTuneJobSpec.from_dict(t.params).trial for t in trials] == [0, 1, 2]
    assert [t.id for t in store.children(parent.id)] == [t.id for t in trials]
    assert store.children(other.id) == []
    assert store.claim("w1").id == other.id
    first = store.claim("w1")
    assert first.id == trials[0].id  # trials in their order, the parent not before them
    assert store.get(parent.id).state is JobState.RUNNING  # its first trial started
    assert store.get(parent.id).worker is None
    assert store.claim("w2").id == trials[1].id
    store.set_state(first.id, JobState.FAILED, error="boom")
    assert store.claim("w3").id == trials[2].id
    assert store.claim("w4") is None  # trial 1 and 2 still run: nothing for a worker
    store.set_state(trials[1].id, JobState.SUCCEEDED, result={})
    assert store.claim("w4") is None
    store.set_state(trials[2].id, JobState.CANCELLING)
    assert store.claim("w4") is None  # CANCELLING has not ended
    store.set_state(trials[2].id, JobState.CANCELLED)
    taken = store.claim("w4")
    assert taken is not None and (taken.id, taken.worker, taken.state) == (
        parent.id, "w4", JobState.RUNNING,
    )  # fmt: skip
    assert store.claim("w5") is None  # taken once
    messages = [e.payload.get("message", "") for e in store.events(parent.id)]
    assert not [m for m in messages if "stopped; resuming" in m]


def test_the_table_reads_the_trials_and_their_epochs(store: JobStore) -> None:
    parent, trials = _search(store, trials=2)
    for t in trials:
        store.claim("w")
    for i, t in enumerate(trials):
        for epoch, accuracy in ((1, 0.5 + i / 10), (2, 0.6 + i / 10), (1, 0.55 + i / 10)):
            store.add_event(t.id, EventType.EPOCH, {"phase": 1, "epoch": epoch,
                                                    "val_accuracy": accuracy})  # fmt: skip
        store.add_event(t.id, EventType.EPOCH, {"phase": 2, "epoch": 1, "val_accuracy": 0.4})
    store.set_state(trials[0].id, JobState.FAILED, error="stopped early by the median rule: x")
    rows = read_trials(store, store.get(parent.id))
    assert [r.trial for r in rows] == [0, 1]
    # a resumed epoch counts once, its latest report
    assert rows[0].val_accuracy == [0.55, 0.6, 0.4]
    assert rows[1].val_accuracy == pytest.approx([0.65, 0.7, 0.4])
    assert rows[0].best_val_accuracy == 0.6 and rows[0].stopped_early
    assert rows[0].params == {"learning_rate": 0.1} and rows[1].params == {"learning_rate": 0.01}
    assert (rows[1].state, rows[1].version, rows[1].duration_s) == ("RUNNING", None, None)
    assert best_trial(rows) is None  # none succeeded


def test_the_spec_round_trips_through_the_store_shape() -> None:
    spec = search_spec(
        "VGG16", "d", "out", {"epochs": 2},
        {"dropout": {"low": 0.1, "high": 0.4}, "epochs": [1, 3]},
        strategy="random", trials=3, promote="if_better", seed=4, min_trials=1,
    )  # fmt: skip
    again = SearchJobSpec.from_dict(spec.to_dict())
    assert again == spec and again.min_trials == 1 and len(again.trials) == 3
    assert all(again.trial_params(i).promote == "never" for i in range(3))
    assert all(math.isfinite(again.trial_params(i).dropout) for i in range(3))
