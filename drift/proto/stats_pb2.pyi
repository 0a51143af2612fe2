from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatsReport(_message.Message):
    __slots__ = ("source", "sequence", "start_unix", "end_unix", "inputs", "dropped_reports")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_REPORTS_FIELD_NUMBER: _ClassVar[int]
    source: str
    sequence: int
    start_unix: float
    end_unix: float
    inputs: _containers.RepeatedCompositeFieldContainer[InputStats]
    dropped_reports: int
    def __init__(self, source: _Optional[str] = ..., sequence: _Optional[int] = ..., start_unix: _Optional[float] = ..., end_unix: _Optional[float] = ..., inputs: _Optional[_Iterable[_Union[InputStats, _Mapping]]] = ..., dropped_reports: _Optional[int] = ...) -> None: ...

class InputStats(_message.Message):
    __slots__ = ("model", "version", "input", "datatype", "rows", "features", "feature_names")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    input: str
    datatype: str
    rows: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureStats]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., input: _Optional[str] = ..., datatype: _Optional[str] = ..., rows: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureStats, _Mapping]]] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class FeatureStats(_message.Message):
    __slots__ = ("index", "count", "missing", "mean", "m2", "min", "max", "kll", "categories", "other", "categorical")
    class CategoriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    M2_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    KLL_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    index: int
    count: int
    missing: int
    mean: float
    m2: float
    min: float
    max: float
    kll: bytes
    categories: _containers.ScalarMap[str, int]
    other: int
    categorical: bool
    def __init__(self, index: _Optional[int] = ..., count: _Optional[int] = ..., missing: _Optional[int] = ..., mean: _Optional[float] = ..., m2: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., kll: _Optional[bytes] = ..., categories: _Optional[_Mapping[str, int]] = ..., other: _Optional[int] = ..., categorical: bool = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ("sequence", "error")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    error: str
    def __init__(self, sequence: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...
