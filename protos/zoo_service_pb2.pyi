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
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "catalog_model", "family", "versions", "loaded_versions", "input_shape", "preprocessing", "num_classes", "parameters", "size_mb", "top1_accuracy", "top5_accuracy", "execution_provider")
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
    def __init__(self, name: _Optional[str] = ..., catalog_model: _Optional[str] = ..., family: _Optional[str] = ..., versions: _Optional[_Iterable[int]] = ..., loaded_versions: _Optional[_Iterable[int]] = ..., input_shape: _Optional[_Iterable[int]] = ..., preprocessing: _Optional[str] = ..., num_classes: _Optional[int] = ..., parameters: _Optional[int] = ..., size_mb: _Optional[float] = ..., top1_accuracy: _Optional[float] = ..., top5_accuracy: _Optional[float] = ..., execution_provider: _Optional[str] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "version", "images", "top_k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    images: _containers.RepeatedScalarFieldContainer[bytes]
    top_k: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., images: _Optional[_Iterable[bytes]] = ..., top_k: _Optional[int] = ...) -> None: ...

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
