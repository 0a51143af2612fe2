from sidecar.proto import route_pb2 as _route_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Rds(_message.Message):
    __slots__ = ("route_config_name",)
    ROUTE_CONFIG_NAME_FIELD_NUMBER: _ClassVar[int]
    route_config_name: str
    def __init__(self, route_config_name: _Optional[str] = ...) -> None: ...

class HttpConnectionManager(_message.Message):
    __slots__ = ("stat_prefix", "rds", "route_config")
    STAT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    RDS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    stat_prefix: str
    rds: Rds
    route_config: _route_pb2.RouteConfiguration
    def __init__(self, stat_prefix: _Optional[str] = ..., rds: _Optional[_Union[Rds, _Mapping]] = ..., route_config: _Optional[_Union[_route_pb2.RouteConfiguration, _Mapping]] = ...) -> None: ...
