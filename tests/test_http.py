"""HTTP beside gRPC, against real `zoo serve` processes: the v2 protocol through the unmodified
``tritonclient.http``, the JSON API through httpx, and bad requests that get a clear 4xx while
the server keeps serving."""

from __future__ import annotations

import io
import json
import signal
import zipfile
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as th
from conftest import TOKEN
from tritonclient.utils import InferenceServerException

from client import ZooClient
from zoo.export.verify import PHOTOS
from zoo.serving.images import decode_image

PHOTO_DIR = Path(__file__).resolve().parent.parent / "zoo" / "data" / "photos"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def reference(repository: Path, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repository / model / "1" / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": x}), strict=True))


@pytest.fixture
def triton(server) -> th.InferenceServerClient:
    client = th.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    yield client
    client.close()


@pytest.fixture
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.http_url, timeout=60) as client:
        yield client


# -- the v2 protocol through tritonclient.http -------------------------------------------


def test_health_and_metadata(triton: th.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "keras-zoo" and "binary_tensor_data" in meta["extensions"]
    assert triton.is_model_ready("mobilenetv2") and triton.is_model_ready("mobilenetv2", "1")
    assert not triton.is_model_ready("no-such-model")
    assert triton.get_model_metadata("mobilenetv2") == {
        "name": "mobilenetv2",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, 64, 64, 3]}],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, 1000]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]},
        ],
    }
    assert triton.get_model_metadata("mobilenetv2", "1")["versions"] == ["1"]
    config = triton.get_model_config("mobilenetv2")
    assert (config["name"], config["max_batch_size"], config["platform"]) == (
        "mobilenetv2", 32, "onnxruntime_onnx")  # fmt: skip
    assert config["input"][0]["dims"] == [64, 64, 3]
    assert config["input"][0]["data_type"] == "TYPE_UINT8"
    assert config["output"][1] == {
        "name": "probabilities",
        "data_type": "TYPE_FP32",
        "dims": [1000],
    }


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("asked", [None, ["probabilities"], ["probabilities", "logits"]])
def test_infer_equals_onnxruntime(
    triton: th.InferenceServerClient, served_repository: Path, binary: bool, asked
) -> None:
    x = np.random.default_rng(3).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    image = th.InferInput("image", list(x.shape), "UINT8")
    image.set_data_from_numpy(x, binary_data=binary)
    outputs = [th.InferRequestedOutput(n, binary_data=binary) for n in asked] if asked else None
    result = triton.infer("mobilenetv2", [image], outputs=outputs, request_id="r-7")
    expected = reference(served_repository, "mobilenetv2", x)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == (asked or ["logits", "probabilities"])
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "mobilenetv2", "1", "r-7")  # fmt: skip
    for name in asked or expected:
        got = result.as_numpy(name)
        assert got.dtype == np.float32 and got.shape == (3, 1000)
        np.testing.assert_array_equal(got, expected[name])
        # without outputs named, tritonclient asks for all in binary (binary_data_output)
        entry = next(o for o in response["outputs"] if o["name"] == name)
        assert ("parameters" in entry) == (binary or asked is None)
    # logits and probabilities differ, so a swapped name would fail the comparison above
    assert not np.allclose(expected["logits"], expected["probabilities"], atol=1e-3)


def test_infer_float_model_and_versions(
    triton: th.InferenceServerClient, served_repository: Path
) -> None:
    x = np.random.default_rng(4).normal(size=(2, 64, 64, 3)).astype(np.float32)
    image = th.InferInput("image", list(x.shape), "FP32")
    image.set_data_from_numpy(x, binary_data=False)  # floats through JSON and back
    result = triton.infer("tiny-f32", [image], model_version="1")
    np.testing.assert_array_equal(
        result.as_numpy("logits"), reference(served_repository, "tiny-f32", x)["logits"]
    )


def test_classification_extension(
    triton: th.InferenceServerClient, served_repository: Path
) -> None:
    from zoo.catalog.labels import imagenet_labels

    x = np.random.default_rng(8).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    expected = reference(served_repository, "mobilenetv2", x)["probabilities"]
    image = th.InferInput("image", list(x.shape), "UINT8")
    image.set_data_from_numpy(x)
    for binary in (True, False):
        asked = [th.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)]
        top = triton.infer("mobilenetv2", [image], outputs=asked).as_numpy("probabilities")
        assert top.shape == (2, 3)
        for row, probabilities in zip(top, expected, strict=True):
            entries = [(e.decode() if isinstance(e, bytes) else e).split(":", 2) for e in row]
            indices = [int(i) for _, i, _ in entries]
            assert indices == list(np.argsort(-probabilities, kind="stable")[:3])
            assert [label for _, _, label in entries] == [imagenet_labels()[i] for i in indices]
            np.testing.assert_allclose(
                [float(v) for v, _, _ in entries], probabilities[indices], atol=1e-6
            )
    with pytest.raises(InferenceServerException) as info:
        triton.infer("mobilenetv2", [image],
                     outputs=[th.InferRequestedOutput("probabilities", class_count=1001)])  # fmt: skip
    assert "classification needs an int64 class count from 1 to 1000" in info.value.message()
    assert info.value.status() == "400"


def test_statistics_and_repository(triton: th.InferenceServerClient) -> None:
    x = np.zeros((1, 64, 64, 3), np.uint8)
    image = th.InferInput("image", list(x.shape), "UINT8")
    image.set_data_from_numpy(x)
    before = triton.get_inference_statistics("mobilenetv2")["model_stats"][0]
    triton.infer("mobilenetv2", [image])
    after = triton.get_inference_statistics("mobilenetv2", "1")["model_stats"][0]
    assert (after["name"], after["version"]) == ("mobilenetv2", "1")
    assert after["inference_count"] == before["inference_count"] + 1
    assert (
        after["inference_stats"]["success"]["count"]
        == before["inference_stats"]["success"]["count"] + 1
    )
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    everything = triton.get_inference_statistics()["model_stats"]
    assert "mobilenetv2" in {s["name"] for s in everything}
    with pytest.raises(InferenceServerException) as info:
        triton.get_inference_statistics("no-such-model")
    assert info.value.status() == "404"

    index = {(m["name"], m["version"]): m["state"] for m in triton.get_model_repository_index()}
    assert index[("mobilenetv2", "1")] == "READY"
    assert index[("broken", "1")] in ("UNAVAILABLE", "FAILED")
    ready = triton.get_model_repository_index()
    assert all(m["state"] == "READY" for m in ready if m["name"] == "mobilenetv2")


def test_load_and_unload_need_the_token(server, triton: th.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton.unload_model("tiny-f32")
    assert info.value.status() == "401"
    assert "needs an 'Authorization: Bearer <token>' header" in info.value.message()
    with pytest.raises(InferenceServerException):
        triton.load_model("tiny-f32", headers={"Authorization": "Bearer wrong"})
    triton.load_model("tiny-f32", headers=AUTH)
    assert triton.is_model_ready("tiny-f32")
    triton.unload_model("tiny-f32", headers=AUTH)
    assert not triton.is_model_ready("tiny-f32")
    with pytest.raises(InferenceServerException) as info:
        triton.load_model("tiny-f32", headers=AUTH, config='{"max_batch_size": 1}')
    assert "parameters are not supported (received 'config')" in info.value.message()
    triton.load_model("tiny-f32", headers=AUTH)
    assert triton.is_model_ready("tiny-f32")
    with pytest.raises(InferenceServerException) as info:
        triton.load_model("broken", headers=AUTH)
    assert info.value.status() in ("400", "500")
    assert triton.is_server_ready()


# -- bad requests: a clear 4xx, and the server keeps serving ------------------------------

PIXELS = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(1, 64, 64, 3)


def binary_body(header: dict, *tensors: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(tensors), {"Inference-Header-Content-Length": str(len(text))}


def image_input(**extra) -> dict:
    return {"name": "image", "datatype": "UINT8", "shape": [1, 64, 64, 3], **extra}


BINARY = image_input(parameters={"binary_data_size": PIXELS.size})
BAD_INFER = [
    # (body, headers, status, part of the message)
    (b"{not json", {}, 400, "does not parse"),
    (b"[1, 2]", {}, 400, "the request must be a JSON object; received list"),
    (json.dumps({"inputs": {}}).encode(), {}, 400, "inputs must be a JSON array"),
    (json.dumps({"inputs": [image_input(data=[1, 2, 3])]}).encode(), {}, 400,
     "3 values in data; shape [1, 64, 64, 3] needs 12288"),
    (json.dumps({"inputs": [image_input(data=["a"] * PIXELS.size)]}).encode(), {}, 400,
     "its data must be whole numbers"),
    (json.dumps({"inputs": [image_input(data=[300] * PIXELS.size)]}).encode(), {}, 400,
     "outside uint8's range 0..255"),
    (json.dumps({"inputs": [image_input(data=[[1, 2], [3]])]}).encode(), {}, 400,
     "data has rows of different lengths"),
    (json.dumps({"inputs": [{**image_input(data=PIXELS.ravel().tolist()), "datatype": "FP32"}]}).encode(),
     {}, 400, "input 'image' must be UINT8; received float32"),
    (json.dumps({"inputs": [{**image_input(data=[0] * 48 * 48 * 3), "shape": [1, 48, 48, 3]}]}).encode(),
     {}, 400, "must have shape [batch, 64, 64, 3]; received [1, 48, 48, 3]"),
    (json.dumps({"inputs": [{**image_input(data=[0]), "datatype": "STRING"}]}).encode(), {}, 400,
     "has datatype 'STRING'; expected one of"),
    (json.dumps({"inputs": [{**image_input(data=[0]), "shape": [-1]}]}).encode(), {}, 400,
     "each dimension must be from 0 to"),
    (*binary_body({"inputs": [BINARY]}, PIXELS.tobytes()[:-1]), 400,
     "binary_data_size is 12288 but only 12287 bytes of the body are left"),
    (*binary_body({"inputs": [BINARY]}, PIXELS.tobytes() + b"x"), 400,
     "the body has 12289 bytes after its JSON header; the inputs' binary_data_size add up to 12288"),
    (*binary_body({"inputs": [image_input(parameters={"binary_data_size": 12})]}, b"x" * 12), 400,
     "binary_data_size is 12; shape [1, 64, 64, 3] of UINT8 needs 12288 bytes"),
    (json.dumps({"inputs": [BINARY]}).encode() + PIXELS.tobytes(),
     {"Inference-Header-Content-Length": "999999999"}, 400,
     "Inference-Header-Content-Length must be a number of bytes from 0 to the body's"),
    (json.dumps({"inputs": [BINARY]}).encode() + PIXELS.tobytes(), {}, 400,
     "binary tensors need the Inference-Header-Content-Length header"),
    (json.dumps({"inputs": [image_input(data=PIXELS.ravel().tolist())],
                 "outputs": [{"name": "nope"}]}).encode(), {}, 400,
     "model 'mobilenetv2' has no output 'nope'"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "headers", "status", "message"), BAD_INFER)
def test_bad_infer_requests_are_refused_clearly(http, body, headers, status, message) -> None:
    answer = http.post("/v2/models/mobilenetv2/infer", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert http.get("/v2/health/ready").status_code == 200


def test_good_raw_request_is_answered(http, served_repository: Path) -> None:
    """The baseline for the refusals above: the same bodies, correct, are served."""
    expected = reference(served_repository, "mobilenetv2", PIXELS)["logits"]
    body, headers = binary_body(
        {"inputs": [BINARY], "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]},
        PIXELS.tobytes(),
    )
    answer = http.post("/v2/models/mobilenetv2/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    length = int(answer.headers["Inference-Header-Content-Length"])
    header = json.loads(answer.content[:length])
    assert header["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [1, 1000],
                                  "parameters": {"binary_data_size": 4000}}]  # fmt: skip
    got = np.frombuffer(answer.content[length:], np.float32).reshape(1, 1000)
    np.testing.assert_array_equal(got, expected)
    plain = {"inputs": [image_input(data=PIXELS.tolist())], "outputs": [{"name": "logits"}]}
    answer = http.post("/v2/models/mobilenetv2/infer", json=plain)
    assert answer.headers["content-type"] == "application/json"
    np.testing.assert_array_equal(
        np.array(answer.json()["outputs"][0]["data"], np.float32).reshape(1, 1000), expected
    )


def test_oversized_bodies_are_refused_before_reading(http) -> None:
    big = b"0" * (8 * 2**20 + 1)  # the server's limit: ZOO_MAX_MESSAGE_BYTES, 8 MiB
    answer = http.post("/v2/models/mobilenetv2/infer", content=big)
    assert answer.status_code == 413
    assert "over the limit of 8,388,608 bytes" in answer.json()["error"]

    def chunked():  # no Content-Length: counted as it arrives
        for _ in range(9):
            yield b"0" * 2**20

    answer = http.post("/v2/models/mobilenetv2/infer", content=chunked())
    assert answer.status_code == 413, answer.text
    assert http.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v2/models/no-such-model", 404, "no-such-model"),
        ("POST", "/v2/models/no-such-model/infer", 404, "no-such-model"),
        ("GET", "/v2/models/mobilenetv2/versions/7", 404, "version 7"),
        (
            "GET",
            "/v2/models/mobilenetv2/versions/X1/config",
            400,
            "model version must be empty or a whole number",
        ),
        ("GET", "/v2/models/mobilenetv2/versions/x1/config", 404, "no version labelled 'x1'"),
        ("GET", "/v2/models/..%2F..%2Fetc/config", 404, "no such endpoint"),
        ("GET", "/v2/models/%2E%2E/config", 400, "invalid model name '..'"),
        ("GET", "/v2/models/.staging/ready", 400, "invalid model name '.staging'"),
        ("POST", "/v2/repository/models/..%5Cx/load", 401, "needs an 'Authorization"),
        ("GET", "/v2/models/mobilenetv2/infer", 405, "Method Not Allowed"),
        ("GET", "/v2/nothing-here", 404, "no such endpoint: GET /v2/nothing-here"),
        ("GET", "/v1/jobs/..%2F..%2Fetc", 404, "no such endpoint"),
        ("GET", "/v1/datasets/%2E%2E", 400, "'..'"),
        ("GET", "/v1/jobs/%2E%2E", 404, ""),
    ],
)
def test_unknown_models_and_path_tricks(http, method, path, status, message) -> None:
    answer = http.request(method, path, content=b"{}" if method == "POST" else None)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert http.get("/v2/health/ready").status_code == 200


# -- the JSON API -----------------------------------------------------------------------


def test_catalog_and_served_models(http) -> None:
    everything = http.get("/v1/catalog").json()["models"]
    assert len(everything) == 40 + 2  # the catalog plus tiny-f32 and broken, as over gRPC
    resnets = http.get("/v1/catalog", params={"family": "resnet"}).json()["models"]
    assert {m["name"] for m in resnets} == {"ResNet50", "ResNet101", "ResNet152"}
    resnet50 = next(m for m in resnets if m["name"] == "ResNet50")
    assert (resnet50["parameters"], resnet50["versions"], resnet50["preprocessing"]) == (
        25_636_712, [], "caffe")  # fmt: skip
    pattern = http.get("/v1/catalog", params={"pattern": "MobileNetV3*"}).json()["models"]
    assert {m["name"] for m in pattern} == {"MobileNetV3Small", "MobileNetV3Large"}
    served = http.get("/v1/catalog", params={"served": "true"}).json()["models"]
    assert {m["name"] for m in served} == {"mobilenetv2", "tiny-f32", "broken"}
    models = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
    assert set(models) == {"mobilenetv2", "tiny-f32", "broken"}
    assert models["mobilenetv2"]["catalog_model"] == "MobileNetV2"
    assert models["mobilenetv2"]["versions"] == [1]
    assert http.get("/v1/models/mobilenetv2").json()["input_shape"] == [64, 64, 3]
    # an exported (not fine-tuned) version has no test report; a version it lacks is 404
    one = http.get("/v1/models/mobilenetv2", params={"version": 1}).json()
    assert (one["evaluated_version"], one["evaluation"]) == (1, None)
    broken = http.get("/v1/models/broken").json()  # no zoo.json at all: no report either
    assert (broken["evaluated_version"], broken["evaluation"]) == (1, None)
    missing = http.get("/v1/models/mobilenetv2", params={"version": 7})
    assert missing.status_code == 404 and "has no version 7" in missing.text
    assert http.get("/v1/models/nothing").status_code == 404
    assert http.get("/v1/jobs/nope/tensorboard").status_code == 404
    assert http.get("/v1/catalog", params={"served": "maybe"}).status_code == 400


def test_classify_upload_and_raw_bytes(server, http, served_repository: Path) -> None:
    paths = [PHOTO_DIR / p for p in PHOTOS[:2]]  # a cat and a coffee cup
    pixels = np.stack([decode_image(p.read_bytes(), (64, 64), 10**8) for p in paths])
    probabilities = reference(served_repository, "mobilenetv2", pixels)["probabilities"]
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :3]
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    answer = http.post("/v1/models/mobilenetv2/classify", params={"top_k": 3}, files=files)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"]) == ("mobilenetv2", 1)
    assert [[p["index"] for p in row] for row in body["results"]] == top.tolist()
    np.testing.assert_allclose(
        [[p["score"] for p in row] for row in body["results"]],
        np.take_along_axis(probabilities, top, axis=1),
        atol=1e-6,
    )
    raw = http.post("/v1/models/mobilenetv2/classify", params={"top_k": 3},
                    content=paths[0].read_bytes())  # fmt: skip
    assert raw.json()["results"] == body["results"][:1]
    with ZooClient(server.address) as zoo:  # the same answer as gRPC's
        over_grpc = zoo.classify(paths[0].read_bytes(), "mobilenetv2", top_k=3)
    assert [p["label"] for p in raw.json()["results"][0]] == [
        p.label for p in over_grpc.predictions
    ]
    for bad, status, message in [
        (http.post("/v1/models/mobilenetv2/classify", content=b"not an image"), 400, "image 0"),
        (http.post("/v1/models/mobilenetv2/classify", content=b""), 400, "no images"),
        (http.post("/v1/models/mobilenetv2/classify", params={"top_k": "x"},
                   content=paths[0].read_bytes()), 400, "top_k must be a whole number"),
        (http.post("/v1/models/tiny-f32/classify", content=paths[0].read_bytes()), 400,
         "Classify needs a model exported with uint8 input"),
        (http.post("/v1/models/nothing/classify", content=paths[0].read_bytes()), 404, "nothing"),
    ]:  # fmt: skip
        assert bad.status_code == status, bad.text
        assert message in bad.json()["error"]


# -- datasets and jobs, on a server of their own without workers (jobs stay queued) -------


@pytest.fixture(scope="module")
def job_server(served_repository: Path, tmp_path_factory: pytest.TempPathFactory):
    from serving import start_server

    workdir = tmp_path_factory.mktemp("http-jobs")
    running = start_server(
        served_repository,
        workdir,
        "--token",
        TOKEN,
        env={"ZOO_DATA_DIR": str(workdir / "data"), "ZOO_WORKERS": "0",
             "ZOO_MAX_UPLOAD_BYTES": str(2**20)},
    )  # fmt: skip
    yield running
    assert running.stop() == 0, running.log.read_text()[-3000:]


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, path.relative_to(folder.parent))
    return buffer.getvalue()


def test_datasets_upload_list_get_delete(job_server, digits) -> None:
    folder, _ = digits
    archive = zip_folder(folder)
    with httpx.Client(base_url=job_server.http_url, timeout=60) as http:
        refused = http.post("/v1/datasets", content=archive)
        assert refused.status_code == 401
        answer = http.post("/v1/datasets", content=archive, headers=AUTH,
                           params={"filename": "digits.zip"})  # fmt: skip
        assert answer.status_code == 201, answer.text
        dataset = answer.json()
        assert dataset["images"] > 0 and "path" not in dataset
        with ZooClient(job_server.address) as zoo:  # the same record as over gRPC
            over_grpc = next(d for d in zoo.datasets() if d.id == dataset["id"])
        assert (list(over_grpc.classes), over_grpc.images) == (
            dataset["classes"],
            dataset["images"],
        )
        assert dataset["id"] in [d["id"] for d in http.get("/v1/datasets").json()["datasets"]]
        assert http.get(f"/v1/datasets/{dataset['id']}").json() == dataset
        too_big = http.post("/v1/datasets", content=b"0" * (2**20 + 1), headers=AUTH)
        assert too_big.status_code == 413
        assert "over the limit of 1,048,576 bytes" in too_big.json()["error"]
        not_zip = http.post("/v1/datasets", content=b"hello", headers=AUTH)
        assert not_zip.status_code == 400, not_zip.text
        assert http.delete(f"/v1/datasets/{dataset['id']}").status_code == 401
        assert http.delete(f"/v1/datasets/{dataset['id']}", headers=AUTH).status_code == 204
        assert http.get(f"/v1/datasets/{dataset['id']}").status_code == 404
        assert http.get("/v2/health/ready").status_code == 200


def sse_events(response: httpx.Response) -> list[dict]:
    events, current = [], {}
    for line in response.iter_lines():
        if not line:
            if current:
                events.append(current)
            current = {}
            continue
        key, _, value = line.partition(": ")
        current[key] = value
    return events


def test_jobs_create_list_cancel_and_event_stream(job_server, digits) -> None:
    folder, _ = digits
    with httpx.Client(base_url=job_server.http_url, timeout=60, headers=AUTH) as http:
        dataset = http.post("/v1/datasets", content=zip_folder(folder)).json()
        finetune = {"base_model": "MobileNetV2", "dataset_id": dataset["id"],
                    "output_model": "digits-http", "params": {"epochs": 1, "image_size": 96}}  # fmt: skip
        answer = http.post("/v1/jobs/finetune", json=finetune)
        assert answer.status_code == 201, answer.text
        job = answer.json()
        assert (job["kind"], job["state"]) == ("finetune", "QUEUED")
        assert job["params"]["params"]["epochs"] == 1
        export = http.post(
            "/v1/jobs/export",
            json={"model": "MobileNetV2", "weights": "none", "output_model": "mnv2-export"},
        )
        assert export.status_code == 201, export.text
        listed = [j["id"] for j in http.get("/v1/jobs", params={"state": "QUEUED"}).json()["jobs"]]
        assert {job["id"], export.json()["id"]} <= set(listed)
        assert http.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]
        for body, message in [
            ({**finetune, "params": {"epochs": -1}}, "epochs"),
            ({**finetune, "base_model": "NoSuchNet"}, "NoSuchNet"),
            ({**finetune, "surprise": 1}, "unknown fields ['surprise']"),
            ({**finetune, "params": "fast"}, "params must be a JSON object"),
        ]:
            bad = http.post("/v1/jobs/finetune", json=body)
            assert bad.status_code in (400, 404), bad.text
            assert message in bad.json()["error"]
        assert http.post("/v1/jobs/finetune", content=b"{").status_code == 400
        for path, body in [
            ("/v1/jobs/finetune", finetune),
            ("/v1/jobs/export", {"model": "VGG16"}),
        ]:
            refused = httpx.post(job_server.http_url + path, json=body)  # no token
            assert refused.status_code == 401, refused.text
        assert (
            http.post(f"/v1/jobs/{job['id']}/cancel", headers={"Authorization": ""}).status_code
            == 401
        )
        cancelled = http.post(f"/v1/jobs/{job['id']}/cancel")
        assert cancelled.json()["state"] == "CANCELLED", cancelled.text
        again = http.post(f"/v1/jobs/{job['id']}/cancel")
        assert again.status_code in (200, 400, 409), again.text

        # the job has ended, so its stream ends after its events, which are WatchJob's
        with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream)
        with ZooClient(job_server.address, token=TOKEN) as zoo:
            watched = list(zoo.job(job["id"]).watch())
        assert [(int(e["id"]), e["event"]) for e in events] == [(w.seq, w.type) for w in watched]
        assert [json.loads(e["data"])["payload"] for e in events] == [w.payload for w in watched]
        assert len(events) >= 2
        with http.stream("GET", f"/v1/jobs/{job['id']}/events",
                         headers={"Last-Event-ID": events[0]["id"]}) as stream:  # fmt: skip
            resumed = sse_events(stream)
        assert resumed == events[1:]
        assert (
            http.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"}).status_code
            == 400
        )
        assert http.get("/v1/jobs/0123abcd/events").status_code in (400, 404)


def test_sigterm_ends_event_streams_and_drains(served_repository: Path, tmp_path: Path) -> None:
    """A watcher's stream must not hold shutdown for the whole grace period (20 s here)."""
    import threading
    import time

    from serving import start_server

    running = start_server(
        served_repository, tmp_path,
        env={"ZOO_DATA_DIR": str(tmp_path / "data"), "ZOO_WORKERS": "0", "ZOO_GRACE_SECONDS": "20"},
    )  # fmt: skip
    try:
        with httpx.Client(base_url=running.http_url, timeout=60) as http:
            job = http.post("/v1/jobs/export", json={"model": "MobileNetV2", "weights": "none",
                                                     "output_model": "watched"})  # fmt: skip
            assert job.status_code == 201, job.text  # queued for good: no worker
            seen: list[dict] = []
            first = threading.Event()

            def watch() -> None:
                with http.stream("GET", f"/v1/jobs/{job.json()['id']}/events") as stream:
                    for line in stream.iter_lines():
                        if line.startswith("id: "):
                            seen.append({"id": line})
                            first.set()

            watcher = threading.Thread(target=watch)
            watcher.start()
            assert first.wait(30)
            started = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            assert running.process.wait(30) == 0, running.log.read_text()[-3000:]
            took = time.monotonic() - started
            watcher.join(5)
            assert not watcher.is_alive()
        assert took < 8, f"shutdown took {took:.1f} s: the event stream held it"
        assert seen  # the stream had started before the signal
    finally:
        running.stop()


def test_connections_are_accepted_with_tcp_nodelay() -> None:
    """Headers and body leave in two writes: without TCP_NODELAY on the server's connections
    each answer waited for the client's delayed ACK, 40 ms on Linux (found by bench-serve)."""
    import asyncio
    import socket

    from server.http.server import listening_socket

    async def scenario() -> int:
        sock = listening_socket("127.0.0.1", 0, 8)
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            option = writer.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
            accepted.set_result(option)
            writer.close()

        server = await asyncio.start_server(on_connection, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        option = await asyncio.wait_for(accepted, 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return option

    assert asyncio.run(scenario()) != 0
