"""Searches over fine-tuning settings: the space, the median rule, the store's parent and
trials, and (further down) real searches through a server and its workers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN
from helpers import DIGITS_BASE, DIGITS_FAST, postgres_job_store

from client import AsyncZooClient, ZooClient, errors
from zoo.errors import Cancelled, InvalidArgument
from zoo.jobs.records import EventType, FineTuneJobSpec, JobKind, JobState
from zoo.jobs.search import (
    STOPPED_EARLY,
    Range,
    SearchJobSpec,
    Trial,
    best_trial,
    expand,
    median_rule,
    parse_space,
    read_trials,
    search_spec,
    tpe_wave,
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
        (
            {"space": {"learning_rate": 0.1}},
            "space.learning_rate must be a list of values; received 0.1",
        ),
        ({"space": {"learning_rate": []}}, "space.learning_rate must be a non-empty list"),
        (
            {"space": {"learning_rate": [0.1, -1]}},
            "space.learning_rate[1]: learning_rate must be in (0, 10]; received -1.0",
        ),
        (
            {"space": {"learning_rate": [0.1, "fast"]}},
            "space.learning_rate[1] must be a number; received 'fast'",
        ),
        ({"space": {"epochs": [1.5]}}, "space.epochs[0] must be a whole number; received 1.5"),
        ({"space": {"augment": [1]}}, "space.augment[0] must be true or false; received 1"),
        ({"space": {"dropout": [0.1, 0.1]}}, "space.dropout must be a list without repeated"),
        (
            {"space": {"dropout": {"low": 0.1, "high": 0.2}}},
            "space.dropout must be a list of values; received {'low': 0.1",
        ),
        (
            {"strategy": "random", "trials": 2, "space": {"dropout": {"low": 0.3, "high": 0.2}}},
            "space.dropout must be a range with low < high",
        ),
        (
            {
                "strategy": "random",
                "trials": 2,
                "space": {"learning_rate": {"low": 0.0, "high": 0.2, "log": True}},
            },
            "space.learning_rate.low: learning_rate must be in (0, 10]; received 0.0",
        ),
        (
            {"strategy": "random", "trials": 2, "space": {"dropout": {"low": 0.1}}},
            'space.dropout must be a range {"low": x, "high": y, "log": false}',
        ),
        (
            {"strategy": "random", "trials": 2, "space": {"augment": {"low": 0, "high": 1}}},
            "space.augment must be a list of booleans",
        ),
        (
            {"strategy": "random", "space": {"dropout": [0.1]}},
            "trials must be in 1..100 for a random search; received 0",
        ),
        (
            {"strategy": "bayes"},
            "strategy must be one of ['grid', 'random', 'tpe']; received 'bayes'",
        ),
        (
            {"strategy": "tpe", "space": {"dropout": [0.1]}},
            "trials must be in 1..100 for a tpe search; received 0",
        ),
        ({"strategy": "tpe", "trials": 3, "parallel": -1}, "parallel must be in 0..100 (0: 2)"),
        ({"trials": 3}, "trials must be 0 or the grid's size, 2; received 3"),
        (
            {"space": {"epochs": list(range(1, 11)), "dropout": [i / 20 for i in range(11)]}},
            "the grid's size must be at most 100 trials; received 110",
        ),
        (
            {"promote": "sometimes"},
            "promote must be one of ['never', 'always', 'if_better']; received 'sometimes'",
        ),
        ({"early_stopping": "mean"}, "early_stopping must be one of ['median', 'none']"),
        ({"min_trials": -1}, "min_trials must be in 0..100 (0: 2); received -1"),
        (
            {"params": {"promote": "always"}},
            "params.promote must be unset: a search's promote applies to its best trial",
        ),
        ({"params": {"epochs": 0}}, "epochs must be in 1..1000; received 0"),
    ],
)
def test_bad_search_requests_say_which_field(request_fields: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"params": {}, "space": {"learning_rate": [0.1, 0.01]}}
    fields.update(request_fields)
    with pytest.raises(InvalidArgument) as raised:
        search_spec("VGG16", "d", "out", **fields)
    assert message in str(raised.value)


def test_tpe_proposes_seeded_waves_that_follow_the_history() -> None:
    space = parse_space(
        {"learning_rate": {"low": 1e-5, "high": 1e-1, "log": True}, "epochs": {"low": 1,
         "high": 4}, "augment": [True, False]},
        "tpe", BASE,
    )  # fmt: skip
    first = tpe_wave(space, [], 2, seed=3, startup=2)
    assert first == tpe_wave(space, [], 2, seed=3, startup=2) and len(first) == 2
    assert first != tpe_wave(space, [], 2, seed=4, startup=2)
    history: list[tuple[dict[str, Any], float | None]] = [
        ({"learning_rate": 1e-2, "epochs": 2, "augment": False}, 0.9),
        ({"learning_rate": 1e-5, "epochs": 1, "augment": True}, None),  # failed: no value
    ]
    wave = tpe_wave(space, history, 8, seed=3, startup=2)
    assert wave == tpe_wave(space, history, 8, seed=3, startup=2)
    for point in wave:
        assert 1e-5 <= point["learning_rate"] <= 1e-1 and point["epochs"] in (1, 2, 3, 4)
        assert isinstance(point["epochs"], int) and isinstance(point["augment"], bool)
    # high rates did well, low ones badly: TPE's first proposal is a high rate for (nearly)
    # every seed, where a random draw is above 1e-3 half the time
    rates = parse_space({"learning_rate": {"low": 1e-5, "high": 1e-1, "log": True}}, "tpe", BASE)
    scored = [1e-1, 5e-2, 2e-2, 1e-2, 1e-5, 3e-5, 1e-4, 2e-4, 5e-4]
    scores = [0.95, 0.9, 0.92, 0.9, 0.2, 0.25, 0.3, 0.3, 0.4]
    past: list[tuple[dict[str, Any], float | None]] = [
        ({"learning_rate": r}, v) for r, v in zip(scored, scores, strict=True)
    ]
    proposals = [tpe_wave(rates, past, 1, seed=s, startup=2)[0]["learning_rate"] for s in range(20)]
    assert sum(r > 1e-3 for r in proposals) >= 18
    spec = search_spec("VGG16", "d", "out", {}, {"dropout": {"low": 0.0, "high": 0.5}},
                       strategy="tpe", trials=5, parallel=2)  # fmt: skip
    assert (len(spec.trials), spec.planned, spec.parallel) == (2, 5, 2)


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
    created = [store.get(j.id).created_at for j in (parent, *trials)]
    assert created == sorted(set(created))  # the trials after their search, in their order
    assert store.claim("w1").id == other.id
    first = store.claim("w1")
    assert first.id == trials[0].id  # trials in their order, the parent not before them
    assert store.get(parent.id).state is JobState.RUNNING  # its first trial started
    assert store.get(parent.id).worker is None
    assert store.claim("w2").id == trials[1].id
    store.set_state(first.id, JobState.FAILED, error="boom")
    assert store.claim("w3").id == trials[2].id
    states = [e.payload["state"] for e in store.events(parent.id) if e.type is EventType.STATE]
    assert states == ["QUEUED", "RUNNING"]  # started once, by its first trial
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
    store.set_state(other.id, JobState.SUCCEEDED, result={})
    time.sleep(0.2)  # w4 stops beating: the search is taken again, as any job
    again = store.claim("w5", stale_after_s=0.1)
    assert again is not None and (again.id, again.attempts) == (parent.id, 2)
    messages = [e.payload.get("message", "") for e in store.events(parent.id)]
    assert "worker w4 stopped; resuming on w5" in messages
    store.set_state(parent.id, JobState.QUEUED)  # w5 shuts down and hands it back
    assert store.claim("w6").id == parent.id


def test_a_trial_that_does_not_name_its_search_creates_nothing(store: JobStore) -> None:
    spec = search_spec("VGG16", "d", "out", {}, {"learning_rate": [0.1, 0.01]})

    def specs(parent: str) -> list[dict[str, Any]]:
        stray = FineTuneJobSpec("VGG16", "d", "out", spec.trial_params(1), "another", 1)
        return [FineTuneJobSpec("VGG16", "d", "out", spec.trial_params(0), parent, 0).to_dict(),
                stray.to_dict()]  # fmt: skip

    with pytest.raises(InvalidArgument, match="search_id"):
        store.create_search(spec.to_dict(), specs)
    assert store.jobs() == []  # all or none


def test_a_wave_is_queued_after_the_trials_and_the_search_let_go(store: JobStore) -> None:
    """extend_search (tpe): the next trials queue after the earlier ones, and the worker that
    queued them lets the search go until they have ended; a search that no longer runs on that
    worker gets no more trials."""
    parent, first = _search(store, trials=1)
    (trial,) = first
    assert store.claim("w1").id == trial.id
    store.set_state(trial.id, JobState.SUCCEEDED, result={})
    assert store.claim("w2").id == parent.id  # its only trial ended
    wave_params = {**parent.params, "wave": 2}
    from sqlalchemy import text

    ahead = trial.created_at + dt.timedelta(hours=1)  # made by a host whose clock is ahead
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE jobs SET created_at = :at WHERE id = :id"),
                           {"at": ahead, "id": trial.id})  # fmt: skip

    def wave(i: int) -> dict[str, Any]:
        spec = SearchJobSpec.from_dict(parent.params)
        return FineTuneJobSpec("VGG16", "d", "out", spec.trial_params(0), parent.id, i).to_dict()

    with pytest.raises(Cancelled, match="RUNNING"):  # not w1's
        store.extend_search(parent.id, "w1", wave_params, [wave(1)])
    stray = {**wave(1), "search_id": "another"}
    with pytest.raises(InvalidArgument, match="search_id"):
        store.extend_search(parent.id, "w2", wave_params, [wave(1), stray])
    assert [t.id for t in store.children(parent.id)] == [trial.id]  # nothing queued
    added = store.extend_search(parent.id, "w2", wave_params, [wave(1), wave(2)])
    assert [(t.kind, t.state) for t in added] == [(JobKind.FINETUNE, JobState.QUEUED)] * 2
    assert [t.id for t in store.children(parent.id)] == [trial.id, *(t.id for t in added)]
    after = store.get(parent.id)
    assert (after.state, after.worker, after.params) == (JobState.RUNNING, None, wave_params)
    messages = [e.payload.get("message", "") for e in store.events(parent.id)]
    assert "2 more trials queued; w2 lets the search go" in messages
    assert store.claim("w3").id == added[0].id  # the wave, in its order, not the search
    assert store.claim("w3").id == added[1].id
    assert store.claim("w3") is None
    for t in added:
        store.set_state(t.id, JobState.SUCCEEDED, result={})
    assert store.claim("w4").id == parent.id  # the wave ended: the search again
    store.set_state(parent.id, JobState.CANCELLING)
    with pytest.raises(Cancelled, match="CANCELLING"):
        store.extend_search(parent.id, "w4", wave_params, [wave(3)])


def test_a_cancel_that_holds_the_search_keeps_its_next_wave_out() -> None:
    """extend_search reads the search under its row lock: a cancel committed while the wave
    waits for the row is seen, and no trial is queued after the cancel cascaded. PostgreSQL
    only: SQLite's BEGIN IMMEDIATE serialises every writer whatever the code does."""
    import threading

    from sqlalchemy import text

    with postgres_job_store() as store:
        parent, (trial,) = _search(store, trials=1)
        store.claim("w1")
        store.set_state(trial.id, JobState.SUCCEEDED, result={})
        assert store.claim("w2").id == parent.id
        wave = {**trial.params, "trial": 1}
        outcome: dict[str, object] = {}

        def extend() -> None:
            try:
                outcome["added"] = store.extend_search(parent.id, "w2", parent.params, [wave])
            except Cancelled as e:
                outcome["error"] = e

        with store.engine.connect() as holder:  # a cancel, holding the search's row
            holder.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"),
                           {"id": parent.id})  # fmt: skip
            waiting = threading.Thread(target=extend)
            waiting.start()
            waiting.join(1.0)
            assert waiting.is_alive()  # it waits for the row
            holder.execute(text("UPDATE jobs SET state = 'CANCELLING' WHERE id = :id"),
                           {"id": parent.id})  # fmt: skip
            holder.commit()
        waiting.join(30)
        assert "CANCELLING; no more trials" in str(outcome.get("error"))
        assert [t.id for t in store.children(parent.id)] == [trial.id]


def test_the_table_reads_the_trials_and_their_epochs(store: JobStore) -> None:
    parent, trials = _search(store, trials=2)
    for _ in trials:
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


# -- through a real server and its workers -------------------------------------------------

SEARCH_BASE = {**DIGITS_FAST, "epochs": 3, "fine_tune_epochs": 1}


def _server(tmp_path: Path, workers: int) -> Any:
    from serving import start_server

    repository = tmp_path / "repo"
    repository.mkdir()
    env = {"ZOO_DATA_DIR": str(tmp_path / "data"), "ZOO_WORKERS": str(workers),
           "ZOO_JOB_STALE_AFTER_S": "30"}  # fmt: skip
    return start_server(repository, tmp_path, "--token", TOKEN, env=env)


def _trial_jobs(zoo: ZooClient, search: Any) -> list[Any]:
    trials = [j for j in zoo.jobs(limit=1000) if j.params.get("search_id") == search.id]
    return sorted(trials, key=lambda j: j.params["trial"])


def _val_curve(job: Any) -> list[float]:
    found = {}
    for e in job.watch():
        if e.type == "epoch" and "val_accuracy" in e.payload:
            found[(e.payload["phase"], e.payload["epoch"])] = e.payload["val_accuracy"]
    return [v for _, v in sorted(found.items())]


def test_search_requests_through_the_server(tmp_path: Path, digits, zoo_cli) -> None:
    import httpx

    folder, _ = digits
    server = _server(tmp_path, workers=0)  # nothing runs: the requests alone
    try:
        with ZooClient(server.address, token=TOKEN) as zoo:
            dataset = zoo.upload_dataset(folder)
            args = (DIGITS_BASE, dataset, "searched")
            for space, options, message in [
                ({"learning_rate": [0.1, -1]}, {},
                 r"space\.learning_rate\[1\]: learning_rate must be in \(0, 10\]; received -1"),
                ({"batch_size": [8]}, {}, r"space keys must be among \['augment'"),
                ({"dropout": [0.1]}, {"strategy": "random"},
                 "trials must be in 1..100 for a random search; received 0"),
                ({"dropout": [0.1]}, {"trials": 2}, "trials must be 0 or the grid's size, 1"),
                ({"dropout": [0.1]}, {"epochs": 0}, "epochs must be in 1..1000; received 0"),
                ({"dropout": [0.1]}, {"promote": "maybe"}, "promote must be one of"),
            ]:  # fmt: skip
                with pytest.raises(errors.InvalidArgument, match=message):
                    zoo.search(*args, space, **options)
            with pytest.raises(errors.NotFound, match="unknown model 'VGG61'"):
                zoo.search("VGG61", dataset, "searched", {"dropout": [0.1]})
            assert zoo.jobs() == []  # a bad request creates nothing
            with ZooClient(server.address) as anonymous, pytest.raises(errors.Unauthenticated):
                anonymous.search(*args, {"dropout": [0.1]})

            with httpx.Client(base_url=server.http_url, timeout=60) as http:
                auth = {"authorization": f"Bearer {TOKEN}"}
                body = {"base_model": DIGITS_BASE, "dataset_id": dataset.id,
                        "output_model": "searched", "params": SEARCH_BASE}  # fmt: skip
                bad = http.post("/v1/jobs/search", json={**body, "space": {"dropout": 0.1}},
                                headers=auth)  # fmt: skip
                assert bad.status_code == 400, bad.text
                assert "space.dropout must be a list of values; received 0.1" in bad.text
                assert http.post("/v1/jobs/search", json={**body, "space": {"dropout": [0.1]}}
                                 ).status_code == 401  # fmt: skip
                made = http.post(
                    "/v1/jobs/search",
                    json={**body, "space": {"learning_rate": {"low": 1e-3, "high": 1e-1,
                                                              "log": True}},
                          "strategy": "random", "trials": 3, "seed": 5},
                    headers=auth,
                )  # fmt: skip
                assert made.status_code == 201, made.text
                search = zoo.job(made.json()["id"])
            assert (search.kind, search.state) == ("search", "QUEUED")
            trials = _trial_jobs(zoo, search)
            assert [t.params["trial"] for t in trials] == [0, 1, 2]
            rates = [t.params["params"]["learning_rate"] for t in trials]
            assert rates == [p["learning_rate"] for p in search.params["trials"]]
            assert all(1e-3 <= r <= 1e-1 for r in rates) and len(set(rates)) == 3
            assert all(t.params["params"]["epochs"] == 3 for t in trials)  # the base
            assert all(t.params["params"]["promote"] == "never" for t in trials)
            table = search.result["trials"]
            assert [(r["trial"], r["state"], r["job_id"]) for r in table] == [
                (t.params["trial"], "QUEUED", t.id) for t in trials
            ]

            space = tmp_path / "space.json"
            space.write_text(json.dumps({"dropout": [0.0, 0.2], "augment": [False, True]}))
            made = zoo_cli("search", "--base", DIGITS_BASE, "--dataset", dataset.id, "--output",
                           "searched", "--space", str(space), "-p", "epochs=2",
                           "--server", server.address, env={"ZOO_TOKEN": TOKEN})  # fmt: skip
            assert made.returncode == 0, made.stderr
            cli_id = made.stdout.split()[1]
            assert made.stdout.strip().endswith("QUEUED: 4 trials")
            shown = zoo_cli("jobs", "show", cli_id, "--server", server.address)
            assert shown.returncode == 0, shown.stderr
            assert "dropout=0.2, augment=True" in shown.stdout
            assert shown.stdout.count("QUEUED") == 5  # the search and its 4 trials

            # cancel cascades: queued trials end at once, and so does the search
            cancelled = zoo.job(cli_id).cancel()
            assert cancelled.state == "CANCELLED"
            cli_trials = _trial_jobs(zoo, cancelled)
            assert [t.state for t in cli_trials] == ["CANCELLED"] * 4
            assert search.refresh().state == "QUEUED"  # the other search is untouched

            async def through_asyncio() -> Any:
                async with AsyncZooClient(server.address, token=TOKEN) as azoo:
                    made = await azoo.search(
                        DIGITS_BASE, dataset.id, "searched", {"unfreeze": [1, 2]}, epochs=2
                    )
                    return await azoo.cancel_job(made.id)

            cancelled = asyncio.run(through_asyncio())
            assert (cancelled.kind, cancelled.state) == ("search", "CANCELLED")
            unfreeze = [t.params["params"]["unfreeze"] for t in _trial_jobs(zoo, cancelled)]
            assert unfreeze == [1, 2]
    finally:
        server.stop()


def test_a_search_runs_trials_on_two_workers_and_promotes_the_best(
    tmp_path: Path, digits, zoo_cli
) -> None:
    folder, held_out = digits
    server = _server(tmp_path, workers=2)
    try:
        with ZooClient(server.address, token=TOKEN) as zoo:
            dataset = zoo.upload_dataset(folder)
            space = {"learning_rate": [1e-2, 1e-7], "dropout": [0.0, 0.3]}
            search = zoo.search(DIGITS_BASE, dataset, "searched", space, promote="always",
                                early_stopping="none", **SEARCH_BASE)  # fmt: skip
            final = search.wait()
            assert final.state == "SUCCEEDED", final.error
            result = final.result
            trials = _trial_jobs(zoo, final)
            assert [t.state for t in trials] == ["SUCCEEDED"] * 4, [t.error for t in trials]
            # each trial ran on one of two workers, some at the same time as another
            assert len({t.worker for t in trials}) == 2
            assert any(
                a.started_at < b.finished_at and b.started_at < a.finished_at
                for a in trials for b in trials if a.id < b.id
            )  # fmt: skip
            # the table is its trials'
            assert [r["params"] for r in result["trials"]] == [
                {"learning_rate": 1e-2, "dropout": 0.0}, {"learning_rate": 1e-2, "dropout": 0.3},
                {"learning_rate": 1e-7, "dropout": 0.0}, {"learning_rate": 1e-7, "dropout": 0.3},
            ]  # fmt: skip
            for row, trial in zip(result["trials"], trials, strict=True):
                assert row["job_id"] == trial.id and row["state"] == trial.state
                assert row["version"] == trial.result["version"]
                assert row["final_val_accuracy"] == trial.result["val_accuracy"]
                assert row["test_accuracy"] == trial.result["evaluation"]["accuracy"]
                assert row["val_accuracy"] == _val_curve(trial)
                assert len(row["val_accuracy"]) == 4  # 3 epochs of phase 1, 1 of phase 2
                assert row["best_val_accuracy"] == max(row["val_accuracy"])
                assert trial.params["params"]["learning_rate"] == row["params"]["learning_rate"]
                assert trial.params["params"]["dropout"] == row["params"]["dropout"]
            # the best by validation accuracy, and only it, is promoted
            best = max(result["trials"], key=lambda r: (r["final_val_accuracy"],
                                                        r["test_accuracy"], -r["trial"]))  # fmt: skip
            print("trials:", [(r["params"], r["final_val_accuracy"], r["test_accuracy"],
                               r["duration_s"]) for r in result["trials"]])  # fmt: skip
            assert result["best_trial"] == best["trial"]
            assert best["params"]["learning_rate"] == 1e-2  # 1e-7 learns nothing in 3 epochs
            assert (result["model"], result["version"]) == ("searched", best["version"])
            assert result["labels"] == ["candidate", "stable"]
            assert result["promotion"] == f"promote is always: version {best['version']} is stable"
            labels = zoo.labels("searched")
            assert labels.labels == {"candidate": best["version"], "stable": best["version"]}
            assert sorted(zoo.model("searched").versions) == [1, 2, 3, 4]
            answer = zoo.classify(held_out[0][0], "searched", top_k=1)
            assert not isinstance(answer, list) and answer.version == best["version"]

            shown = zoo_cli("jobs", "show", final.id, "--server", server.address)
            assert shown.returncode == 0, shown.stderr
            print(shown.stdout)
            assert f"best: trial {best['trial']}" in shown.stdout
            assert shown.stdout.count("SUCCEEDED") == 5
    finally:
        server.stop()


def test_the_median_rule_stops_a_bad_trial_and_cancel_cascades(tmp_path: Path, digits) -> None:
    folder, _ = digits
    server = _server(tmp_path, workers=1)  # trials one after another: the order is known
    try:
        with ZooClient(server.address, token=TOKEN) as zoo:
            dataset = zoo.upload_dataset(folder)
            # trial 0 (1e-2) has no other trial to compare with; trial 1 (1e-7) is compared
            # with trial 0 after its first epoch
            space = {"learning_rate": [1e-2, 1e-7]}
            search = zoo.search(DIGITS_BASE, dataset, "stopped", space, min_trials=1,
                                **SEARCH_BASE)  # fmt: skip
            final = search.wait()
            assert final.state == "SUCCEEDED", final.error
            good, bad = _trial_jobs(zoo, final)
            assert good.state == "SUCCEEDED", good.error
            assert bad.state == "CANCELLED"
            assert bad.error.startswith(
                "stopped early by the median rule: validation accuracy "
            ) and bad.error.endswith("at phase 1 epoch 1 is below " f"{_val_curve(good)[0]:.4f}, "
                                     "the median of 1 other trials there")  # fmt: skip
            assert bad.result is None and "phase 2" not in " ".join(
                e.payload.get("message", "") for e in bad.watch()
            )
            rows = final.result["trials"]
            assert rows[1]["state"] == "CANCELLED" and rows[1]["note"] == bad.error
            assert rows[1]["version"] is None
            assert final.result["best_trial"] == 0 and final.result["version"] == 1
            assert final.result["labels"] == ["candidate"]  # promote never

            # cancelling a search cancels its running trial and its queued ones
            slow = {**SEARCH_BASE, "epochs": 1000, "patience": 1000, "fine_tune_epochs": 0}
            search = zoo.search(DIGITS_BASE, dataset, "stopped", {"dropout": [0.0, 0.1, 0.2]},
                                **slow)  # fmt: skip
            first = _trial_jobs(zoo, search)[0]
            for event in first.watch():
                if event.type == "epoch":
                    break
            assert search.refresh().state == "RUNNING"
            assert search.cancel().state == "CANCELLED"
            trials = [t.wait() for t in _trial_jobs(zoo, search)]
            assert [t.state for t in trials] == ["CANCELLED"] * 3
            assert [t.attempts for t in trials] == [1, 0, 0]
            assert search.refresh().worker == ""  # never claimed: it had nothing left to do
    finally:
        server.stop()


def test_the_best_trial_is_the_best_validated_one_that_succeeded() -> None:
    def row(i: int, state: str, final: float | None, test: float | None) -> Trial:
        return Trial(i, f"j{i}", {}, state, [], None, final, test, i + 1, 1.0)

    rows = [
        row(0, "SUCCEEDED", 0.8, 0.99),  # the best test accuracy does not choose
        row(1, "SUCCEEDED", 0.9, 0.7),
        row(2, "SUCCEEDED", 0.9, 0.8),  # a tie on validation: the better test accuracy
        row(3, "SUCCEEDED", 0.9, 0.8),  # a full tie: the earlier trial
        row(4, "CANCELLED", None, None),
        row(5, "FAILED", None, None),
    ]
    best = best_trial(rows)
    assert best is not None and best.trial == 2
    assert best_trial(rows[3:]) is rows[3]
    assert best_trial(rows[4:]) is None


def test_a_killed_workers_trial_resumes_and_the_search_ends(tmp_path: Path, digits) -> None:
    import os
    import signal
    import subprocess
    import sys

    folder, _ = digits
    server = _server(tmp_path, workers=0)  # the workers are processes of their own
    data = tmp_path / "data"
    zoo_exe = str(Path(sys.executable).with_name("zoo"))
    worker_cmd = [zoo_exe, "worker", "--db", str(data / "jobs.db"), "--data-dir", str(data),
                  "-r", str(tmp_path / "repo"), "--stale-after", "2"]  # fmt: skip
    try:
        with ZooClient(server.address, token=TOKEN) as zoo:
            dataset = zoo.upload_dataset(folder)
            params = {**SEARCH_BASE, "epochs": 60, "patience": 60, "fine_tune_epochs": 0}
            search = zoo.search(DIGITS_BASE, dataset, "resumed", {"dropout": [0.1]},
                                early_stopping="none", **params)  # fmt: skip
            (trial,) = _trial_jobs(zoo, search)
            first = subprocess.Popen(worker_cmd, start_new_session=True, stderr=subprocess.DEVNULL)
            seen = 0
            for event in trial.watch():
                seen += event.type == "epoch"
                if seen == 10:
                    break
            os.killpg(first.pid, signal.SIGKILL)  # the worker and its trial's process, at once
            first.wait()
            second = subprocess.Popen(worker_cmd, start_new_session=True, stderr=subprocess.DEVNULL)
            try:
                final = search.wait()
            finally:
                os.killpg(second.pid, signal.SIGTERM)
                second.wait(30)
            assert final.state == "SUCCEEDED", final.error
            trial.refresh()
            assert (trial.state, trial.attempts) == ("SUCCEEDED", 2)
            messages = [e.payload.get("message", "") for e in trial.watch()]
            assert any("resuming on" in m for m in messages)
            (row,) = final.result["trials"]
            # one entry per epoch across both attempts (an epoch reported twice counts once)
            assert len(row["val_accuracy"]) == 60 and row["version"] == trial.result["version"]
    finally:
        server.stop()


def test_a_tpe_search_runs_in_waves_on_two_workers(tmp_path: Path, digits) -> None:
    from datetime import datetime

    folder, _ = digits
    server = _server(tmp_path, workers=2)
    try:
        with ZooClient(server.address, token=TOKEN) as zoo:
            dataset = zoo.upload_dataset(folder)
            space = {"learning_rate": {"low": 1e-7, "high": 1e-2, "log": True}}
            search = zoo.search(DIGITS_BASE, dataset, "tuned", space, strategy="tpe", trials=3,
                                parallel=2, seed=1, early_stopping="none", promote="if_better",
                                **SEARCH_BASE)  # fmt: skip
            assert len(search.params["trials"]) == 2  # the first wave
            final = search.wait()
            assert final.state == "SUCCEEDED", final.error
            trials = _trial_jobs(zoo, final)
            assert [t.state for t in trials] == ["SUCCEEDED"] * 3, [t.error for t in trials]
            # the second wave was proposed once the first had ended
            first_wave_end = max(datetime.fromisoformat(t.finished_at) for t in trials[:2])
            assert datetime.fromisoformat(trials[2].created_at) > first_wave_end
            assert len({t.worker for t in trials[:2]}) == 2  # the first wave ran side by side
            proposed = final.params["trials"]
            assert [r["params"] for r in final.result["trials"]] == proposed
            assert [t.params["params"]["learning_rate"] for t in trials] == [
                p["learning_rate"] for p in proposed
            ]
            assert all(1e-7 <= p["learning_rate"] <= 1e-2 for p in proposed)
            best = max(final.result["trials"], key=lambda r: (r["final_val_accuracy"],
                                                              r["test_accuracy"], -r["trial"]))  # fmt: skip
            assert final.result["best_trial"] == best["trial"]
            assert final.result["labels"] == ["candidate", "stable"]  # no stable before
            assert zoo.labels("tuned").labels["stable"] == best["version"]
            messages = [e.payload.get("message", "") for e in final.watch()]
            assert "1 more trials queued; " in " ".join(messages)
            print("tpe trials:", [(p["learning_rate"], r["final_val_accuracy"])
                                  for p, r in zip(proposed, final.result["trials"], strict=True)])  # fmt: skip
    finally:
        server.stop()


def test_a_worker_settles_only_the_jobs_it_holds(tmp_path: Path) -> None:
    from zoo.jobs.worker import Worker, WorkerSettings

    settings = WorkerSettings(str(tmp_path / "jobs.db"), tmp_path / "data", tmp_path / "repo")
    worker = Worker(settings, name="w1")
    store = worker.store
    crashed, taken_over, let_go = (store.create(JobKind.EXPORT, {}) for _ in range(3))
    for _ in range(3):
        store.claim("w1")
    worker._settle(crashed.id, -9, "Killed", cancel_sent=False)
    assert store.get(crashed.id).state is JobState.FAILED
    assert store.get(crashed.id).error == (
        "the job process was killed by signal 9 (out of memory?): Killed"
    )
    time.sleep(0.2)
    assert store.claim("w2", stale_after_s=0.1).id == taken_over.id  # w1 looked dead
    worker._settle(taken_over.id, 0, "", cancel_sent=False)
    assert store.get(taken_over.id).state is JobState.RUNNING  # w2's now
    with store._session() as session:  # as extend_search leaves a search: held by no one
        store._row(session, let_go.id).worker = None
    worker._settle(let_go.id, 0, "", cancel_sent=False)
    assert store.get(let_go.id).state is JobState.RUNNING
