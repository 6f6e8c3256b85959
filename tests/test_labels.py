"""Version labels: stored atomically with their history, followed by the runtime, the servers
(gRPC and REST, through tritonclient), the SDK and the CLI, and Triton's version policy."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from versions import onnxruntime_logits, pixels, publish_versions

from zoo.errors import FailedPrecondition, InvalidArgument, NotFound
from zoo.jobs.promotion import decide, label_published, validate_promote
from zoo.jobs.training import FineTuneParams
from zoo.labels import validate_label
from zoo.repository import Repository


@pytest.fixture
def twin(tmp_path: Path) -> tuple[Repository, list[Path]]:
    repository = Repository(tmp_path / "repo")
    return repository, publish_versions(repository, "twin", 3)


def policy(repository: Repository, name: str) -> object:
    """The version policy of ``name``'s config.pbtxt, parsed with Triton's own schema."""
    from google.protobuf import text_format

    from protos import model_config_pb2 as mc

    config = text_format.Parse(
        (repository.root / name / "config.pbtxt").read_text(), mc.ModelConfig()
    )
    return config.version_policy


@pytest.mark.parametrize("label", ["stable", "candidate", "a", "canary-2", "ab_c", "x" * 32])
def test_valid_labels(label: str) -> None:
    assert validate_label(label) == label


@pytest.mark.parametrize(
    "label", ["", "3", "-1", "1abc", "Stable", "has space", "x" * 33, "é", "a/b", None, 3]
)
def test_invalid_labels_say_what_is_allowed(label: object) -> None:
    with pytest.raises(InvalidArgument, match="a-z 0-9 _ -, starting with a letter"):
        validate_label(label)


def test_default_is_newest_until_a_stable_label_exists(twin: tuple[Repository, list[Path]]) -> None:
    repository, _ = twin
    assert repository.get("twin").version == 3  # no labels: newest wins, as before
    assert repository.labels("twin").labels == {}
    assert policy(repository, "twin").latest.num_versions == 1

    labels = repository.set_label("twin", "stable", 1, by="alice", peer="ipv4:10.0.0.1:5")
    assert labels.labels == {"stable": 1}
    assert repository.get("twin").version == 1
    assert repository.get("twin", "stable").version == 1
    assert repository.get("twin", 2).version == 2  # a number still pins a version
    (change,) = labels.history
    assert (change.label, change.version, change.previous, change.action) == (
        "stable",
        1,
        None,
        "promote",
    )
    assert (change.by, change.peer) == ("alice", "ipv4:10.0.0.1:5")
    assert change.at.endswith("+00:00")
    # Triton serves stable alone, so its answer to an unversioned request is the same version
    assert list(policy(repository, "twin").specific.versions) == [1]
    # a version published later is not served by Triton by default either
    publish_versions(Repository(repository.root), "twin", 1)  # version 4
    assert repository.get("twin").version == 1
    assert list(policy(repository, "twin").specific.versions) == [1]

    with pytest.raises(NotFound, match=r"no version labelled 'canary' \(labels: stable -> 1\)"):
        repository.get("twin", "canary")
    with pytest.raises(NotFound, match="has no version 9"):
        repository.set_label("twin", "stable", 9)
    with pytest.raises(InvalidArgument, match="invalid label 'Bad'"):
        repository.set_label("twin", "Bad", 1)
    with pytest.raises(NotFound, match="model 'ghost' is not in"):
        repository.set_label("ghost", "stable", 1)


def test_promote_is_idempotent_and_rollback_walks_back(twin: tuple[Repository, list[Path]]) -> None:
    repository, _ = twin
    with pytest.raises(FailedPrecondition, match="no earlier version to roll back to"):
        repository.rollback("twin")
    repository.set_label("twin", "stable", 1)
    repository.set_label("twin", "stable", 1)  # the same again: no new history entry
    repository.set_label("twin", "stable", 2)
    repository.set_label("twin", "candidate", 3)
    labels = repository.set_label("twin", "stable", 3)
    assert len(labels.history) == 4
    assert repository.rollback("twin", by="bob").labels == {"stable": 2, "candidate": 3}
    labels = repository.rollback("twin")  # a second rollback goes back one more step
    assert labels.labels["stable"] == 1
    assert [(c.action, c.version, c.previous) for c in labels.history[-2:]] == [
        ("rollback", 2, 3),
        ("rollback", 1, 2),
    ]
    assert labels.history[-2].by == "bob"
    with pytest.raises(FailedPrecondition, match="label 'stable' has no earlier version"):
        repository.rollback("twin")
    with pytest.raises(FailedPrecondition, match="label 'candidate' has no earlier version"):
        repository.rollback("twin", "candidate")
    assert list(policy(repository, "twin").specific.versions) == [1]
    # what is on disk is what was returned, read by a fresh reader
    stored = json.loads((repository.root / "twin" / "labels.json").read_text())
    assert stored["labels"] == {"candidate": 3, "stable": 1}
    assert len(stored["history"]) == 6


def test_a_failed_rename_leaves_the_old_labels(
    twin: tuple[Repository, list[Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    repository, _ = twin
    repository.set_label("twin", "stable", 1)
    path = repository.root / "twin" / "labels.json"
    before = path.read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)  # zoo.files writes labels.json
    with pytest.raises(OSError, match="No space left"):
        repository.set_label("twin", "stable", 2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".labels.json.")]
    assert Repository(repository.root).get("twin").version == 1
    assert list(policy(repository, "twin").specific.versions) == [1]


def test_labels_written_by_another_process_are_seen(twin: tuple[Repository, list[Path]]) -> None:
    repository, _ = twin
    assert repository.get("twin").version == 3
    Repository(repository.root).set_label("twin", "stable", 2)  # e.g. another server replica
    assert repository.get("twin").version == 2
    Repository(repository.root).set_label("twin", "stable", 1)
    assert repository.get("twin").version == 1


def test_labels_changed_within_one_timestamp_tick_are_seen(
    twin: tuple[Repository, list[Path]],
) -> None:
    """The cache follows labels.json itself (its inode and size change with every write), not
    the model directory, whose time stamp can stay the same within one tick."""
    repository, _ = twin
    model_dir = repository.root / "twin"
    Repository(repository.root).set_label("twin", "stable", 2)
    assert repository.get("twin").version == 2
    before = model_dir.stat()
    Repository(repository.root).set_label("twin", "stable", 1)  # another replica
    os.utime(model_dir, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same tick
    assert model_dir.stat().st_size == before.st_size
    assert repository.get("twin").version == 1


def test_a_broken_labels_file_is_a_clear_error(twin: tuple[Repository, list[Path]]) -> None:
    repository, _ = twin
    (repository.root / "twin" / "labels.json").write_text("{not json")
    with pytest.raises(FailedPrecondition, match="not a valid labels file"):
        repository.get("twin")


def test_finetune_promote_parameter(twin: tuple[Repository, list[Path]]) -> None:
    assert FineTuneParams().promote == "never"
    assert FineTuneParams.from_dict({"promote": "always"}).promote == "always"
    assert FineTuneParams.from_dict({"promote": "if_better"}).promote == "if_better"
    with pytest.raises(
        InvalidArgument,
        match=r"promote must be one of \['never', 'always', 'if_better'\]; received 'sometimes'",
    ):
        validate_promote("sometimes")
    repository, _ = twin
    promotion = label_published(repository, "twin", 2, "never", "job-1")
    assert promotion.labels == ("candidate",) and not promotion.promoted
    assert promotion.reason == "promote is never: version 2 is the candidate; no version is stable"
    assert repository.get("twin").version == 3  # no stable: still the newest
    promotion = label_published(repository, "twin", 3, "always", "job-2")
    assert promotion.labels == ("candidate", "stable")
    labels = repository.labels("twin")
    assert labels.labels == {"candidate": 3, "stable": 3}
    assert {c.by for c in labels.history} == {"job job-1", "job job-2"}


def test_if_better_compares_test_accuracy_with_stable() -> None:
    measured: list[int] = []

    def stable_accuracy(value: float | None) -> Callable[[], float | None]:
        def measure() -> float | None:
            measured.append(1)
            return value

        return measure

    assert decide("if_better", 4, None, 0.5, stable_accuracy(0.9)) == (
        True,
        "no version was stable: version 4 is now",
    )
    promote, why = decide("if_better", 4, 2, 0.91, stable_accuracy(0.9))
    assert promote and why.startswith("test accuracy 0.9100 is above stable version 2's 0.9000")
    promote, why = decide("if_better", 4, 2, 0.9, stable_accuracy(0.9))
    assert not promote and "is not above stable version 2's 0.9000" in why
    promote, why = decide("if_better", 4, 2, None, stable_accuracy(0.9))
    assert not promote and why == "version 4 has no test report; stable stays at version 2"
    promote, why = decide("if_better", 4, 2, 0.9, stable_accuracy(None))
    assert not promote and "cannot be tested on this job's test images" in why
    assert len(measured) == 3  # only when there is something to compare
    assert decide("always", 4, 2, None, stable_accuracy(1.0))[0]
    assert decide("never", 4, 2, 1.0, stable_accuracy(0.0)) == (
        False,
        "promote is never: version 4 is the candidate; stable stays at version 2",
    )


def test_tiny_versions_answer_differently(twin: tuple[Repository, list[Path]]) -> None:
    _, files = twin
    image = pixels()
    first, second = (onnxruntime_logits(f, image) for f in files[:2])
    assert np.abs(first - second).max() > 1.0
    assert os.path.getsize(files[0]) < 10_000


# -- through a real server: tritonclient (gRPC and REST), the SDK, /v1 and the CLI ----------


@pytest.fixture  # one per test: each test starts from two unlabelled versions, in any order
def labelled_server(tmp_path_factory: pytest.TempPathFactory):
    from conftest import TOKEN
    from serving import start_server

    root = tmp_path_factory.mktemp("labelled")
    files = publish_versions(Repository(root / "repo"), "twin", 2)
    workdir = tmp_path_factory.mktemp("labelled-server")

    def start():
        return start_server(root / "repo", workdir, "--token", TOKEN)

    running = start()
    state = {"server": running, "files": files, "start": start}
    yield state
    assert state["server"].stop() == 0, state["server"].log.read_text()[-3000:]


def grpc_logits(address: str, version: str = "") -> np.ndarray:
    import tritonclient.grpc as tc

    with tc.InferenceServerClient(address) as triton:
        image = tc.InferInput("image", [2, 8, 8, 3], "UINT8")
        image.set_data_from_numpy(pixels())
        return triton.infer("twin", [image], model_version=version).as_numpy("logits")


def http_logits(url: str, version: str = "") -> np.ndarray:
    import tritonclient.http as th

    triton = th.InferenceServerClient(url.removeprefix("http://"))
    try:
        image = th.InferInput("image", [2, 8, 8, 3], "UINT8")
        image.set_data_from_numpy(pixels(), binary_data=True)
        return triton.infer("twin", [image], model_version=version).as_numpy("logits")
    finally:
        triton.close()


def test_labels_through_the_server(labelled_server) -> None:
    import httpx
    import tritonclient.grpc as tc
    from conftest import TOKEN
    from tritonclient.utils import InferenceServerException

    from client import ZooClient
    from client import errors as client_errors

    server, files = labelled_server["server"], labelled_server["files"]
    v1, v2 = (onnxruntime_logits(f, pixels()) for f in files)

    def same(answer: np.ndarray, expected: np.ndarray) -> None:
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-5)

    # no labels: the newest answers, as before labels existed
    same(grpc_logits(server.address), v2)
    same(http_logits(server.http_url), v2)

    # promoting needs the token, over gRPC and /v1
    with ZooClient(server.address) as anonymous:
        with pytest.raises(client_errors.Unauthenticated, match="PromoteVersion needs"):
            anonymous.promote("twin", 1)
        with pytest.raises(client_errors.Unauthenticated):
            anonymous.rollback("twin")
        assert anonymous.labels("twin").labels == {}  # reading needs none
    with httpx.Client(base_url=server.http_url, timeout=60) as http:
        assert http.post("/v1/models/twin/promote", json={"version": 1}).status_code == 401

    with ZooClient(server.address, token=TOKEN) as zoo:
        state = zoo.promote("twin", 1, by="alice")
        assert (state.labels, state.default_version) == ({"stable": 1}, 1)
        (change,) = state.history
        assert (change.by, change.action, change.previous) == ("alice", "promote", None)
        assert change.peer.startswith(("ipv4:127.0.0.1:", "ipv6:"))
        # the next request, without a version or with "stable", is served by version 1
        same(grpc_logits(server.address), v1)
        same(grpc_logits(server.address, "stable"), v1)
        same(http_logits(server.http_url), v1)
        same(http_logits(server.http_url, "stable"), v1)
        same(grpc_logits(server.address, "2"), v2)  # a number still pins a version
        same(zoo.infer("twin", pixels(), version="stable")["logits"], v1)
        with tc.InferenceServerClient(server.address) as triton:
            assert triton.is_model_ready("twin", "stable")
            assert triton.get_model_metadata("twin", "stable").versions == ["1", "2"]
            config = triton.get_model_config("twin").config
            assert list(config.version_policy.specific.versions) == [1]
        assert zoo.model("twin").labels == {"stable": 1}

        # unknown labels: NOT_FOUND over gRPC, 404 over REST, with what exists
        with pytest.raises(InferenceServerException) as info:
            grpc_logits(server.address, "canary")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert "no version labelled 'canary' (labels: stable -> 1)" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            http_logits(server.http_url, "canary")
        assert info.value.status() == "404"
        assert "no version labelled 'canary'" in info.value.message()
        with httpx.Client(base_url=server.http_url, timeout=60) as http:
            answer = http.get("/v2/models/twin/versions/canary/ready")
            assert answer.status_code == 404 and "canary" in answer.json()["error"]
            answer = http.get("/v2/models/twin/versions/Bad!/ready")
            assert answer.status_code == 400 and "or a label" in answer.json()["error"]

        # /v1: promote 2 as candidate, then stable; rollback back to 1
        with httpx.Client(base_url=server.http_url, timeout=60) as http:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            answer = http.post(
                "/v1/models/twin/promote", json={"version": 2, "label": "candidate"}, headers=auth
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["labels"] == {"candidate": 2, "stable": 1}
            answer = http.post("/v1/models/twin/promote", json={"version": 2}, headers=auth)
            assert answer.json()["default_version"] == 2
            assert http.get("/v1/models/twin").json()["labels"] == {"candidate": 2, "stable": 2}
            bad = http.post("/v1/models/twin/promote", json={"version": "2"}, headers=auth)
            assert bad.status_code == 400 and "version must be a JSON int" in bad.text
        same(grpc_logits(server.address), v2)
        with httpx.Client(base_url=server.http_url, timeout=60) as http:
            answer = http.post("/v1/models/twin/rollback", headers=auth)  # no body: stable
            assert answer.status_code == 200, answer.text
            change = answer.json()["history"][-1]
            assert (change["action"], change["version"], change["previous"]) == ("rollback", 1, 2)
            assert change["peer"].startswith("127.0.0.1:")
        state = zoo.labels("twin")
        assert (state.labels["stable"], state.default_version) == (1, 1)
        same(grpc_logits(server.address), v1)
        same(http_logits(server.http_url), v1)
        with pytest.raises(client_errors.FailedPrecondition, match="no earlier version"):
            zoo.rollback("twin")
        with pytest.raises(client_errors.NotFound, match="has no version 7"):
            zoo.promote("twin", 7)

    # labels survive a restart: stable is still version 1
    assert server.stop() == 0
    server = labelled_server["server"] = labelled_server["start"]()
    same(grpc_logits(server.address), v1)
    with ZooClient(server.address) as zoo:
        assert zoo.labels("twin").labels == {"candidate": 2, "stable": 1}
        assert len(zoo.labels("twin").history) == 4


def test_labels_through_the_cli(labelled_server, tmp_path: Path) -> None:
    from conftest import TOKEN, run_zoo

    server = labelled_server["server"]
    done = run_zoo("models", "promote", "twin", "2", "--label", "canary", "--server",
                   server.address, "--token", TOKEN, "--by", "carol", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["labels"]["canary"] == 2 and state["history"][-1]["by"] == "carol"
    done = run_zoo("models", "labels", "twin", "--server", server.address)
    assert done.returncode == 0, done.stderr
    assert "canary -> 2" in done.stdout and "carol" in done.stdout
    done = run_zoo("models", "--server", server.address, "--json")
    assert done.returncode == 0, done.stderr
    (served,) = json.loads(done.stdout)
    # The module's other tests move labels too: compare with this test's own promote answer.
    assert served["labels"] == state["labels"] and served["labels"]["canary"] == 2
    done = run_zoo("models", "rollback", "twin", "--label", "canary", "--server", server.address)
    assert done.returncode == 1
    assert "zoo: error: Unauthenticated" in done.stderr and "Traceback" not in done.stderr
    done = run_zoo("models", "rollback", "twin", "--label", "canary", "--server",
                   server.address, "--token", TOKEN)  # fmt: skip
    assert done.returncode == 1 and "no earlier version to roll back to" in done.stderr


def test_labels_through_the_async_sdk_and_classify(labelled_server) -> None:
    import asyncio
    import io

    from conftest import TOKEN
    from PIL import Image

    from client import AsyncZooClient, ZooClient
    from client import errors as client_errors

    server = labelled_server["server"]

    async def scenario() -> None:
        async with AsyncZooClient(server.address, token=TOKEN) as zoo:
            state = await zoo.promote("twin", 2, label="beta", by="dave")
            assert state.labels["beta"] == 2 and state.history[-1].by == "dave"
            state = await zoo.promote("twin", 1, label="beta")
            assert (await zoo.labels("twin")).labels["beta"] == 1
            state = await zoo.rollback("twin", label="beta")
            assert state.labels["beta"] == 2 and state.history[-1].action == "rollback"
            with pytest.raises(client_errors.InvalidArgument, match="invalid label 'Beta'"):
                await zoo.promote("twin", 1, label="Beta")

    asyncio.run(scenario())
    buffer = io.BytesIO()
    Image.fromarray(pixels(1)[0]).save(buffer, format="PNG")
    with ZooClient(server.address, token=TOKEN) as zoo:
        assert zoo.promote("twin", 1).stable == 1
        by_label = zoo.classify(buffer.getvalue(), "twin", version="stable", top_k=4)
        by_number = zoo.classify(buffer.getvalue(), "twin", version=1, top_k=4)
        other = zoo.classify(buffer.getvalue(), "twin", version=2, top_k=4)
        assert not isinstance(by_label, list) and not isinstance(by_number, list)
        assert by_label.version == 1 and by_label.predictions == by_number.predictions
        assert other.version == 2 and other.predictions != by_label.predictions
        with pytest.raises(client_errors.NotFound, match="no version labelled 'gamma'"):
            zoo.classify(buffer.getvalue(), "twin", version="gamma", top_k=4)


def ready_versions(url: str, name: str) -> list[int]:
    import httpx

    index = httpx.post(f"{url}/v2/repository/index", json={}, timeout=30).json()
    return sorted(int(e["version"]) for e in index if e["name"] == name and e["state"] == "READY")


def label_change_counts(metrics_port: int) -> dict[tuple[str, str, str], float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read()
    return {
        (s.labels["model"], s.labels["label"], s.labels["action"]): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == "zoo_label_changes_total"
    }


def test_promote_loads_the_new_stable_before_answering(tmp_path: Path) -> None:
    """On a loaded model, promote and rollback of stable load the new default version before
    they answer; a version that cannot load leaves stable where it was, with a clear error.
    Label changes are counted for Prometheus, and a label at a version deleted by hand is a
    NOT_FOUND naming both."""
    import shutil

    import httpx
    from conftest import TOKEN
    from serving import start_server
    from tritonclient.utils import InferenceServerException

    from client import ZooClient
    from client import errors as client_errors

    repository = Repository(tmp_path / "repo")
    files = publish_versions(repository, "twin", 3)
    publish_versions(repository, "idle", 2)
    server = start_server(repository.root, tmp_path, "--token", TOKEN)
    try:
        url = server.http_url
        assert ready_versions(url, "twin") == []
        np.testing.assert_allclose(
            grpc_logits(server.address),
            onnxruntime_logits(files[2], pixels()),
            rtol=1e-5,
            atol=1e-5,
        )
        assert ready_versions(url, "twin") == [3]  # the newest, loaded by the request
        with ZooClient(server.address, token=TOKEN) as zoo:
            # loaded before the answer: version 1 is READY with no request made for it, and
            # version 3, now neither the default nor labelled, is let go
            assert zoo.promote("twin", 1).default_version == 1
            assert ready_versions(url, "twin") == [1]
            zoo.promote("twin", 2, label="candidate")  # not stable: nothing is loaded for it
            assert ready_versions(url, "twin") == [1]
            zoo.promote("twin", 3)
            assert ready_versions(url, "twin") == [3]
            assert zoo.rollback("twin").labels["stable"] == 1  # rollback loads its target too
            assert ready_versions(url, "twin") == [1]
            # a model nobody asked for stays unloaded
            zoo.promote("idle", 1)
            assert ready_versions(url, "idle") == []

            # a stable version that cannot load: the label stays, the error says why
            (repository.root / "twin" / "3" / "model.onnx").write_bytes(b"not an ONNX file")
            with pytest.raises(client_errors.FailedPrecondition) as info:
                zoo.promote("twin", 3)
            message = str(info.value)
            assert "model 'twin' version 3 failed to load" in message
            assert message.endswith("label 'stable' stays at version 1")
            assert zoo.labels("twin").labels == {"candidate": 2, "stable": 1}
            with httpx.Client(base_url=url, timeout=60) as http:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                answer = http.post("/v1/models/twin/promote", json={"version": 3}, headers=auth)
                assert answer.status_code == 400, answer.text
                assert "stays at version 1" in answer.json()["error"]
            np.testing.assert_allclose(
                grpc_logits(server.address),
                onnxruntime_logits(files[0], pixels()),
                rtol=1e-5,
                atol=1e-5,
            )

        # every change counted by model, label and action (refusals are not changes)
        assert label_change_counts(server.metrics_port) == {
            ("idle", "stable", "promote"): 1,
            ("twin", "candidate", "promote"): 1,
            ("twin", "stable", "promote"): 2,
            ("twin", "stable", "rollback"): 1,
        }

        # the stable version deleted by hand: NOT_FOUND naming the label and the version
        shutil.rmtree(repository.root / "twin" / "1")
        with pytest.raises(InferenceServerException) as error:
            grpc_logits(server.address)
        assert error.value.status() == "StatusCode.NOT_FOUND"
        assert (
            "label 'stable' points at version 1, which is not in the repository (versions: 2, 3)"
            in error.value.message()
        )
        with pytest.raises(InferenceServerException) as error:
            grpc_logits(server.address, "stable")
        assert error.value.status() == "StatusCode.NOT_FOUND"
        assert "label 'stable' points at version 1" in error.value.message()
        answer = httpx.get(f"{url}/v2/models/twin", timeout=30)
        assert answer.status_code == 404 and "points at version 1" in answer.json()["error"]
        # the console's model page still gets the model, its versions and the reason
        answer = httpx.get(f"{url}/v1/models/twin", timeout=30)
        assert answer.status_code == 200, answer.text
        shown = answer.json()
        assert shown["versions"] == [2, 3]
        assert shown["evaluation"] is None and "points at version 1" in shown["error"]
        answer = httpx.get(f"{url}/v1/models/twin?version=1", timeout=30)
        assert answer.status_code == 404  # a version asked for by number is still not there
        np.testing.assert_allclose(  # numbers still work
            grpc_logits(server.address, "2"),
            onnxruntime_logits(files[1], pixels()),
            rtol=1e-5,
            atol=1e-5,
        )
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]
