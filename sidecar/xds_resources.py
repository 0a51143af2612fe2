"""The four xDS resource types the sidecar subscribes to: type URLs, message classes, and
unpacking a response's ``Any`` into a named message.

Parsing uses the trimmed protos in ``sidecar/proto`` (google.protobuf classes), never
envoy-data-plane: the sidecar must stay small.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Union

from google.protobuf.any_pb2 import Any
from google.protobuf.message import DecodeError, Message

from .errors import ConfigError
from .proto.cluster_pb2 import Cluster
from .proto.endpoint_pb2 import ClusterLoadAssignment
from .proto.listener_pb2 import Listener
from .proto.route_pb2 import RouteConfiguration

__all__ = [
    "LISTENER", "ROUTE", "CLUSTER", "ENDPOINT", "TYPE_URLS", "KIND", "Resources",
    "decode", "decode_all", "resource_name",
]

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
# Every type the sidecar reads, in the control plane's make-before-break order.
TYPE_URLS = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

_CLASSES: dict[str, type[Message]] = {
    LISTENER: Listener, ROUTE: RouteConfiguration, CLUSTER: Cluster, ENDPOINT: ClusterLoadAssignment,
}
# Short names for error messages: "RouteConfiguration sidemesh_routes: ..."
KIND = {t: cls.DESCRIPTOR.name for t, cls in _CLASSES.items()}

# type_url -> {resource name -> message (or its serialized bytes)}
Resources = Mapping[str, Mapping[str, Union[Message, bytes]]]


def resource_name(message: Message) -> str:
    """A resource's name as xDS keys it: ``cluster_name`` for load assignments."""
    return message.cluster_name if isinstance(message, ClusterLoadAssignment) else message.name


def decode(type_url: str, value: Message | bytes) -> Message:
    """A parsed message of ``type_url`` from its bytes (a message passes through)."""
    cls = _CLASSES.get(type_url)
    if cls is None:
        raise ConfigError("", f"unsupported resource type {type_url!r}")
    if isinstance(value, cls):
        return value
    if not isinstance(value, (bytes, bytearray)):
        raise ConfigError(KIND[type_url], f"expected a {cls.DESCRIPTOR.full_name}, got {type(value).__name__}")
    try:
        return cls.FromString(value)
    except DecodeError as exc:
        raise ConfigError(KIND[type_url], f"cannot parse the resource: {exc}") from None


def decode_all(type_url: str, resources: Iterable[Any]) -> dict[str, Message]:
    """A DiscoveryResponse's resources by name; every one must be of the response's type
    and names must be unique."""
    out: dict[str, Message] = {}
    for i, packed in enumerate(resources):
        if packed.type_url != type_url:
            raise ConfigError(f"resources[{i}]", f"type_url is {packed.type_url!r} in a response for {type_url!r}")
        message = decode(type_url, packed.value)
        name = resource_name(message)
        if not name:
            raise ConfigError(f"{KIND[type_url]} resources[{i}]", "has no name")
        if name in out:
            raise ConfigError(f"{KIND[type_url]} {name}", "appears twice in one response")
        out[name] = message
    return out
