"""Routing state to standard Envoy v3 resources, so that a stock Envoy and sidemesh's
sidecar read the same routes.

- Listener ``sidemesh_inbound``: the HTTP connection manager with RDS over ADS.
- RouteConfiguration ``sidemesh_routes``: one route per model on ``/v2/models/<model>``
  and its sub-paths, with ``weighted_clusters`` (each adding the hop header naming the
  chosen version, so the proxy it lands on serves locally) and ``request_mirror_policies``.
- A Cluster per (model, version) using EDS over ADS, and its ClusterLoadAssignment.
- What Envoy has no field for (sticky key, stats sampling, answer comparison) travels in
  the route's ``metadata.filter_metadata["sidemesh"]``, which Envoy ignores.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

from .routing import Route

with warnings.catch_warnings():  # envoy-data-plane's generated pydantic models warn on import
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType, ClusterEdsClusterConfig
    from envoy_data_plane.envoy.config.core.v3 import (
        Address, AggregatedConfigSource, ApiVersion, ConfigSource, HeaderValue, HeaderValueOption,
        HeaderValueOptionHeaderAppendAction, Metadata, RuntimeFractionalPercent, SocketAddress,
    )
    from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints
    from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
    from envoy_data_plane.envoy.config.route.v3 import (
        RetryPolicy, RouteAction, RouteActionRequestMirrorPolicy, RouteConfiguration, RouteMatch, VirtualHost,
        WeightedCluster, WeightedClusterClusterWeight,
    )
    from envoy_data_plane.envoy.config.route.v3 import Route as EnvoyRoute
    from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpConnectionManager, HttpFilter, Rds
    from envoy_data_plane.envoy.type.v3 import FractionalPercent, FractionalPercentDenominatorType
    from envoy_data_plane.google.protobuf import Any, Struct

__all__ = [
    "LISTENER", "ROUTE", "CLUSTER", "ENDPOINT", "TYPE_ORDER", "ROUTE_CONFIG_NAME", "LISTENER_NAME", "HOP_HEADER",
    "cluster_name", "listener", "route_configuration", "clusters", "load_assignments", "referenced_clusters",
]

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
# Make-before-break: clusters and their endpoints before the routes that use them.
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

ROUTE_CONFIG_NAME = "sidemesh_routes"
LISTENER_NAME = "sidemesh_inbound"
HOP_HEADER = "x-sidemesh-hop"

_ADS = ConfigSource(ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3)


def cluster_name(model: str, version: str) -> str:
    return f"{model}|{version}"


def _socket(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def listener(address: tuple[str, int]) -> Listener:
    manager = HttpConnectionManager(
        stat_prefix="sidemesh",
        rds=Rds(config_source=_ADS, route_config_name=ROUTE_CONFIG_NAME),
        http_filters=[HttpFilter(name="envoy.filters.http.router", typed_config=Any.pack(Router()))],
    )
    return Listener(
        name=LISTENER_NAME,
        address=_socket(*address),
        filter_chains=[FilterChain(filters=[Filter(name="envoy.filters.network.http_connection_manager", typed_config=Any.pack(manager))])],
    )


def _route(route: Route, state_version: int) -> EnvoyRoute:
    weighted = [
        WeightedClusterClusterWeight(
            name=cluster_name(route.model, b.version),
            weight=b.weight,
            request_headers_to_add=[HeaderValueOption(
                header=HeaderValue(key=HOP_HEADER, value=b.version),
                append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            )],
        )
        for b in route.backends if b.weight > 0
    ]
    mirrors = [
        RouteActionRequestMirrorPolicy(
            cluster=cluster_name(route.model, m.version),
            runtime_fraction=RuntimeFractionalPercent(default_value=FractionalPercent(
                numerator=round(m.percent * 10_000), denominator=FractionalPercentDenominatorType.MILLION,
            )),
        )
        for m in route.mirrors
    ]
    retry = route.retry
    action = RouteAction(
        weighted_clusters=WeightedCluster(clusters=weighted),
        timeout=timedelta(milliseconds=route.timeout_ms),
        retry_policy=RetryPolicy(
            retry_on=",".join(retry.on), num_retries=retry.attempts,
            per_try_timeout=timedelta(milliseconds=retry.per_try_timeout_ms) if retry.per_try_timeout_ms else None,
        ) if retry.attempts else None,
        request_mirror_policies=mirrors,
    )
    knobs = {
        "model": route.model,
        "state_version": state_version,
        "sticky_key": route.sticky_key or "",
        "stats_sample": route.sidecar.stats_sample,
        "compare": route.sidecar.compare,
    }
    return EnvoyRoute(
        name=route.model,
        match=RouteMatch(path_separated_prefix=f"/v2/models/{route.model}"),
        route=action,
        metadata=Metadata(filter_metadata={"sidemesh": Struct.from_dict(knobs)}),
    )


def route_configuration(routes: dict[str, Route], state_version: int) -> RouteConfiguration:
    return RouteConfiguration(
        name=ROUTE_CONFIG_NAME,
        virtual_hosts=[VirtualHost(name="models", domains=["*"], routes=[_route(routes[m], state_version) for m in sorted(routes)])],
    )


def clusters(routes: dict[str, Route]) -> list[Cluster]:
    return [
        Cluster(
            name=cluster_name(model, b.version),
            type=ClusterDiscoveryType.EDS,
            eds_cluster_config=ClusterEdsClusterConfig(eds_config=_ADS),
            connect_timeout=timedelta(seconds=1),
        )
        for model in sorted(routes) for b in routes[model].backends
    ]


def _lb_endpoint(host: str, port: int, grpc_port: int | None) -> LbEndpoint:
    """A sidecar that announced a gRPC inbound carries its port in the endpoint's
    ``filter_metadata["sidemesh"]``, for sidecars forwarding gRPC (Envoy ignores it)."""
    metadata = Metadata(filter_metadata={"sidemesh": Struct.from_dict({"grpc_port": grpc_port})}) if grpc_port else None
    return LbEndpoint(endpoint=Endpoint(address=_socket(host, port)), metadata=metadata)


def load_assignments(routes: dict[str, Route],
                     registered: dict[tuple[str, str], list[tuple[str, int, int | None]]]) -> list[ClusterLoadAssignment]:
    """Static endpoints from the route plus the sidecars registered for each version
    (``(host, port, gRPC port or None)``). Static endpoints have no gRPC port."""
    out = []
    for model in sorted(routes):
        for b in routes[model].backends:
            addresses: dict[tuple[str, int], int | None] = {(h, p): g for h, p, g in registered.get((model, b.version), [])}
            for endpoint in b.endpoints:
                host, _, port = endpoint.rpartition(":")
                addresses.setdefault((host.strip("[]"), int(port)), None)
            out.append(ClusterLoadAssignment(
                cluster_name=cluster_name(model, b.version),
                endpoints=[LocalityLbEndpoints(lb_endpoints=[_lb_endpoint(h, p, g) for (h, p), g in sorted(addresses.items())])],
            ))
    return out


def referenced_clusters(routes: dict[str, Route]) -> set[str]:
    """Every cluster the route configuration points at (weighted targets and mirrors)."""
    names = set()
    for route in routes.values():
        names |= {cluster_name(route.model, b.version) for b in route.backends if b.weight > 0}
        names |= {cluster_name(route.model, m.version) for m in route.mirrors}
    return names
