"""The SDK's own behaviour: which calls it retries, and the async client's datasets and jobs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from client import AsyncZooClient, ZooClient, errors
from client._wire import service_config
from protos import grpc_service_pb2, zoo_service_pb2
from protos import zoo_service_pb2 as zpb
from protos import zoo_service_pb2_grpc as zpb_grpc
from server.interceptors import MUTATING_METHODS

# Read-only unary calls: repeating one after UNAVAILABLE cannot change anything on the server.
RETRIED = {
    "/inference.GRPCInferenceService/" + m
    for m in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
              "ModelConfig", "ModelStatistics", "RepositoryIndex", "ModelInfer")
} | {
    "/zoo.v1.ModelZoo/ListModels", "/zoo.v1.ModelZoo/GetModel", "/zoo.v1.ModelZoo/Classify",
    "/zoo.v1.ModelZoo/ListLabels",
    "/zoo.v1.Datasets/ListDatasets", "/zoo.v1.Datasets/GetDataset",
    "/zoo.v1.Jobs/GetJob", "/zoo.v1.Jobs/ListJobs", "/zoo.v1.Jobs/GetTrainingLogs",
}  # fmt: skip
# Streams are not retried by gRPC's policy once a message has passed; WatchJob resumes itself.
STREAMS = {
    "/inference.GRPCInferenceService/ModelStreamInfer",
    "/zoo.v1.Datasets/UploadDataset",
    "/zoo.v1.Jobs/WatchJob",
}


def retried_methods(retries: int = 3) -> set[str]:
    config = json.loads(service_config(retries))
    (policy,) = config["methodConfig"]
    assert policy["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["retryPolicy"]["maxAttempts"] == retries + 1
    return {f"/{n['service']}/{n['method']}" for n in policy["name"]}


def all_methods() -> set[str]:
    return {
        f"/{service.full_name}/{method.name}"
        for module in (grpc_service_pb2, zoo_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_retry_policy_covers_exactly_the_read_only_calls() -> None:
    assert retried_methods() == RETRIED
    assert not retried_methods() & MUTATING_METHODS
    # every method is accounted for: retried, mutating (never retried) or a stream
    assert all_methods() == RETRIED | MUTATING_METHODS | STREAMS


class Flaky(zpb_grpc.ModelZooServicer, zpb_grpc.JobsServicer):
    """Answers UNAVAILABLE to the first ``failures`` calls of each method, counting calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}

    def _count(self, name: str, context: grpc.ServicerContext) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.calls[name] <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    def GetModel(self, request, context):
        self._count("GetModel", context)
        return zpb.Model(name=request.name, num_classes=3)

    def CreateFineTuneJob(self, request, context):
        self._count("CreateFineTuneJob", context)
        return zpb.Job(id="job-1", kind="finetune", state="QUEUED")


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, str]]:
    servicer = Flaky(failures=1)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    zpb_grpc.add_ModelZooServicer_to_server(servicer, server)
    zpb_grpc.add_JobsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_reads_are_retried_and_job_creation_is_not(flaky: tuple[Flaky, str]) -> None:
    servicer, address = flaky
    with ZooClient(address, timeout=10) as zoo:
        assert zoo.model("resnet50").name == "resnet50"
        assert servicer.calls["GetModel"] == 2  # one UNAVAILABLE, then the retry answered
        with pytest.raises(errors.Unavailable, match="restarting"):
            zoo.finetune("MobileNetV2", "dataset-1", "digits", epochs=1)
        assert servicer.calls["CreateFineTuneJob"] == 1  # a retry could create two jobs
    servicer.failures = 3  # the next GetModel fails too
    with ZooClient(address, timeout=10, retries=0) as zoo:
        with pytest.raises(errors.Unavailable):
            zoo.model("resnet50")  # retries=0 turns retrying off
        assert servicer.calls["GetModel"] == 3


@pytest.fixture
def idle_job_server(tmp_path: Path):
    """A real server without job workers: jobs stay QUEUED until cancelled."""
    from serving import start_server

    (tmp_path / "repo").mkdir()
    running = start_server(
        tmp_path / "repo",
        tmp_path,
        env={"ZOO_DATA_DIR": str(tmp_path / "data"), "ZOO_WORKERS": "0"},
    )
    yield running
    running.stop()


def small_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def test_async_client_datasets_and_jobs(idle_job_server, tmp_path: Path) -> None:
    folder = small_dataset(tmp_path / "pets")

    async def session() -> None:
        async with AsyncZooClient(idle_job_server.address) as zoo:
            dataset = await zoo.upload_dataset(folder)
            assert (dataset.classes, dataset.counts, dataset.images) == (
                ("cats", "dogs"), (3, 3), 6)  # fmt: skip
            assert [d.id for d in await zoo.datasets()] == [dataset.id]
            job = await zoo.finetune("MobileNetV2", dataset, "pets", epochs=1, image_size=32)
            assert (job.kind, job.state, job.params["params"]["epochs"]) == (
                "finetune",
                "QUEUED",
                1,
            )
            with pytest.raises(TypeError, match="came from AsyncZooClient"):
                job.refresh()
            assert [j.id for j in await zoo.jobs(state="QUEUED")] == [job.id]
            assert (await zoo.cancel_job(job.id)).state == "CANCELLED"
            events = [e async for e in zoo.watch_job(job.id)]
            assert [e.payload.get("state") for e in events if e.type == "state"] == [
                "QUEUED", "CANCELLED"]  # fmt: skip
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert (await zoo.wait_job(job.id)).state == "CANCELLED"
            with pytest.raises(errors.NotFound):
                await zoo.job("no-such-job")
            await zoo.delete_dataset(dataset.id)
            assert await zoo.datasets() == []

    asyncio.run(session())


def test_export_jobs_default_to_uint8_and_bound_versions(idle_job_server) -> None:
    with ZooClient(idle_job_server.address) as zoo:
        job = zoo.export("MobileNetV2", weights="none", input="")  # the proto's documented default
        assert (job.state, job.params["input"]) == ("QUEUED", "uint8")
        with pytest.raises(errors.InvalidArgument, match="up to 9007199254740991; received 9223"):
            zoo.export("MobileNetV2", weights="none", version=2**63 - 1)
        assert [j.id for j in zoo.jobs()] == [job.id]  # the refused request created nothing


BAD_PARAMS = [
        ({"epochs": 2**31 - 1}, "epochs must be in 1..1000; received 2147483647"),
        ({"learning_rate": float("inf")}, "learning_rate must be in (0, 10]; received inf"),
        ({"learning_rate": 1e308}, "learning_rate must be in (0, 10]"),
        ({"fine_tune_learning_rate": float("nan")}, "fine_tune_learning_rate must be in (0, 10]"),
        ({"image_size": 100_000}, "image_size must be in 32..1024; received 100000"),
        ({"unfreeze": float("inf")}, "unfreeze must be in [0, 10000]; received inf"),
        ({"patience": 2**31 - 1}, "patience must be in 1..1000"),
        ({"seed": -1}, "seed must be in 0..2147483647; received -1"),
        ({"weights": "none", "base_kwargs": {"evil": 1.0}},
         "MobileNetV2 takes no option 'evil'; its options are: alpha"),
        ({"weights": "none", "base_kwargs": {"include_top": 1.0}}, "takes no option 'include_top'"),
        ({"weights": "none", "base_kwargs": {"alpha": float("nan")}},
         "alpha must be a number in [0.1, 4]; received nan"),
        ({"weights": "none", "base_kwargs": {"alpha": 1e300}}, "alpha must be a number in [0.1, 4]"),
        ({"weights": "none", "base_kwargs": {f"k{i}": 1.0 for i in range(10_000)}},
         "takes no option 'k0', 'k1', 'k10', 'k100', 'k1000' and 9995 more"),
        ({"base_kwargs": {"alpha": 0.35}}, "ImageNet weights are for MobileNetV2's default"),
]  # fmt: skip


def test_bad_finetune_params_create_nothing(idle_job_server, tmp_path: Path) -> None:
    with ZooClient(idle_job_server.address) as zoo:
        dataset = zoo.upload_dataset(small_dataset(tmp_path / "pets"))
        for params, message in BAD_PARAMS:
            with pytest.raises(errors.InvalidArgument) as info:
                zoo.finetune("MobileNetV2", dataset, "pets", **params)
            assert message in str(info.value), params
            assert len(str(info.value)) < 400
        assert zoo.jobs() == []
        job = zoo.finetune(
            "MobileNetV2", dataset, "pets", weights="none", base_kwargs={"alpha": 0.35}
        )
        assert job.params["params"]["base_kwargs"] == {"alpha": 0.35}


def stalled_upload(channel: grpc.Channel, release: threading.Event):
    """An UploadDataset that sends one 4 KiB chunk and then nothing until ``release``."""

    def messages():
        yield zpb.UploadDatasetRequest(chunk=b"\0" * 4096, filename="slow.zip")
        release.wait(60)

    upload = channel.stream_unary(
        "/zoo.v1.Datasets/UploadDataset",
        request_serializer=zpb.UploadDatasetRequest.SerializeToString,
        response_deserializer=zpb.Dataset.FromString,
    )
    return upload.future(messages(), timeout=60)


def test_stalled_uploads_are_bounded_and_starve_nothing(
    served_repository: Path, tmp_path: Path
) -> None:
    from serving import start_server

    running = start_server(
        served_repository, tmp_path,
        env={"ZOO_DATA_DIR": str(tmp_path / "data"), "ZOO_WORKERS": "0", "ZOO_MAX_UPLOADS": "8",
             "ZOO_UPLOAD_IDLE_S": "3"},
    )  # fmt: skip
    release = threading.Event()
    try:
        with grpc.insecure_channel(running.address) as channel:
            stalled = [stalled_upload(channel, release) for _ in range(8)]
            time.sleep(0.5)  # all eight are in the server, each waiting for its next chunk
            with ZooClient(running.address, timeout=20) as zoo:
                # the ninth is refused at once; inference, Classify and loads still answer
                with pytest.raises(errors.ResourceExhausted, match="8 dataset uploads"):
                    zoo.upload_dataset(small_dataset(tmp_path / "pets"))
                x = np.zeros((1, 64, 64, 3), np.uint8)
                assert zoo.infer("mobilenetv2", x)["logits"].shape == (1, 1000)
                assert zoo.classify(x[0], "mobilenetv2", top_k=1).top.index >= 0
                zoo.load("mobilenetv2")
            # each stalled upload is dropped after upload_idle_s, with a status saying why
            for future in stalled:
                with pytest.raises(grpc.RpcError) as info:
                    future.result(timeout=30)
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert "sent nothing for 3 s" in info.value.details()
            with ZooClient(running.address) as zoo:  # and their slots are free again
                assert zoo.upload_dataset(small_dataset(tmp_path / "cats")).images == 6
    finally:
        release.set()
        running.stop()


def test_shutdown_ends_uploads_in_progress(served_repository: Path, tmp_path: Path) -> None:
    from serving import start_server

    running = start_server(
        served_repository, tmp_path,
        env={"ZOO_DATA_DIR": str(tmp_path / "data"), "ZOO_WORKERS": "0",
             "ZOO_GRACE_SECONDS": "120"},
    )  # fmt: skip
    release = threading.Event()
    try:
        with grpc.insecure_channel(running.address) as channel:
            upload = stalled_upload(channel, release)
            time.sleep(0.5)
            assert running.stop(timeout=100) == 0
            with pytest.raises(grpc.RpcError) as info:
                upload.result(timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in info.value.details()  # ended, not left to the 120 s grace
        assert "ended 1 dataset upload(s) in progress" in running.log.read_text()
    finally:
        release.set()


def test_jobs_refuse_an_output_that_serves_another_model(
    served_repository: Path, tmp_path: Path, keras_home: Path
) -> None:
    import shutil

    from serving import start_server

    repository = tmp_path / "repo"
    shutil.copytree(served_repository / "mobilenetv2", repository / "mobilenetv2")
    manifest_path = repository / "mobilenetv2" / "1" / "zoo.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["source"]["catalog_model"] = "MobileNetV2"  # as `zoo export MobileNetV2` writes
    manifest_path.write_text(json.dumps(manifest))
    shutil.copytree(repository / "mobilenetv2", repository / "pets")  # an export named pets
    weights = keras_home / "models"
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "mine.weights.h5").write_bytes(b"not really weights")
    running = start_server(
        repository, tmp_path, env={"ZOO_DATA_DIR": str(tmp_path / "data"), "ZOO_WORKERS": "0"}
    )
    try:
        with ZooClient(running.address) as zoo:
            # 'mobilenetv2' serves MobileNetV2: ResNet50 or a fine-tune must not land in it
            with pytest.raises(errors.AlreadyExists, match="'mobilenetv2' serves MobileNetV2"):
                zoo.export("ResNet50", weights="none", output_model="mobilenetv2")
            dataset = zoo.upload_dataset(small_dataset(tmp_path / "pets"))
            with pytest.raises(errors.AlreadyExists, match="a job making a fine-tune of"):
                zoo.finetune("MobileNetV2", dataset, "pets", weights="none")
            assert zoo.jobs() == []
            # the same model, or an explicit yes, is fine
            assert zoo.export("MobileNetV2", weights="none").state == "QUEUED"
            forced = zoo.export(
                "ResNet50", weights="none", output_model="mobilenetv2", allow_other_source=True
            )
            assert forced.params["model_name"] == "mobilenetv2"
            # weights by path: only inside the weights directories, and a missing file reads
            # like a forbidden one
            inside = weights / "mine.weights.h5"
            assert zoo.export("MobileNetV2", weights=str(inside)).params["weights"] == str(
                inside.resolve()
            )
            messages = set()
            for path in ("/etc/passwd", str(weights / "missing.h5"), "/nonexistent/x.h5"):
                with pytest.raises(errors.InvalidArgument) as info:
                    zoo.export("MobileNetV2", weights=path)
                messages.add(str(info.value).replace(path, "PATH"))
            assert len(messages) == 1, messages
    finally:
        running.stop()
