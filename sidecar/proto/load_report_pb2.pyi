import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UpstreamLocalityStats(_message.Message):
    __slots__ = ("total_successful_requests", "total_requests_in_progress", "total_error_requests", "load_metric_stats", "priority", "total_issued_requests")
    TOTAL_SUCCESSFUL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ERROR_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LOAD_METRIC_STATS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ISSUED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    total_successful_requests: int
    total_requests_in_progress: int
    total_error_requests: int
    load_metric_stats: _containers.RepeatedCompositeFieldContainer[EndpointLoadMetricStats]
    priority: int
    total_issued_requests: int
    def __init__(self, total_successful_requests: _Optional[int] = ..., total_requests_in_progress: _Optional[int] = ..., total_error_requests: _Optional[int] = ..., load_metric_stats: _Optional[_Iterable[_Union[EndpointLoadMetricStats, _Mapping]]] = ..., priority: _Optional[int] = ..., total_issued_requests: _Optional[int] = ...) -> None: ...

class EndpointLoadMetricStats(_message.Message):
    __slots__ = ("metric_name", "num_requests_finished_with_metric", "total_metric_value")
    METRIC_NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_REQUESTS_FINISHED_WITH_METRIC_FIELD_NUMBER: _ClassVar[int]
    TOTAL_METRIC_VALUE_FIELD_NUMBER: _ClassVar[int]
    metric_name: str
    num_requests_finished_with_metric: int
    total_metric_value: float
    def __init__(self, metric_name: _Optional[str] = ..., num_requests_finished_with_metric: _Optional[int] = ..., total_metric_value: _Optional[float] = ...) -> None: ...

class ClusterStats(_message.Message):
    __slots__ = ("cluster_name", "upstream_locality_stats", "total_dropped_requests", "load_report_interval", "cluster_service_name")
    CLUSTER_NAME_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_LOCALITY_STATS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DROPPED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LOAD_REPORT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    cluster_name: str
    upstream_locality_stats: _containers.RepeatedCompositeFieldContainer[UpstreamLocalityStats]
    total_dropped_requests: int
    load_report_interval: _duration_pb2.Duration
    cluster_service_name: str
    def __init__(self, cluster_name: _Optional[str] = ..., upstream_locality_stats: _Optional[_Iterable[_Union[UpstreamLocalityStats, _Mapping]]] = ..., total_dropped_requests: _Optional[int] = ..., load_report_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cluster_service_name: _Optional[str] = ...) -> None: ...
