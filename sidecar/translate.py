"""Envoy v3 resources (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment) to the
sidecar's ``RoutingTable``.

Everything is checked here, once per xDS update, so the proxy never meets a value it
cannot use: anything the sidecar cannot apply raises ``ConfigError`` naming the resource
and field (``RouteConfiguration sidemesh_routes: virtual_hosts[0].routes[1].route...``);
the xDS client sends that text back as the NACK's ``error_detail``.

What the sidecar reads, and how it differs from Envoy on purpose:
- Listeners only say which route configurations to read (their HTTP connection manager's
  ``rds.route_config_name``); the sidecar listens where its own flags say.
- Routes are found by model. A route's model is its ``sidemesh.model`` metadata, else its
  ``/v2/models/<model>`` match prefix; routes for any other path are ignored, and so are
  virtual-host domains and header or query matchers (the sidecar serves model traffic
  only). Only the first matching route would ever win in Envoy, so a model routed twice is
  an error rather than a silently shadowed route.
- Envoy's defaults apply where a field is unset: a 15 s route timeout, one retry once a
  retry policy is set, a 5 s connect timeout, outlier ejection after 5 consecutive 5xx for
  30 s (at most 300 s). A route timeout of 0, Envoy's "no timeout", becomes ``NO_TIMEOUT_S``.
- Endpoints whose health status is UNHEALTHY, DRAINING or TIMEOUT are left out (Envoy
  sends them no traffic either); localities and priorities are flattened.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.protobuf.struct_pb2 import Struct

from .errors import ConfigError
from .proto.cluster_pb2 import Cluster as EnvoyCluster
from .proto.core_pb2 import DRAINING, TIMEOUT, UNHEALTHY, Address, Metadata, SocketAddress
from .proto.endpoint_pb2 import ClusterLoadAssignment
from .proto.http_connection_manager_pb2 import HttpConnectionManager
from .proto.percent_pb2 import FractionalPercent
from .proto.route_pb2 import Route, RouteAction, RouteConfiguration
from .table import Cluster, Endpoint, MirrorTarget, ModelRoute, OutlierPolicy, RetryPolicy, RoutingTable, Target
from .xds_resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources, decode

__all__ = ["build_table", "route_config_names", "NO_TIMEOUT_S", "DEFAULT_ROUTE_CONFIG", "HOP_HEADER"]

NO_TIMEOUT_S = 86_400.0  # stands in for Envoy's timeout 0 ("none"): a day
DEFAULT_ROUTE_CONFIG = "sidemesh_routes"  # read when no listener names one
HOP_HEADER = b"x-sidemesh-hop"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
MODEL_PREFIX = "/v2/models/"

_ROUTE_TIMEOUT_S = 15.0
_CONNECT_TIMEOUT_S = 5.0
_OUTLIER = OutlierPolicy()  # Envoy's defaults: 5 consecutive 5xx, 30 s, at most 300 s
_SKIPPED = frozenset({UNHEALTHY, DRAINING, TIMEOUT})
_PER_MILLION = {FractionalPercent.HUNDRED: 10_000, FractionalPercent.TEN_THOUSAND: 100, FractionalPercent.MILLION: 1}
_DISCOVERY = {v: k for k, v in EnvoyCluster.DiscoveryType.items()}
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP header name


def build_table(resources: Resources, versions: Mapping[str, str]) -> RoutingTable:
    """The table for the resources accepted per type (``{type_url: {name: message or
    bytes}}``); ``versions`` are the xDS versions they came with."""
    names = route_config_names(resources.get(LISTENER, {}))
    endpoints = {name: _assignment(name, value) for name, value in resources.get(ENDPOINT, {}).items()}
    clusters = {name: _cluster(name, value, endpoints) for name, value in sorted(resources.get(CLUSTER, {}).items())}
    routes: dict[str, ModelRoute] = {}
    where: dict[str, str] = {}
    for name, value in sorted(resources.get(ROUTE, {}).items()):
        if name not in names:
            continue  # not subscribed: Envoy ignores it too
        for at, route in _route_configuration(name, decode(ROUTE, value)):
            if route.model in routes:
                raise ConfigError(at, f"routes model {route.model!r} again (first at {where[route.model]})")
            routes[route.model], where[route.model] = route, at
    return RoutingTable(routes=routes, clusters=clusters, versions=dict(versions), source="xds")


def route_config_names(listeners: Mapping[str, object]) -> frozenset[str]:
    """The route configurations the listeners' HTTP connection managers read over RDS;
    ``DEFAULT_ROUTE_CONFIG`` when there is no listener (yet)."""
    names: set[str] = set()
    for name, value in sorted(listeners.items()):
        listener = decode(LISTENER, value)
        for i, chain in enumerate(listener.filter_chains):
            for j, network_filter in enumerate(chain.filters):
                if network_filter.typed_config.type_url != HCM_TYPE:
                    continue  # other network filters route nothing the sidecar serves
                at = f"Listener {name}: filter_chains[{i}].filters[{j}].typed_config"
                try:
                    manager = HttpConnectionManager.FromString(network_filter.typed_config.value)
                except DecodeError as exc:
                    raise ConfigError(at, f"cannot parse the HttpConnectionManager: {exc}") from None
                kind = manager.WhichOneof("route_specifier")
                if kind == "route_config":
                    raise ConfigError(f"{at}.route_config", "inline route configurations are not supported; serve them over RDS")
                if kind != "rds":
                    raise ConfigError(at, "names no route configuration; expected rds (scoped routes are not supported)")
                if not manager.rds.route_config_name:
                    raise ConfigError(f"{at}.rds.route_config_name", "is empty")
                names.add(manager.rds.route_config_name)
    return frozenset(names or {DEFAULT_ROUTE_CONFIG})


# --- routes ---------------------------------------------------------------------------------


def _route_configuration(name: str, config: RouteConfiguration) -> list[tuple[str, ModelRoute]]:
    out = []
    for v, host in enumerate(config.virtual_hosts):
        for r, route in enumerate(host.routes):
            at = f"RouteConfiguration {name}: virtual_hosts[{v}].routes[{r}]"
            model_route = _route(route, at)
            if model_route is not None:
                out.append((at, model_route))
    return out


def _route(route: Route, at: str) -> ModelRoute | None:
    knobs = _knobs(route.metadata, f"{at}.metadata.filter_metadata.sidemesh")
    model = knobs.get("model") or _model_of(route)
    if model is None:
        return None
    if route.WhichOneof("action") != "route":
        raise ConfigError(f"{at}", "has no route action; the sidecar only forwards (redirect and direct_response are not supported)")
    action = route.route
    sticky = knobs.get("sticky_key")
    return ModelRoute(
        model=model,
        targets=_targets(model, action, f"{at}.route"),
        mirrors=tuple(_mirrors(model, action, f"{at}.route")),
        timeout_s=_timeout(action, f"{at}.route.timeout"),
        retry=_retry(action, f"{at}.route.retry_policy"),
        sticky_key=sticky.lower().encode() if sticky else None,
        stats_sample=knobs.get("stats_sample", 1.0),
        compare=knobs.get("compare", True),
        state_version=knobs.get("state_version"),
    )


def _model_of(route: Route) -> str | None:
    """``<model>`` of a ``/v2/models/<model>`` prefix match; None for other paths."""
    kind = route.match.WhichOneof("path_specifier")
    if kind not in ("prefix", "path_separated_prefix"):
        return None
    path = getattr(route.match, kind)
    if not path.startswith(MODEL_PREFIX):
        return None
    model = path[len(MODEL_PREFIX):]
    model = model.rstrip("/") if kind == "prefix" else model
    return model if model and "/" not in model else None


# name -> (the Value field it must use, check, what to say when the check fails)
_KNOBS = {
    "model": ("string_value", lambda v: "/" not in v, "a model name"),
    "state_version": ("number_value", lambda v: math.isfinite(v) and v >= 0 and v == int(v), "a whole number >= 0"),
    "sticky_key": ("string_value", lambda v: v == "" or bool(_TOKEN.match(v)), "an HTTP header name or \"\""),
    "stats_sample": ("number_value", lambda v: 0 <= v <= 1, "a share between 0 and 1"),
    "compare": ("bool_value", lambda v: True, "true or false"),
}


def _knobs(metadata: Metadata, at: str) -> dict:
    """The sidecar's own knobs from ``filter_metadata["sidemesh"]`` (absent or null keys
    keep their defaults; unknown keys are ignored for forward compatibility)."""
    struct = metadata.filter_metadata.get("sidemesh")
    out: dict = {}
    if struct is None:
        return out
    for key, (kind, check, expected) in _KNOBS.items():
        value = struct.fields.get(key)
        if value is None or value.WhichOneof("kind") == "null_value":
            continue
        raw = getattr(value, kind) if value.WhichOneof("kind") == kind else None
        if raw is None or not check(raw):
            raise ConfigError(f"{at}.{key}", f"expected {expected}, got {_show(value)}")
        out[key] = int(raw) if key == "state_version" else raw
    return out


def _show(value) -> str:
    kind = value.WhichOneof("kind")
    return repr(getattr(value, kind)) if kind in ("string_value", "number_value", "bool_value") else (kind or "nothing")


def _targets(model: str, action: RouteAction, at: str) -> tuple[Target, ...]:
    kind = action.WhichOneof("cluster_specifier")
    if kind == "cluster":
        if not action.cluster:
            raise ConfigError(f"{at}.cluster", "is empty")
        return (Target(version=_version(model, action.cluster), cluster=action.cluster, weight=1),)
    if kind == "cluster_header":
        raise ConfigError(f"{at}.cluster_header", "is not supported; use cluster or weighted_clusters")
    if kind != "weighted_clusters":
        raise ConfigError(at, "names no cluster; expected cluster or weighted_clusters")
    targets, total, versions = [], 0, set()
    for i, weighted in enumerate(action.weighted_clusters.clusters):
        w = f"{at}.weighted_clusters.clusters[{i}]"
        if not weighted.name:
            raise ConfigError(f"{w}.name", "is empty" + ("; cluster_header is not supported" if weighted.cluster_header else ""))
        headers = _headers(weighted.request_headers_to_add, f"{w}.request_headers_to_add")
        version = _version(model, weighted.name, headers)
        if version in versions:
            raise ConfigError(f"{w}.name", f"version {version!r} is listed twice")
        versions.add(version)
        total += weighted.weight.value
        if weighted.weight.value:  # a weight-0 cluster is never picked
            targets.append(Target(version=version, cluster=weighted.name, weight=weighted.weight.value, headers=headers))
    if total == 0:
        raise ConfigError(f"{at}.weighted_clusters", "total weight is 0" if versions else "lists no clusters")
    return tuple(targets)


def _version(model: str, cluster: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> str:
    """The version a cluster serves: from ``model|version``, else the hop header the route
    adds for it, else the cluster's own name."""
    prefix, sep, version = cluster.partition("|")
    if sep and prefix == model and version:
        return version
    for name, value in headers:
        if name == HOP_HEADER and value:
            return value.decode("latin-1")
    return cluster


def _headers(options, at: str) -> tuple[tuple[bytes, bytes], ...]:
    out = []
    for i, option in enumerate(options):
        key, value = option.header.key, option.header.value or option.header.raw_value.decode("latin-1")
        if not _TOKEN.match(key):
            raise ConfigError(f"{at}[{i}].header.key", f"expected an HTTP header name (no pseudo-headers), got {key!r}")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ConfigError(f"{at}[{i}].header.value", "contains a line break or NUL")
        out.append((key.lower().encode("ascii"), value.encode("latin-1", "replace")))
    return tuple(out)


def _mirrors(model: str, action: RouteAction, at: str):
    for i, policy in enumerate(action.request_mirror_policies):
        w = f"{at}.request_mirror_policies[{i}]"
        if not policy.cluster:
            raise ConfigError(f"{w}.cluster", "is empty" + ("; cluster_header is not supported" if policy.cluster_header else ""))
        per_million = 1_000_000  # Envoy mirrors every request when no fraction is given
        if policy.HasField("runtime_fraction"):
            if not policy.runtime_fraction.HasField("default_value"):
                raise ConfigError(f"{w}.runtime_fraction.default_value", "is required")
            per_million = _per_million(policy.runtime_fraction.default_value, f"{w}.runtime_fraction.default_value")
        yield MirrorTarget(version=_version(model, policy.cluster), cluster=policy.cluster, per_million=per_million)


def _per_million(fraction: FractionalPercent, at: str) -> int:
    scale = _PER_MILLION.get(fraction.denominator)
    if scale is None:
        raise ConfigError(f"{at}.denominator", f"unknown denominator {fraction.denominator}")
    per_million = fraction.numerator * scale
    if per_million > 1_000_000:
        name = FractionalPercent.DenominatorType.Name(fraction.denominator)
        raise ConfigError(at, f"{fraction.numerator}/{name} is more than 100%")
    return per_million


def _seconds(duration: Duration, at: str) -> float:
    seconds = duration.seconds + duration.nanos / 1e9
    if seconds < 0:
        raise ConfigError(at, f"expected a duration >= 0, got {seconds:g} s")
    return seconds


def _timeout(action: RouteAction, at: str) -> float:
    if not action.HasField("timeout"):
        return _ROUTE_TIMEOUT_S
    return _seconds(action.timeout, at) or NO_TIMEOUT_S


def _retry(action: RouteAction, at: str) -> RetryPolicy:
    if not action.HasField("retry_policy"):
        return RetryPolicy()
    policy = action.retry_policy
    per_try = _seconds(policy.per_try_timeout, f"{at}.per_try_timeout") if policy.HasField("per_try_timeout") else 0.0
    return RetryPolicy(
        on=frozenset(c.strip() for c in policy.retry_on.split(",") if c.strip()),
        retries=policy.num_retries.value if policy.HasField("num_retries") else 1,
        per_try_timeout_s=per_try or None,
    )


# --- clusters and endpoints -----------------------------------------------------------------


def _cluster(name: str, value, assignments: Mapping[str, tuple[Endpoint, ...]]) -> Cluster:
    cluster = decode(CLUSTER, value)
    at = f"Cluster {name}"
    kind = _DISCOVERY.get(cluster.type, str(cluster.type))
    if kind == "EDS":
        endpoints = assignments.get(name, ())  # until its assignment arrives: none
    elif kind in ("STATIC", "STRICT_DNS", "LOGICAL_DNS"):  # asyncio resolves host names
        endpoints = _endpoints(cluster.load_assignment, f"{at}: load_assignment.")
    else:
        raise ConfigError(f"{at}: type", f"{kind} clusters are not supported; use EDS, STATIC, STRICT_DNS or LOGICAL_DNS")
    connect_timeout = _CONNECT_TIMEOUT_S
    if cluster.HasField("connect_timeout"):
        connect_timeout = _seconds(cluster.connect_timeout, f"{at}: connect_timeout")
        if connect_timeout == 0:
            raise ConfigError(f"{at}: connect_timeout", "must be greater than 0")
    outlier = _outlier(cluster, f"{at}: outlier_detection") if cluster.HasField("outlier_detection") else None
    return Cluster(name=name, endpoints=endpoints, connect_timeout_s=connect_timeout, outlier=outlier)


def _outlier(cluster: EnvoyCluster, at: str) -> OutlierPolicy:
    detection = cluster.outlier_detection
    consecutive = detection.consecutive_5xx.value if detection.HasField("consecutive_5xx") else _OUTLIER.consecutive_5xx
    if consecutive < 1:
        raise ConfigError(f"{at}.consecutive_5xx", "must be at least 1")
    base = _OUTLIER.base_ejection_s
    if detection.HasField("base_ejection_time"):
        base = _seconds(detection.base_ejection_time, f"{at}.base_ejection_time")
        if base == 0:
            raise ConfigError(f"{at}.base_ejection_time", "must be greater than 0")
    # Envoy: unset, the larger of 300 s and the base ejection time
    longest = max(_OUTLIER.max_ejection_s, base)
    if detection.HasField("max_ejection_time"):
        longest = _seconds(detection.max_ejection_time, f"{at}.max_ejection_time")
        if longest < base:
            raise ConfigError(f"{at}.max_ejection_time", f"{longest:g} s is shorter than base_ejection_time ({base:g} s)")
    return OutlierPolicy(consecutive_5xx=consecutive, base_ejection_s=base, max_ejection_s=longest)


def _assignment(name: str, value) -> tuple[Endpoint, ...]:
    assignment: ClusterLoadAssignment = decode(ENDPOINT, value)
    return _endpoints(assignment, f"ClusterLoadAssignment {name}: ")


def _endpoints(assignment: ClusterLoadAssignment, at: str) -> tuple[Endpoint, ...]:
    """``at`` ends where the field path starts ("ClusterLoadAssignment m|v1: ")."""
    found: dict[tuple[str, int], Endpoint] = {}
    for i, group in enumerate(assignment.endpoints):
        for j, lb in enumerate(group.lb_endpoints):
            w = f"{at}endpoints[{i}].lb_endpoints[{j}]"
            if not lb.HasField("endpoint"):
                raise ConfigError(f"{w}.endpoint", "is required (named endpoints are not supported)")
            host, port = _address(lb.endpoint.address, f"{w}.endpoint.address")
            grpc_port = _grpc_port(lb.metadata, f"{w}.metadata.filter_metadata.sidemesh.grpc_port")
            if lb.health_status not in _SKIPPED:
                found.setdefault((host, port), Endpoint(host, port, grpc_port))
    return tuple(found.values())


def _address(address: Address, at: str) -> tuple[str, int]:
    if address.WhichOneof("address") != "socket_address":
        raise ConfigError(at, "expected a socket_address (pipes and internal addresses are not supported)")
    socket = address.socket_address
    at = f"{at}.socket_address"
    if socket.protocol != SocketAddress.TCP:
        raise ConfigError(f"{at}.protocol", "only TCP is supported")
    if not socket.address:
        raise ConfigError(f"{at}.address", "is empty")
    if socket.WhichOneof("port_specifier") == "named_port":
        raise ConfigError(f"{at}.named_port", "is not supported; use port_value")
    if not 1 <= socket.port_value <= 65535:
        raise ConfigError(f"{at}.port_value", f"expected a port 1-65535, got {socket.port_value}")
    return socket.address, socket.port_value


def _grpc_port(metadata: Metadata, at: str) -> int | None:
    struct: Struct | None = metadata.filter_metadata.get("sidemesh")
    value = struct.fields.get("grpc_port") if struct is not None else None
    if value is None or value.WhichOneof("kind") == "null_value":
        return None
    port = value.number_value if value.WhichOneof("kind") == "number_value" else -1
    if not math.isfinite(port) or port != int(port) or not 1 <= port <= 65535:
        raise ConfigError(at, f"expected a port 1-65535, got {_show(value)}")
    return int(port)
