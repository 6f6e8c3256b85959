"""server/convert.py, function by function: every field of every message it builds, every
boundary it checks. Pure and fast (no server, no export), so mutation testing can afford it."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from protos import grpc_service_pb2 as pb
from protos import model_config_pb2 as mc
from protos import zoo_service_pb2 as zpb
from server import convert
from zoo.catalog import get_spec
from zoo.errors import InvalidArgument
from zoo.export.triton_config import TRITON_TYPES
from zoo.jobs.datasets import Dataset
from zoo.jobs.records import EventType, Job, JobEvent, JobKind, JobState
from zoo.labels import LabelChange, Labels
from zoo.manifest import ClassMetrics, ConfusedPair, Evaluation, Misclassified
from zoo.repository import MAX_VERSION
from zoo.serving.dataplane import ModelIndexEntry, ModelLabels, ModelSummary, Prediction
from zoo.serving.runtime import ONNX_TYPES, TensorInfo
from zoo.serving.stats import BatchStats, Duration, ModelStats

IMAGE = TensorInfo("image", "UINT8", np.dtype(np.uint8), (-1, 224, 224, 3))
LOGITS = TensorInfo("logits", "FP32", np.dtype(np.float32), (-1, 3))


def loaded(**overrides: Any) -> Any:
    """A stand-in for runtime.LoadedModel: convert only reads these attributes, and a real one
    needs an exported model and ONNX Runtime sessions."""
    values = dict(
        name="flowers",
        version=7,
        inputs=(IMAGE,),
        outputs=(LOGITS,),
        labels=["daisy", "rose", "tulip"],
        max_batch_size=16,
    )
    return SimpleNamespace(**{**values, **overrides})


def refused(match: str) -> Any:
    return pytest.raises(InvalidArgument, match=match)


# --- jobs and datasets


def test_job_every_field() -> None:
    j = Job(
        id="j1",
        kind=JobKind.FINETUNE,
        state=JobState.SUCCEEDED,
        params={"base_model": "MobileNetV2", "epochs": 2},
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        updated_at=datetime(2026, 1, 2, 3, 9, 0, tzinfo=UTC),
        attempts=2,
        worker="w-1",
        error="first attempt died",
        result={"accuracy": 0.5},
        started_at=datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC),
        finished_at=datetime(2026, 1, 2, 3, 8, 30, 250000, tzinfo=UTC),
    )
    assert convert.job(j) == zpb.Job(
        id="j1",
        kind="finetune",
        state="SUCCEEDED",
        created_at="2026-01-02T03:04:05+00:00",
        updated_at="2026-01-02T03:09:00+00:00",
        started_at="2026-01-02T03:05:00+00:00",
        finished_at="2026-01-02T03:08:30.250000+00:00",
        attempts=2,
        worker="w-1",
        error="first attempt died",
        params_json='{"base_model": "MobileNetV2", "epochs": 2}',
        result_json='{"accuracy": 0.5}',
    )


def test_job_unset_fields_are_empty() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    j = Job("j2", JobKind.EXPORT, JobState.QUEUED, {}, created, created)
    message = convert.job(j)
    assert message == zpb.Job(
        id="j2",
        kind="export",
        state="QUEUED",
        created_at="2026-01-02T03:04:05+00:00",
        updated_at="2026-01-02T03:04:05+00:00",
        params_json="{}",
    )
    assert (message.started_at, message.finished_at, message.worker, message.error) == ("",) * 4
    assert message.result_json == ""
    # An empty result is a result: only None is "no result".
    assert convert.job(dataclasses.replace(j, result={})).result_json == "{}"


def test_job_event() -> None:
    e = JobEvent(
        "j1", 3, datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), EventType.EPOCH, {"epoch": 1}
    )
    assert convert.job_event(e) == zpb.JobEvent(
        job_id="j1",
        seq=3,
        time="2026-01-02T03:04:05.000006+00:00",
        type="epoch",
        payload_json='{"epoch": 1}',
    )


def test_dataset_with_skipped_files(tmp_path: Any) -> None:
    d = Dataset(
        id="ab" * 32,
        classes=("daisy", "rose"),
        counts=(3, 5),
        images=8,
        skipped=(("notes.txt", "not an image"), ("rose/bad.jpg", "cannot decode")),
        created_at="2026-01-02T03:04:05+00:00",
        path=tmp_path,
    )
    assert convert.dataset(d) == zpb.Dataset(
        id="ab" * 32,
        classes=["daisy", "rose"],
        counts=[3, 5],
        images=8,
        skipped=[
            zpb.SkippedFile(path="notes.txt", reason="not an image"),
            zpb.SkippedFile(path="rose/bad.jpg", reason="cannot decode"),
        ],
        created_at="2026-01-02T03:04:05+00:00",
    )


def test_finetune_params_only_the_fields_set() -> None:
    params = zpb.FineTuneParams(
        epochs=0, learning_rate=0.01, augment=False, weights="none", split_seed=4
    )
    params.base_kwargs["alpha"] = 0.5
    params.base_kwargs["depth_multiplier"] = 2.0
    values = convert.finetune_params(params)
    assert values == {
        "epochs": 0,
        "learning_rate": 0.01,
        "augment": False,
        "weights": "none",
        "split_seed": 4,
        "base_kwargs": {"alpha": 0.5, "depth_multiplier": 2},
    }
    assert type(values["base_kwargs"]["depth_multiplier"]) is int
    assert type(values["base_kwargs"]["alpha"]) is float
    assert convert.finetune_params(zpb.FineTuneParams()) == {}


def test_search_space() -> None:
    assert convert.search_space("") is None
    assert convert.search_space('{"learning_rate": [0.1, 0.01]}') == {"learning_rate": [0.1, 0.01]}
    with refused(r"space_json must be a JSON object; received '\{lr: 1\}' \(Expecting"):
        convert.search_space("{lr: 1}")
    with refused(r"received '\{xxxx.*\.\.\. \(1,002 characters\)"):
        convert.search_space("{" + "x" * 999)


# --- ZooService models and labels


def test_model_labels() -> None:
    labels = Labels(
        labels={"stable": 3, "candidate": 4},
        history=(
            LabelChange(
                "stable", 3, None, "promote", "ann", "ipv4:127.0.0.1:5", "2026-01-01T00:00Z"
            ),
            LabelChange("candidate", 4, 2, "rollback", "bob", "ipv6:[::1]:6", "2026-01-02T00:00Z"),
        ),
    )
    assert convert.model_labels(ModelLabels("flowers", labels, 3)) == zpb.ModelLabels(
        model="flowers",
        labels=[
            zpb.VersionLabel(label="candidate", version=4),
            zpb.VersionLabel(label="stable", version=3),
        ],
        history=[
            zpb.LabelChange(
                label="stable",
                version=3,
                previous=0,
                action="promote",
                by="ann",
                peer="ipv4:127.0.0.1:5",
                at="2026-01-01T00:00Z",
            ),
            zpb.LabelChange(
                label="candidate",
                version=4,
                previous=2,
                action="rollback",
                by="bob",
                peer="ipv6:[::1]:6",
                at="2026-01-02T00:00Z",
            ),
        ],
        default_version=3,
    )


def summary(**overrides: Any) -> ModelSummary:
    values: dict[str, Any] = dict(
        name="flowers",
        catalog_model="MobileNetV2",
        versions=(1, 2, 3),
        loaded_versions=(3,),
        spec=get_spec("MobileNetV2"),
        input_shape=(224, 224, 3),
        num_classes=5,
        provider="CPUExecutionProvider",
        labels=(("candidate", 3), ("stable", 2)),
    )
    return ModelSummary(**{**values, **overrides})


def test_zoo_model_with_spec() -> None:
    assert convert.zoo_model(summary()) == zpb.Model(
        name="flowers",
        catalog_model="MobileNetV2",
        family="mobilenet_v2",
        versions=[1, 2, 3],
        loaded_versions=[3],
        input_shape=[224, 224, 3],
        preprocessing="tf",
        num_classes=5,
        parameters=3538984,
        size_mb=14.0,
        top1_accuracy=0.713,
        top5_accuracy=0.901,
        execution_provider="CPUExecutionProvider",
        labels=[
            zpb.VersionLabel(label="candidate", version=3),
            zpb.VersionLabel(label="stable", version=2),
        ],
        evaluation_json="",
        evaluated_version=0,
    )


def test_zoo_model_spec_without_figures() -> None:
    spec = dataclasses.replace(
        get_spec("MobileNetV2"), size_mb=None, top1_accuracy=None, top5_accuracy=None
    )
    message = convert.zoo_model(summary(spec=spec))
    assert (message.size_mb, message.top1_accuracy, message.top5_accuracy) == (0.0, 0.0, 0.0)
    assert message.parameters == 3538984


def test_zoo_model_without_spec() -> None:
    bare = summary(catalog_model=None, spec=None, versions=(), loaded_versions=(), labels=())
    assert convert.zoo_model(bare) == zpb.Model(
        name="flowers",
        input_shape=[224, 224, 3],
        num_classes=5,
        execution_provider="CPUExecutionProvider",
    )


def test_zoo_model_with_evaluation() -> None:
    metrics = ClassMetrics("rose", 1.0, 0.5, 2 / 3, 2)
    report = Evaluation(
        split="s1",
        images=4,
        accuracy=0.75,
        top5_accuracy=None,
        classes=(metrics,),
        macro=metrics,
        weighted=metrics,
        confusion_matrix=((1, 1), (0, 2)),
        most_confused=(ConfusedPair("rose", "daisy", 1),),
        worst_mistakes=(Misclassified("rose/1.jpg", "rose", "daisy", 0.9),),
    )
    message = convert.zoo_model(summary(), (3, report))
    assert message.evaluated_version == 3
    assert json.loads(message.evaluation_json) == report.to_dict()
    assert json.loads(message.evaluation_json)["confusion_matrix"] == [[1, 1], [0, 2]]
    # A version without a report: its number, no JSON.
    message = convert.zoo_model(summary(), (2, None))
    assert (message.evaluated_version, message.evaluation_json) == (2, "")


def test_classify_response() -> None:
    results = [
        [Prediction("rose", 1, 0.75), Prediction("daisy", 0, 0.25)],
        [Prediction("tulip", 2, 1.0)],
    ]
    assert convert.classify_response(loaded(), results) == zpb.ClassifyResponse(
        model="flowers",
        version=7,
        results=[
            zpb.Classification(
                predictions=[
                    zpb.Prediction(label="rose", index=1, score=0.75),
                    zpb.Prediction(label="daisy", index=0, score=0.25),
                ]
            ),
            zpb.Classification(predictions=[zpb.Prediction(label="tulip", index=2, score=1.0)]),
        ],
    )


# --- Triton metadata, configuration, statistics, index


def test_model_statistics_batches_by_size() -> None:
    stats = ModelStats(
        name="flowers",
        version=7,
        success=Duration(10, 1000),
        fail=Duration(1, 20),
        queue=Duration(10, 300),
        compute_infer=Duration(4, 600),
        inference_count=12,
        execution_count=4,
        last_inference_ms=1_700_000_000_000,
        batches={8: BatchStats(1, 400), 1: BatchStats(2, 100), 2: BatchStats(1, 100)},
    )
    other = ModelStats(name="cats", version=1)
    response = convert.model_statistics([stats, other])
    expected = pb.ModelStatisticsResponse()
    entry = expected.model_stats.add(
        name="flowers",
        version="7",
        last_inference=1_700_000_000_000,
        inference_count=12,
        execution_count=4,
    )
    entry.inference_stats.success.CopyFrom(pb.StatisticDuration(count=10, ns=1000))
    entry.inference_stats.fail.CopyFrom(pb.StatisticDuration(count=1, ns=20))
    entry.inference_stats.queue.CopyFrom(pb.StatisticDuration(count=10, ns=300))
    entry.inference_stats.compute_infer.CopyFrom(pb.StatisticDuration(count=4, ns=600))
    for size, count, ns in [(1, 2, 100), (2, 1, 100), (8, 1, 400)]:
        entry.batch_stats.add(
            batch_size=size, compute_infer=pb.StatisticDuration(count=count, ns=ns)
        )
    empty = expected.model_stats.add(name="cats", version="1").inference_stats
    for duration in (empty.success, empty.fail, empty.queue, empty.compute_infer):
        duration.SetInParent()  # present, all zero: a model that has served nothing yet
    assert response == expected


def test_repository_index() -> None:
    entries = [
        ModelIndexEntry("flowers", 3, "READY", ""),
        ModelIndexEntry("cats", 1, "UNAVAILABLE", "unloaded"),
    ]
    Index = pb.RepositoryIndexResponse.ModelIndex
    assert convert.repository_index(entries) == pb.RepositoryIndexResponse(
        models=[
            Index(name="flowers", version="3", state="READY", reason=""),
            Index(name="cats", version="1", state="UNAVAILABLE", reason="unloaded"),
        ]
    )


def test_model_metadata() -> None:
    Tensor = pb.ModelMetadataResponse.TensorMetadata
    assert convert.model_metadata(loaded(), [1, 3]) == pb.ModelMetadataResponse(
        name="flowers",
        versions=["1", "3"],
        platform="onnxruntime_onnx",
        inputs=[Tensor(name="image", datatype="UINT8", shape=[-1, 224, 224, 3])],
        outputs=[Tensor(name="logits", datatype="FP32", shape=[-1, 3])],
    )


def test_model_config_latest_without_stable() -> None:
    half = TensorInfo("half", "FP16", np.dtype(np.float16), (-1, 2))
    model = loaded(outputs=(LOGITS, half))
    assert convert.model_config(model, 250) == pb.ModelConfigResponse(
        config=mc.ModelConfig(
            name="flowers",
            platform="onnxruntime_onnx",
            backend="onnxruntime",
            max_batch_size=16,
            input=[mc.ModelInput(name="image", data_type=mc.TYPE_UINT8, dims=[224, 224, 3])],
            output=[
                mc.ModelOutput(name="logits", data_type=mc.TYPE_FP32, dims=[3]),
                mc.ModelOutput(name="half", data_type=mc.TYPE_FP16, dims=[2]),
            ],
            dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=250),
            version_policy=mc.ModelVersionPolicy(
                latest=mc.ModelVersionPolicy.Latest(num_versions=1)
            ),
        )
    )


def test_model_config_stable_alone() -> None:
    policy = convert.model_config(loaded(), 0, stable=3).config.version_policy
    assert policy == mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=[3]))


# --- versions


@pytest.mark.parametrize(
    "version, expected",
    [
        ("", None),
        (0, None),
        ("1", 1),
        (1, 1),
        ("01", 1),
        (str(MAX_VERSION), MAX_VERSION),
        (MAX_VERSION, MAX_VERSION),
        ("stable", "stable"),
        ("canary-2", "canary-2"),
    ],
)
def test_parse_version(version: str | int, expected: int | str | None) -> None:
    assert convert.parse_version(version) == expected


@pytest.mark.parametrize(
    "version, shown",
    [
        ("0", "'0'"),
        (MAX_VERSION + 1, f"'{MAX_VERSION + 1}'"),
        (str(MAX_VERSION + 1), f"'{MAX_VERSION + 1}'"),
        ("1" + "0" * len(str(MAX_VERSION)), "'1" + "0" * len(str(MAX_VERSION)) + "'"),
        ("0" * len(str(MAX_VERSION)) + "1", "'" + "0" * len(str(MAX_VERSION)) + "1'"),
        (-1, "'-1'"),
        (" 1", "' 1'"),
        ("+1", "'\\+1'"),
        ("\u0661", "'\u0661'"),  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
        ("Stable", "'Stable'"),
        ("1.5", "'1.5'"),
    ],
)
def test_parse_version_refuses(version: str | int, shown: str) -> None:
    with refused(
        rf"a whole number from 1 to {MAX_VERSION}, or a label \(a-z 0-9 _ -.*received {shown}$"
    ):
        convert.parse_version(version)


@pytest.mark.parametrize(
    "version, label, expected",
    [(0, "", None), (3, "", 3), (0, "stable", "stable"), (0, "4", 4)],
)
def test_classify_version(version: int, label: str, expected: int | str | None) -> None:
    assert convert.classify_version(version, label) == expected


def test_classify_version_not_both() -> None:
    with refused(r"set version or version_label, not both; received 3 and 'stable'"):
        convert.classify_version(3, "stable")


# --- shapes and inputs


def test_element_count() -> None:
    M = convert.MAX_DIM
    assert convert.element_count("x", [1] * convert.MAX_DIMS) == ((1,) * convert.MAX_DIMS, 1)
    assert convert.element_count("x", [2, 0, 3]) == ((2, 0, 3), 0)
    assert convert.element_count("x", [M, M]) == ((M, M), M * M)
    assert convert.element_count("x", []) == ((), 1)
    with refused(r"input 'x' has 33 dimensions; at most 32 are accepted"):
        convert.element_count("x", [1] * (convert.MAX_DIMS + 1))


@pytest.mark.parametrize("dim", [convert.MAX_DIM + 1, -1])
def test_element_count_refuses_dimension(dim: int) -> None:
    with refused(
        rf"input 'x' has shape \[2, {dim}\]; each dimension must be from 0 to {2**31 - 1}"
    ):
        convert.element_count("x", [2, dim])


def request_with(*tensors: dict[str, Any], raw: list[bytes] | None = None) -> Any:
    request = pb.ModelInferRequest(model_name="flowers", raw_input_contents=raw or [])
    for t in tensors:
        request.inputs.add(**t)
    return request


def test_infer_inputs_raw() -> None:
    pixels = np.arange(6, dtype="<u2").reshape(2, 3)
    scale = np.array([[0.5], [-2.0]], dtype="<f4")
    request = request_with(
        dict(name="pixels", datatype="UINT16", shape=[2, 3]),
        dict(name="scale", datatype="FP32", shape=[2, 1]),
        raw=[pixels.tobytes(), scale.tobytes()],
    )
    arrays = convert.infer_inputs(request)
    assert list(arrays) == ["pixels", "scale"]
    assert arrays["pixels"].dtype == np.uint16 and arrays["scale"].dtype == np.float32
    np.testing.assert_array_equal(arrays["pixels"], pixels)
    np.testing.assert_array_equal(arrays["scale"], scale)


def test_infer_inputs_raw_fp16() -> None:
    half = np.array([1.5, -0.25], dtype="<f2")
    request = request_with(dict(name="h", datatype="FP16", shape=[2]), raw=[half.tobytes()])
    arrays = convert.infer_inputs(request)
    assert arrays["h"].dtype == np.float16
    assert arrays["h"].tolist() == [1.5, -0.25]


def test_infer_inputs_raw_wrong_size() -> None:
    request = request_with(dict(name="x", datatype="FP32", shape=[2, 3]), raw=[b"\0" * 20])
    with refused(r"input 'x': raw contents have 20 bytes; shape \[2, 3\] of FP32 needs 24$"):
        convert.infer_inputs(request)


def test_infer_inputs_raw_count() -> None:
    request = request_with(dict(name="x", datatype="UINT8", shape=[1]), raw=[b"\1", b"\2"])
    with refused(r"2 raw_input_contents for 1 inputs; expected one each"):
        convert.infer_inputs(request)
    with refused(r"1 raw_input_contents for 0 inputs"):
        convert.infer_inputs(request_with(raw=[b"\1"]))


def test_infer_inputs_raw_and_typed() -> None:
    request = request_with(
        dict(name="a", datatype="UINT8", shape=[1]),
        dict(
            name="b", datatype="INT32", shape=[1], contents=pb.InferTensorContents(int_contents=[1])
        ),
        raw=[b"\1", b"\0\0\0\0"],
    )
    with refused(r"both raw_input_contents and typed contents; send one or the other"):
        convert.infer_inputs(request)


@pytest.mark.parametrize(
    "datatype, field, values",
    [
        ("BOOL", "bool_contents", [True, False]),
        ("UINT8", "uint_contents", [0, 255]),
        ("UINT16", "uint_contents", [0, 65535]),
        ("UINT32", "uint_contents", [0, 2**32 - 1]),
        ("UINT64", "uint64_contents", [0, 2**64 - 1]),
        ("INT8", "int_contents", [-128, 127]),
        ("INT16", "int_contents", [-(2**15), 2**15 - 1]),
        ("INT32", "int_contents", [-(2**31), 2**31 - 1]),
        ("INT64", "int64_contents", [-(2**63), 2**63 - 1]),
        ("FP32", "fp32_contents", [0.5, -1.25]),
        ("FP64", "fp64_contents", [0.1, -1e300]),
    ],
)
def test_infer_inputs_typed(datatype: str, field: str, values: list[Any]) -> None:
    contents = pb.InferTensorContents(**{field: values})
    request = request_with(dict(name="x", datatype=datatype, shape=[2, 1], contents=contents))
    array = convert.infer_inputs(request)["x"]
    assert array.dtype == convert.DATATYPES[datatype][0]
    assert array.shape == (2, 1)
    assert array.ravel().tolist() == values


def test_infer_inputs_typed_wrong_count() -> None:
    contents = pb.InferTensorContents(fp32_contents=[1.0] * 5)
    request = request_with(dict(name="x", datatype="FP32", shape=[2, 3], contents=contents))
    with refused(r"input 'x': 5 values in contents.fp32_contents; shape \[2, 3\] needs 6$"):
        convert.infer_inputs(request)


def test_infer_inputs_typed_fp16_refused() -> None:
    request = request_with(dict(name="h", datatype="FP16", shape=[1]))
    with refused(r"input 'h': FP16 must be sent as raw_input_contents"):
        convert.infer_inputs(request)


def test_infer_inputs_unknown_datatype() -> None:
    request = request_with(dict(name="s", datatype="BYTES", shape=[1]))
    with refused(r"input 's' has datatype 'BYTES'; expected one of \['BOOL', 'FP16', 'FP32'"):
        convert.infer_inputs(request)


def test_infer_inputs_duplicate_name() -> None:
    one = pb.InferTensorContents(int_contents=[1])
    request = request_with(
        dict(name="x", datatype="INT32", shape=[1], contents=one),
        dict(name="x", datatype="INT32", shape=[1], contents=one),
    )
    with refused(r"input 'x' appears twice"):
        convert.infer_inputs(request)


def test_infer_inputs_empty() -> None:
    assert convert.infer_inputs(pb.ModelInferRequest()) == {}


@pytest.mark.parametrize(
    "dtype, low, high",
    [("int8", -128, 127), ("uint8", 0, 255), ("int32", -(2**31), 2**31 - 1)],
)
def test_typed_array_range(dtype: str, low: int, high: int) -> None:
    array = convert.typed_array("x", [low, high], np.dtype(dtype))
    assert array.dtype == np.dtype(dtype) and array.tolist() == [low, high]
    with refused(rf"input 'x': contents hold {low}..{high + 1}, outside {dtype}'s range "):
        convert.typed_array("x", [low, high + 1], np.dtype(dtype))
    if low:  # unsigned contents cannot hold a negative number
        with refused(rf"contents hold {low - 1}..{high}, outside {dtype}'s range {low}..{high}"):
            convert.typed_array("x", [low - 1, high], np.dtype(dtype))


def test_typed_array_edges() -> None:
    assert convert.typed_array("x", [], np.dtype(np.int8)).dtype == np.int8
    uint64 = convert.typed_array("x", [2**64 - 1], np.dtype(np.uint64))
    assert uint64.tolist() == [2**64 - 1]
    floats = convert.typed_array("x", [1.5, 3e38], np.dtype(np.float32))
    assert floats.dtype == np.float32 and floats.tolist() == [1.5, np.float32(3e38)]


# --- parameters, outputs, load, deadline


def with_parameter(**parameter: Any) -> Any:
    request = pb.ModelInferRequest()
    request.parameters["priority"].CopyFrom(pb.InferParameter(**parameter))
    return request


def test_priority() -> None:
    assert convert.priority(pb.ModelInferRequest()) == 0
    assert convert.priority(with_parameter(uint64_param=2**40)) == 2**40
    assert convert.priority(with_parameter(int64_param=3)) == 3
    with refused(r"the priority parameter must be an integer; received string_param"):
        convert.priority(with_parameter(string_param="1"))
    with refused(r"received double_param"):
        convert.priority(with_parameter(double_param=1.0))


def test_clip() -> None:
    assert convert.clip("x" * 80) == "x" * 80
    assert convert.clip("x" * 81) == "x" * 80 + "... (81 characters)"
    assert convert.clip("y" * 1234, 3) == "yyy... (1,234 characters)"
    assert convert.clip("abc", 3) == "abc"


def top(k: Any, array: Any, labels: list[str] | None = None) -> list[list[bytes]]:
    parameter = pb.InferParameter(**k)
    labels = ["daisy", "rose", "tulip"] if labels is None else labels
    return convert.classification("logits", np.asarray(array), parameter, labels).tolist()


SCORES = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.5]], dtype=np.float32)


def test_classification() -> None:
    assert top(dict(int64_param=1), SCORES) == [[b"0.700000:1:rose"], [b"0.500000:0:daisy"]]
    assert top(dict(int64_param=3), SCORES) == [
        [b"0.700000:1:rose", b"0.200000:2:tulip", b"0.100000:0:daisy"],
        [b"0.500000:0:daisy", b"0.500000:2:tulip", b"0.250000:1:rose"],  # ties: lower index
    ]
    # Ties keep the lower index on rows too long for numpy's default sort to be stable.
    wide = np.zeros((1, 20), dtype=np.float32)
    wide[0, 10] = 1.0
    assert top(dict(int64_param=4), wide, []) == [
        [b"1.000000:10", b"0.000000:0", b"0.000000:1", b"0.000000:2"]
    ]
    # Labels shorter than the classes: the rest go without one.
    assert top(dict(int64_param=3), SCORES[:1], ["daisy", "rose"]) == [
        [b"0.700000:1:rose", b"0.200000:2", b"0.100000:0:daisy"]
    ]


@pytest.mark.parametrize(
    "k, array, received, shape",
    [
        (dict(int64_param=0), SCORES, "int64_param: 0", "[2, 3]"),
        (dict(int64_param=4), SCORES, "int64_param: 4", "[2, 3]"),
        (dict(int64_param=-1), SCORES, "int64_param: -1", "[2, 3]"),
        (dict(uint64_param=2), SCORES, "uint64_param: 2", "[2, 3]"),
        (dict(int64_param=1), SCORES[0], "int64_param: 1", "[3]"),
        (dict(int64_param=1), np.zeros((2, 0)), "int64_param: 1", "[2, 0]"),
    ],
)
def test_classification_refused(k: Any, array: Any, received: str, shape: str) -> None:
    classes = array.shape[-1] if array.ndim == 2 else 0
    with refused(
        rf"output 'logits': classification needs an int64 class count from 1 to {classes} on a "
        rf"\[batch, classes\] output; received '{received}' for shape {re.escape(shape)}$"
    ):
        top(k, array)


def test_infer_response() -> None:
    request = pb.ModelInferRequest(id="r1")
    request.outputs.add(name="top").parameters["classification"].int64_param = 1
    model = loaded(outputs=(LOGITS, TensorInfo("top", "FP32", np.dtype(np.float32), (-1, 3))))
    outputs = {"logits": SCORES.astype(">f4"), "top": SCORES}
    response = convert.infer_response(request, model, outputs)
    Tensor = pb.ModelInferResponse.InferOutputTensor
    assert response == pb.ModelInferResponse(
        model_name="flowers",
        model_version="7",
        id="r1",
        outputs=[
            Tensor(name="logits", datatype="FP32", shape=[2, 3]),
            Tensor(name="top", datatype="BYTES", shape=[2, 1]),
        ],
        raw_output_contents=[
            SCORES.astype("<f4").tobytes(),
            b"\x0f\0\0\x000.700000:1:rose\x10\0\0\x000.500000:0:daisy",
        ],
    )


def test_infer_response_types_each_output_by_its_own_name() -> None:
    index = TensorInfo("index", "INT64", np.dtype(np.int64), (-1,))
    model = loaded(outputs=(LOGITS, index))
    picked = np.array([1, 0], np.int64)
    response = convert.infer_response(
        pb.ModelInferRequest(), model, {"index": picked, "logits": SCORES}
    )
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("index", "INT64", [2]), ("logits", "FP32", [2, 3]),
    ]  # fmt: skip
    assert response.raw_output_contents[0] == picked.astype("<i8").tobytes()


def test_refuse_load_parameters() -> None:
    convert.refuse_load_parameters([])
    with refused(r"parameters are not supported \(received 'config'\); this server loads"):
        convert.refuse_load_parameters(["config"])
    names = ["f", "e", "d", "c", "b", "a", "z" * 50]
    with refused(r"\(received 'a', 'b', 'c', 'd', 'e'\)"):
        convert.refuse_load_parameters(names)
    with refused(r"\(received 'z{40}\.\.\. \(50 characters\)'\)"):
        convert.refuse_load_parameters(["z" * 50])


def test_deadline() -> None:
    assert convert.deadline(None) is None
    before = time.monotonic()
    instant = convert.deadline(2.5)
    after = time.monotonic()
    assert instant is not None and before + 2.5 <= instant <= after + 2.5
    assert convert.deadline(0.0) is not None


@pytest.mark.parametrize("datatype", sorted({datatype for _, datatype in ONNX_TYPES.values()}))
def test_model_config_data_types(datatype: str) -> None:
    """Every datatype the runtime reads from an ONNX file, named as config.pbtxt names it: an
    INT64 output is not reported as FP32."""
    out = TensorInfo("out", datatype, convert.DATATYPES[datatype][0], (-1, 4))
    config = convert.model_config(loaded(outputs=(out,)), 0).config
    assert mc.DataType.Name(config.output[0].data_type) == TRITON_TYPES[datatype]
