"""Immutable, versioned xDS snapshots, after go-control-plane's ``Snapshot``.

``SharedResources.build`` turns the routing state and the registered endpoints into the
route configuration, clusters and load assignments every node shares, and checks them
for consistency (every referenced cluster exists, every EDS cluster has endpoints, names
are unique) before anything is published. ``Snapshot.for_node`` adds the node's own
listener. Resources are packed into ``Any`` and serialized once here, and each type's
DiscoveryResponse body (all but the nonce) is encoded once per snapshot and subscription:
with hundreds of nodes, serializing per push would dominate the control plane's CPU.

A type's version is a hash of its content: it changes exactly when the content does, so a
weight change re-sends the route configuration alone, and an unchanged cluster list is
never pushed again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from .errors import ConsistencyError
from .resources import (
    CLUSTER, ENDPOINT, LISTENER, ROUTE, ROUTE_CONFIG_NAME, Any, clusters, listener, load_assignments,
    referenced_clusters, route_configuration,
)
from .routing import Route

__all__ = ["SharedResources", "Snapshot", "encode_field"]

DEFAULT_LISTEN = ("127.0.0.1", 15001)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field; a message is the concatenation of its fields."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# DiscoveryResponse field numbers (envoy/service/discovery/v3/discovery.proto)
_VERSION_INFO, _RESOURCES, _TYPE_URL = 1, 2, 4


def _version(packed: tuple[tuple[str, bytes], ...]) -> str:
    digest = hashlib.sha256()
    for name, resource in packed:
        digest.update(name.encode())
        digest.update(resource)
    return digest.hexdigest()[:16]


def _pack(named: list[tuple[str, object]]) -> tuple[tuple[str, bytes], ...]:
    """(name, serialized ``Any``) per resource; duplicate names are inconsistent."""
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ConsistencyError(f"duplicate resource names: {sorted({n for n in names if names.count(n) > 1})}")
    return tuple((n, bytes(Any.pack(m))) for n, m in named)


@dataclass(frozen=True)
class SharedResources:
    state_version: int
    resources: Mapping[str, tuple[tuple[str, bytes], ...]]
    versions: Mapping[str, str]

    @classmethod
    def build(cls, state_version: int, routes: dict[str, Route],
              registered: dict[tuple[str, str], list[tuple[str, int, int | None]]]) -> "SharedResources":
        cluster_list = clusters(routes)
        assignments = load_assignments(routes, registered)
        known = {c.name for c in cluster_list}
        missing = referenced_clusters(routes) - known
        if missing:
            raise ConsistencyError(f"routes reference clusters that do not exist: {sorted(missing)}")
        unassigned = known - {a.cluster_name for a in assignments}
        if unassigned:
            raise ConsistencyError(f"EDS clusters without a load assignment: {sorted(unassigned)}")
        packed = {
            ROUTE: _pack([(ROUTE_CONFIG_NAME, route_configuration(routes, state_version))]),
            CLUSTER: _pack([(c.name, c) for c in cluster_list]),
            ENDPOINT: _pack([(a.cluster_name, a) for a in assignments]),
        }
        versions = {t: _version(p) for t, p in packed.items()}
        return cls(state_version, MappingProxyType(packed), MappingProxyType(versions))


@dataclass(frozen=True)
class Snapshot:
    """Everything one node is told: the shared resources plus its listener."""

    state_version: int
    resources: Mapping[str, tuple[tuple[str, bytes], ...]]
    versions: Mapping[str, str]
    _encoded: dict = field(default_factory=dict, compare=False, repr=False)  # memo, derived

    @classmethod
    def for_node(cls, shared: SharedResources, listen: tuple[str, int] | None) -> "Snapshot":
        packed = _pack([(listener(listen or DEFAULT_LISTEN).name, listener(listen or DEFAULT_LISTEN))])
        resources = {**shared.resources, LISTENER: packed}
        versions = {**shared.versions, LISTENER: _version(packed)}
        return cls(shared.state_version, MappingProxyType(resources), MappingProxyType(versions))

    def response_body(self, type_url: str, names: frozenset[str]) -> bytes:
        """The encoded DiscoveryResponse for a type, but its nonce: version_info, the
        resources (for EDS and RDS only those subscribed by name) and type_url."""
        key = (type_url, names if type_url in (ENDPOINT, ROUTE) else frozenset())
        body = self._encoded.get(key)
        if body is None:
            items = self.resources.get(type_url, ())
            if key[1]:
                items = tuple(i for i in items if i[0] in key[1])
            body = b"".join([
                encode_field(_VERSION_INFO, self.versions[type_url].encode()),
                *(encode_field(_RESOURCES, r) for _, r in items),
                encode_field(_TYPE_URL, type_url.encode()),
            ])
            self._encoded[key] = body
        return body
