from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListModelsRequest(_message.Message):
    __slots__ = ("pattern", "served_only")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    SERVED_ONLY_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    served_only: bool
    def __init__(self, pattern: _Optional[str] = ..., served_only: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "catalog_model", "family", "versions", "loaded_versions", "input_shape", "preprocessing", "num_classes", "parameters", "size_mb", "top1_accuracy", "top5_accuracy", "execution_provider", "labels", "evaluation_json", "evaluated_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATALOG_MODEL_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SIZE_MB_FIELD_NUMBER: _ClassVar[int]
    TOP1_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TOP5_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_JSON_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    catalog_model: str
    family: str
    versions: _containers.RepeatedScalarFieldContainer[int]
    loaded_versions: _containers.RepeatedScalarFieldContainer[int]
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    preprocessing: str
    num_classes: int
    parameters: int
    size_mb: float
    top1_accuracy: float
    top5_accuracy: float
    execution_provider: str
    labels: _containers.RepeatedCompositeFieldContainer[VersionLabel]
    evaluation_json: str
    evaluated_version: int
    def __init__(self, name: _Optional[str] = ..., catalog_model: _Optional[str] = ..., family: _Optional[str] = ..., versions: _Optional[_Iterable[int]] = ..., loaded_versions: _Optional[_Iterable[int]] = ..., input_shape: _Optional[_Iterable[int]] = ..., preprocessing: _Optional[str] = ..., num_classes: _Optional[int] = ..., parameters: _Optional[int] = ..., size_mb: _Optional[float] = ..., top1_accuracy: _Optional[float] = ..., top5_accuracy: _Optional[float] = ..., execution_provider: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[VersionLabel, _Mapping]]] = ..., evaluation_json: _Optional[str] = ..., evaluated_version: _Optional[int] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "version", "images", "top_k", "version_label")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    images: _containers.RepeatedScalarFieldContainer[bytes]
    top_k: int
    version_label: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., images: _Optional[_Iterable[bytes]] = ..., top_k: _Optional[int] = ..., version_label: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("label", "index", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    index: int
    score: float
    def __init__(self, label: _Optional[str] = ..., index: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("model", "version", "results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ...) -> None: ...

class UploadDatasetRequest(_message.Message):
    __slots__ = ("chunk", "filename")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    filename: str
    def __init__(self, chunk: _Optional[bytes] = ..., filename: _Optional[str] = ...) -> None: ...

class SkippedFile(_message.Message):
    __slots__ = ("path", "reason")
    PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    path: str
    reason: str
    def __init__(self, path: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("id", "classes", "counts", "images", "skipped", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    counts: _containers.RepeatedScalarFieldContainer[int]
    images: int
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedFile]
    created_at: str
    def __init__(self, id: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., counts: _Optional[_Iterable[int]] = ..., images: _Optional[int] = ..., skipped: _Optional[_Iterable[_Union[SkippedFile, _Mapping]]] = ..., created_at: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FineTuneParams(_message.Message):
    __slots__ = ("epochs", "fine_tune_epochs", "learning_rate", "fine_tune_learning_rate", "batch_size", "image_size", "unfreeze", "augment", "validation_split", "patience", "dropout", "seed", "weights", "mixed_precision", "base_kwargs", "promote", "test_split", "split_seed")
    class BaseKwargsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNE_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNE_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    UNFREEZE_FIELD_NUMBER: _ClassVar[int]
    AUGMENT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MIXED_PRECISION_FIELD_NUMBER: _ClassVar[int]
    BASE_KWARGS_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    TEST_SPLIT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_SEED_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    fine_tune_epochs: int
    learning_rate: float
    fine_tune_learning_rate: float
    batch_size: int
    image_size: int
    unfreeze: float
    augment: bool
    validation_split: float
    patience: int
    dropout: float
    seed: int
    weights: str
    mixed_precision: bool
    base_kwargs: _containers.ScalarMap[str, float]
    promote: str
    test_split: float
    split_seed: int
    def __init__(self, epochs: _Optional[int] = ..., fine_tune_epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., fine_tune_learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., image_size: _Optional[int] = ..., unfreeze: _Optional[float] = ..., augment: _Optional[bool] = ..., validation_split: _Optional[float] = ..., patience: _Optional[int] = ..., dropout: _Optional[float] = ..., seed: _Optional[int] = ..., weights: _Optional[str] = ..., mixed_precision: _Optional[bool] = ..., base_kwargs: _Optional[_Mapping[str, float]] = ..., promote: _Optional[str] = ..., test_split: _Optional[float] = ..., split_seed: _Optional[int] = ...) -> None: ...

class CreateFineTuneJobRequest(_message.Message):
    __slots__ = ("base_model", "dataset_id", "output_model", "params", "allow_other_source")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OTHER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    dataset_id: str
    output_model: str
    params: FineTuneParams
    allow_other_source: bool
    def __init__(self, base_model: _Optional[str] = ..., dataset_id: _Optional[str] = ..., output_model: _Optional[str] = ..., params: _Optional[_Union[FineTuneParams, _Mapping]] = ..., allow_other_source: _Optional[bool] = ...) -> None: ...

class CreateExportJobRequest(_message.Message):
    __slots__ = ("model", "weights", "input", "output_model", "version", "allow_other_source")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OTHER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights: str
    input: str
    output_model: str
    version: int
    allow_other_source: bool
    def __init__(self, model: _Optional[str] = ..., weights: _Optional[str] = ..., input: _Optional[str] = ..., output_model: _Optional[str] = ..., version: _Optional[int] = ..., allow_other_source: _Optional[bool] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "kind", "state", "created_at", "updated_at", "started_at", "finished_at", "attempts", "worker", "error", "params_json", "result_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    state: str
    created_at: str
    updated_at: str
    started_at: str
    finished_at: str
    attempts: int
    worker: str
    error: str
    params_json: str
    result_json: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., created_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., started_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., attempts: _Optional[int] = ..., worker: _Optional[str] = ..., error: _Optional[str] = ..., params_json: _Optional[str] = ..., result_json: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: str
    limit: int
    def __init__(self, state: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id", "after_event")
    ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_EVENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    after_event: int
    def __init__(self, id: _Optional[str] = ..., after_event: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "seq", "time", "type", "payload_json")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    seq: int
    time: str
    type: str
    payload_json: str
    def __init__(self, job_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[str] = ..., type: _Optional[str] = ..., payload_json: _Optional[str] = ...) -> None: ...

class VersionLabel(_message.Message):
    __slots__ = ("label", "version")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    label: str
    version: int
    def __init__(self, label: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class LabelChange(_message.Message):
    __slots__ = ("label", "version", "previous", "action", "by", "peer", "at")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    label: str
    version: int
    previous: int
    action: str
    by: str
    peer: str
    at: str
    def __init__(self, label: _Optional[str] = ..., version: _Optional[int] = ..., previous: _Optional[int] = ..., action: _Optional[str] = ..., by: _Optional[str] = ..., peer: _Optional[str] = ..., at: _Optional[str] = ...) -> None: ...

class PromoteVersionRequest(_message.Message):
    __slots__ = ("model", "version", "label", "by")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    label: str
    by: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., label: _Optional[str] = ..., by: _Optional[str] = ...) -> None: ...

class RollbackLabelRequest(_message.Message):
    __slots__ = ("model", "label", "by")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    model: str
    label: str
    by: str
    def __init__(self, model: _Optional[str] = ..., label: _Optional[str] = ..., by: _Optional[str] = ...) -> None: ...

class ListLabelsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelLabels(_message.Message):
    __slots__ = ("model", "labels", "history", "default_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    labels: _containers.RepeatedCompositeFieldContainer[VersionLabel]
    history: _containers.RepeatedCompositeFieldContainer[LabelChange]
    default_version: int
    def __init__(self, model: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[VersionLabel, _Mapping]]] = ..., history: _Optional[_Iterable[_Union[LabelChange, _Mapping]]] = ..., default_version: _Optional[int] = ...) -> None: ...

class GetTrainingLogsRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class TrainingLogs(_message.Message):
    __slots__ = ("job_id", "tar_gz", "files")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TAR_GZ_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tar_gz: bytes
    files: int
    def __init__(self, job_id: _Optional[str] = ..., tar_gz: _Optional[bytes] = ..., files: _Optional[int] = ...) -> None: ...

class CreateSearchJobRequest(_message.Message):
    __slots__ = ("base_model", "dataset_id", "output_model", "params", "space_json", "strategy", "trials", "promote", "seed", "early_stopping", "min_trials", "allow_other_source", "parallel")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SPACE_JSON_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_FIELD_NUMBER: _ClassVar[int]
    MIN_TRIALS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_OTHER_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    dataset_id: str
    output_model: str
    params: FineTuneParams
    space_json: str
    strategy: str
    trials: int
    promote: str
    seed: int
    early_stopping: str
    min_trials: int
    allow_other_source: bool
    parallel: int
    def __init__(self, base_model: _Optional[str] = ..., dataset_id: _Optional[str] = ..., output_model: _Optional[str] = ..., params: _Optional[_Union[FineTuneParams, _Mapping]] = ..., space_json: _Optional[str] = ..., strategy: _Optional[str] = ..., trials: _Optional[int] = ..., promote: _Optional[str] = ..., seed: _Optional[int] = ..., early_stopping: _Optional[str] = ..., min_trials: _Optional[int] = ..., allow_other_source: _Optional[bool] = ..., parallel: _Optional[int] = ...) -> None: ...
