"""The routing table a sidecar serves from: one immutable value, swapped whole.

The xDS client translates the control plane's Listener, RouteConfiguration, Clusters and
ClusterLoadAssignments into a ``RoutingTable`` and replaces the proxy's reference in one
assignment, so a request sees either the old configuration or the new one, never a mix.
Everything a request needs is precomputed here (cumulative weights, lower-cased header
bytes), so picking a version is a bisect, not a walk over resources.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass, field
from typing import Mapping

__all__ = [
    "Endpoint", "OutlierPolicy", "Cluster", "Target", "MirrorTarget", "RetryPolicy", "ModelRoute", "RoutingTable",
    "cluster_name", "static_table", "sticky_point",
]


def cluster_name(model: str, version: str) -> str:
    """The control plane names a (model, version) backend's cluster ``model|version``."""
    return f"{model}|{version}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Another sidecar (or a static backend): its HTTP address and, when it announced one,
    its gRPC port."""

    host: str
    port: int
    grpc_port: int | None = None


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """Eject an endpoint after ``consecutive_5xx`` failures in a row for
    ``base_ejection_s`` times the number of times it was ejected (capped), as Envoy does."""

    consecutive_5xx: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    endpoints: tuple[Endpoint, ...] = ()
    connect_timeout_s: float = 1.0
    outlier: OutlierPolicy | None = None  # None: the sidecar's own default


@dataclass(frozen=True, slots=True)
class Target:
    """One weighted destination of a route; ``headers`` are added to the forwarded request
    (the hop mark), names lower-case."""

    version: str
    cluster: str
    weight: int
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class MirrorTarget:
    version: str
    cluster: str
    per_million: int  # share of requests copied, in parts per million


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    on: frozenset[str] = frozenset()  # Envoy retry_on names: connect-failure, reset, 5xx, gateway-error, ...
    retries: int = 0
    per_try_timeout_s: float | None = None


_MAX_HASH = 1 << 64


def sticky_point(key: bytes, total: int) -> int:
    """Map a sticky key onto [0, total). Scaling (not modulo) keeps most keys where they
    were when the weights change, and a 64-bit hash keeps shares matching the weights."""
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return (h * total) >> 64


@dataclass(frozen=True, slots=True)
class ModelRoute:
    model: str
    targets: tuple[Target, ...]
    mirrors: tuple[MirrorTarget, ...] = ()
    timeout_s: float = 30.0
    retry: RetryPolicy = RetryPolicy()
    sticky_key: bytes | None = None  # lower-case header name
    stats_sample: float = 1.0
    compare: bool = True
    state_version: int | None = None
    _bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _by_version: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bounds, running = [], 0
        for target in self.targets:
            running += target.weight
            bounds.append(running)
        object.__setattr__(self, "_bounds", tuple(bounds))
        object.__setattr__(self, "_by_version", {t.version: t for t in self.targets})

    @property
    def total_weight(self) -> int:
        return self._bounds[-1] if self._bounds else 0

    def pick_point(self, point: int) -> Target:
        """The target whose cumulative weight range holds ``point`` (0 <= point < total)."""
        return self.targets[bisect.bisect_right(self._bounds, point)]

    def pick(self, rand=random.random) -> Target:
        return self.pick_point(int(rand() * self.total_weight))

    def pick_sticky(self, key: bytes) -> Target:
        return self.pick_point(sticky_point(key, self.total_weight))

    def target(self, version: str) -> Target | None:
        return self._by_version.get(version)


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Routes by model and clusters by name, with the xDS version applied per type."""

    routes: Mapping[str, ModelRoute]
    clusters: Mapping[str, Cluster]
    versions: Mapping[str, str]  # type_url -> version_info applied ("static" for the fallback)
    source: str = "xds"  # "xds" or "static"

    def to_dict(self) -> dict:
        """For the admin port's ``/config_dump``."""
        return {
            "source": self.source,
            "versions": dict(self.versions),
            "routes": {
                m: {
                    "targets": [{"version": t.version, "cluster": t.cluster, "weight": t.weight} for t in r.targets],
                    "mirrors": [{"version": x.version, "cluster": x.cluster, "per_million": x.per_million} for x in r.mirrors],
                    "timeout_s": r.timeout_s,
                    "retry": {"on": sorted(r.retry.on), "retries": r.retry.retries, "per_try_timeout_s": r.retry.per_try_timeout_s},
                    "sticky_key": r.sticky_key.decode() if r.sticky_key else None,
                    "stats_sample": r.stats_sample,
                    "compare": r.compare,
                    "state_version": r.state_version,
                }
                for m, r in sorted(self.routes.items())
            },
            "clusters": {
                n: {"endpoints": [f"{e.host}:{e.port}" + (f" grpc:{e.grpc_port}" if e.grpc_port else "") for e in c.endpoints]}
                for n, c in sorted(self.clusters.items())
            },
        }


def static_table(model: str, version: str) -> RoutingTable:
    """The fallback for running without a control plane: every request for ``model`` goes to
    the local upstream (other models' requests go there too, as with no route at all)."""
    name = cluster_name(model, version)
    route = ModelRoute(model=model, targets=(Target(version=version, cluster=name, weight=1),))
    return RoutingTable(routes={model: route}, clusters={name: Cluster(name)}, versions={}, source="static")
