"""Envoy resources to the routing table: what the control plane sends becomes the table the
proxy routes by, and anything the sidecar cannot apply is refused naming the field."""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest

from control_plane import resources as cp
from control_plane.routing import Route
from sidecar.errors import ConfigError
from sidecar.table import Endpoint, OutlierPolicy
from sidecar.translate import NO_TIMEOUT_S, build_table, route_config_names
from sidecar.xds_resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType, OutlierDetection
    from envoy_data_plane.envoy.config.core.v3 import (
        Address, HeaderValue, HeaderValueOption, HealthStatus, Metadata, Pipe, RuntimeFractionalPercent, SocketAddress,
    )
    from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints
    from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
    from envoy_data_plane.envoy.config.route.v3 import (
        RedirectAction, RetryPolicy, Route as EnvoyRoute, RouteAction, RouteActionRequestMirrorPolicy, RouteConfiguration,
        RouteMatch, VirtualHost, WeightedCluster, WeightedClusterClusterWeight,
    )
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpConnectionManager, Rds
    from envoy_data_plane.envoy.type.v3 import FractionalPercent, FractionalPercentDenominatorType
    from envoy_data_plane.google.protobuf import Any, Struct

TWO = {"backends": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}


def from_control_plane(docs: dict[str, dict], registered=None, state_version: int = 3) -> dict:
    """The resources our control plane would send for these route documents."""
    routes = {model: Route.from_dict(model, doc) for model, doc in docs.items()}
    return {
        LISTENER: {cp.LISTENER_NAME: bytes(cp.listener(("127.0.0.1", 15001)))},
        ROUTE: {cp.ROUTE_CONFIG_NAME: bytes(cp.route_configuration(routes, state_version))},
        CLUSTER: {c.name: bytes(c) for c in cp.clusters(routes)},
        ENDPOINT: {a.cluster_name: bytes(a) for a in cp.load_assignments(routes, registered or {})},
    }


def with_routes(*routes: EnvoyRoute, name: str = "sidemesh_routes", **others) -> dict:
    config = RouteConfiguration(name=name, virtual_hosts=[VirtualHost(name="models", domains=["*"], routes=list(routes))])
    return {ROUTE: {name: bytes(config)}, **others}


def weighted(*clusters: tuple[str, int], model: str = "m", **action) -> EnvoyRoute:
    return EnvoyRoute(
        match=RouteMatch(path_separated_prefix=f"/v2/models/{model}"),
        route=RouteAction(weighted_clusters=WeightedCluster(clusters=[WeightedClusterClusterWeight(name=n, weight=w) for n, w in clusters]),
                          **action),
    )


def knobs(**values) -> Metadata:
    return Metadata(filter_metadata={"sidemesh": Struct.from_dict(values)})


def socket(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def assignment(name: str, *lb_endpoints: LbEndpoint) -> dict:
    return {ENDPOINT: {name: bytes(ClusterLoadAssignment(cluster_name=name, endpoints=[LocalityLbEndpoints(lb_endpoints=list(lb_endpoints))]))}}


def eds(name: str, **fields) -> dict:
    return {CLUSTER: {name: bytes(Cluster(name=name, type=ClusterDiscoveryType.EDS, **fields))}}


def merged(*parts: dict) -> dict:
    out: dict = {}
    for part in parts:
        for type_url, named in part.items():
            out.setdefault(type_url, {}).update(named)
    return out


def refused(resources: dict) -> str:
    with pytest.raises(ConfigError) as info:
        build_table(resources, {})
    return str(info.value)


# --- what the control plane sends --------------------------------------------------------------


def test_weights_hop_headers_and_versions_come_from_the_weighted_clusters():
    table = build_table(from_control_plane({"tabular": TWO}), {ROUTE: "abc"})
    route = table.routes["tabular"]
    assert [(t.version, t.cluster, t.weight) for t in route.targets] == [("v1", "tabular|v1", 90), ("v2", "tabular|v2", 10)]
    assert route.targets[1].headers == ((b"x-sidemesh-hop", b"v2"),)
    assert table.source == "xds" and table.versions == {ROUTE: "abc"}
    assert route.state_version == 3


def test_a_weight_0_backend_is_never_a_target_but_keeps_its_cluster():
    table = build_table(from_control_plane({"m": {"backends": [{"version": "a", "weight": 1}, {"version": "b", "weight": 0}]}}), {})
    assert [t.version for t in table.routes["m"].targets] == ["a"]
    assert set(table.clusters) == {"m|a", "m|b"}


def test_mirror_percentages_become_parts_per_million():
    doc = {**TWO, "backends": [*TWO["backends"], {"version": "v3", "weight": 0}], "mirrors": [{"version": "v3", "percent": 12.5}]}
    mirror = build_table(from_control_plane({"m": doc}), {}).routes["m"].mirrors[0]
    assert (mirror.version, mirror.cluster, mirror.per_million) == ("v3", "m|v3", 125_000)


@pytest.mark.parametrize("denominator, numerator, per_million", [
    (FractionalPercentDenominatorType.HUNDRED, 7, 70_000),
    (FractionalPercentDenominatorType.TEN_THOUSAND, 7, 700),
    (FractionalPercentDenominatorType.MILLION, 7, 7),
])
def test_every_fraction_denominator_converts(denominator, numerator, per_million):
    policy = RouteActionRequestMirrorPolicy(cluster="m|s", runtime_fraction=RuntimeFractionalPercent(
        default_value=FractionalPercent(numerator=numerator, denominator=denominator)))
    table = build_table(with_routes(weighted(("m|a", 1), request_mirror_policies=[policy])), {})
    assert table.routes["m"].mirrors[0].per_million == per_million


def test_a_mirror_without_a_fraction_copies_every_request():
    table = build_table(with_routes(weighted(("m|a", 1), request_mirror_policies=[RouteActionRequestMirrorPolicy(cluster="m|s")])), {})
    assert table.routes["m"].mirrors[0].per_million == 1_000_000


def test_retry_timeout_and_the_sidecar_knobs():
    doc = {**TWO, "sticky_key": "x-user", "timeout_ms": 2500, "retry": {"attempts": 3, "per_try_timeout_ms": 400, "on": ["5xx", "reset"]},
           "sidecar": {"stats_sample": 0.1, "compare": False}}
    route = build_table(from_control_plane({"m": doc}, state_version=17), {}).routes["m"]
    assert route.timeout_s == 2.5
    assert (route.retry.on, route.retry.retries, route.retry.per_try_timeout_s) == (frozenset({"5xx", "reset"}), 3, 0.4)
    assert (route.sticky_key, route.stats_sample, route.compare, route.state_version) == (b"x-user", 0.1, False, 17)


def test_without_a_sticky_key_or_retries_the_route_has_neither():
    route = build_table(from_control_plane({"m": {**TWO, "retry": {"attempts": 0}}}), {}).routes["m"]
    assert route.sticky_key is None and route.retry.retries == 0


def test_envoy_defaults_fill_unset_fields():
    route = build_table(with_routes(weighted(("m|a", 1), retry_policy=RetryPolicy(retry_on="5xx, reset"))), {}).routes["m"]
    assert route.timeout_s == 15.0  # Envoy's default route timeout
    assert route.retry.retries == 1 and route.retry.on == frozenset({"5xx", "reset"}) and route.retry.per_try_timeout_s is None
    assert (route.sticky_key, route.stats_sample, route.compare, route.state_version) == (None, 1.0, True, None)


def test_a_zero_timeout_means_no_timeout():
    route = build_table(with_routes(weighted(("m|a", 1), timeout=timedelta(0))), {}).routes["m"]
    assert route.timeout_s == NO_TIMEOUT_S


def test_sticky_keys_are_lower_cased_bytes():
    route = weighted(("m|a", 1))
    route.metadata = knobs(sticky_key="X-Session")
    assert build_table(with_routes(route), {}).routes["m"].sticky_key == b"x-session"


def test_registered_sidecars_carry_their_grpc_port_and_static_endpoints_do_not():
    doc = {"backends": [{"version": "v1", "weight": 1, "endpoints": ["10.0.0.9:8000"]}]}
    table = build_table(from_control_plane({"m": doc}, {("m", "v1"): [("10.0.0.1", 15001, 15002), ("10.0.0.2", 15001, None)]}), {})
    assert table.clusters["m|v1"].endpoints == (
        Endpoint("10.0.0.1", 15001, 15002), Endpoint("10.0.0.2", 15001, None), Endpoint("10.0.0.9", 8000, None))


def test_unhealthy_draining_and_timed_out_endpoints_are_left_out():
    lbs = [LbEndpoint(endpoint=EnvoyEndpoint(address=socket("10.0.0.1", 80 + i)), health_status=status)
           for i, status in enumerate([HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, HealthStatus.DRAINING, HealthStatus.TIMEOUT,
                                       HealthStatus.UNKNOWN, HealthStatus.DEGRADED])]
    table = build_table({**eds("m|a"), **assignment("m|a", *lbs)}, {})
    assert [e.port for e in table.clusters["m|a"].endpoints] == [80, 84, 85]


def test_host_names_are_accepted_as_endpoint_addresses():
    table = build_table({**eds("m|a"), **assignment("m|a", LbEndpoint(endpoint=EnvoyEndpoint(address=socket("model-a.svc", 80))))}, {})
    assert table.clusters["m|a"].endpoints == (Endpoint("model-a.svc", 80),)


def test_clusters_read_connect_timeout_and_outlier_detection():
    table = build_table(merged(eds("m|a", connect_timeout=timedelta(milliseconds=300), outlier_detection=OutlierDetection(
        consecutive_5xx=2, base_ejection_time=timedelta(seconds=1), max_ejection_time=timedelta(seconds=8))), eds("m|b")), {})
    assert table.clusters["m|a"].connect_timeout_s == 0.3
    assert table.clusters["m|a"].outlier == OutlierPolicy(consecutive_5xx=2, base_ejection_s=1.0, max_ejection_s=8.0)
    assert table.clusters["m|b"].outlier is None and table.clusters["m|b"].connect_timeout_s == 5.0
    assert table.clusters["m|b"].endpoints == ()  # no assignment yet


def test_outlier_detection_defaults_are_envoys():
    table = build_table(eds("m|a", outlier_detection=OutlierDetection(base_ejection_time=timedelta(seconds=400))), {})
    assert table.clusters["m|a"].outlier == OutlierPolicy(consecutive_5xx=5, base_ejection_s=400.0, max_ejection_s=400.0)


def test_a_static_cluster_brings_its_own_endpoints():
    cla = ClusterLoadAssignment(cluster_name="m|a", endpoints=[LocalityLbEndpoints(lb_endpoints=[
        LbEndpoint(endpoint=EnvoyEndpoint(address=socket("127.0.0.1", 9000)))])])
    table = build_table({CLUSTER: {"m|a": bytes(Cluster(name="m|a", type=ClusterDiscoveryType.STATIC, load_assignment=cla))}}, {})
    assert table.clusters["m|a"].endpoints == (Endpoint("127.0.0.1", 9000),)


def test_the_model_comes_from_the_match_prefix_when_metadata_does_not_name_it():
    prefix = EnvoyRoute(match=RouteMatch(prefix="/v2/models/other/"), route=RouteAction(cluster="other|v1"))
    table = build_table(with_routes(weighted(("m|a", 1)), prefix), {})
    assert set(table.routes) == {"m", "other"}
    assert [(t.version, t.weight) for t in table.routes["other"].targets] == [("v1", 1)]


def test_routes_for_other_paths_are_ignored():
    health = EnvoyRoute(match=RouteMatch(prefix="/v2/health"), route=RouteAction(cluster="local"))
    catch_all = EnvoyRoute(match=RouteMatch(prefix="/"), redirect=RedirectAction(host_redirect="example.com"))
    assert set(build_table(with_routes(weighted(("m|a", 1)), health, catch_all), {}).routes) == {"m"}


def test_a_version_comes_from_the_hop_header_when_the_cluster_name_does_not_say():
    cluster = WeightedClusterClusterWeight(name="pool-blue", weight=1, request_headers_to_add=[
        HeaderValueOption(header=HeaderValue(key="X-Sidemesh-Hop", value="blue"))])
    route = EnvoyRoute(match=RouteMatch(path_separated_prefix="/v2/models/m"),
                       route=RouteAction(weighted_clusters=WeightedCluster(clusters=[cluster, WeightedClusterClusterWeight(name="pool-x", weight=1)])))
    targets = build_table(with_routes(route), {}).routes["m"].targets
    assert [(t.version, t.cluster) for t in targets] == [("blue", "pool-blue"), ("pool-x", "pool-x")]
    assert targets[0].headers == ((b"x-sidemesh-hop", b"blue"),)


def test_listeners_say_which_route_configurations_count():
    manager = HttpConnectionManager(stat_prefix="s", rds=Rds(route_config_name="other_routes"))
    listener = Listener(name="l", filter_chains=[FilterChain(filters=[Filter(name="hcm", typed_config=Any.pack(manager))])])
    resources = {LISTENER: {"l": bytes(listener)}, ROUTE: {
        "other_routes": with_routes(weighted(("m|a", 1)), name="other_routes")[ROUTE]["other_routes"],
        "sidemesh_routes": with_routes(weighted(("n|a", 1), model="n"))[ROUTE]["sidemesh_routes"],
    }}
    assert route_config_names(resources[LISTENER]) == {"other_routes"}
    assert set(build_table(resources, {}).routes) == {"m"}
    assert route_config_names({}) == {"sidemesh_routes"}


# --- what the sidecar refuses, naming the field ----------------------------------------------


def test_a_total_weight_of_0_is_refused():
    assert refused(with_routes(weighted(("m|a", 0), ("m|b", 0)))) == (
        "RouteConfiguration sidemesh_routes: virtual_hosts[0].routes[0].route.weighted_clusters: total weight is 0")


def test_a_model_routed_twice_is_refused():
    message = refused(with_routes(weighted(("m|a", 1)), weighted(("m|b", 1))))
    assert message.startswith("RouteConfiguration sidemesh_routes: virtual_hosts[0].routes[1]: routes model 'm' again")


def test_a_mirror_fraction_above_100_percent_is_refused():
    policy = RouteActionRequestMirrorPolicy(cluster="m|s", runtime_fraction=RuntimeFractionalPercent(
        default_value=FractionalPercent(numerator=101, denominator=FractionalPercentDenominatorType.HUNDRED)))
    assert refused(with_routes(weighted(("m|a", 1), request_mirror_policies=[policy]))) == (
        "RouteConfiguration sidemesh_routes: virtual_hosts[0].routes[0].route.request_mirror_policies[0].runtime_fraction"
        ".default_value: 101/HUNDRED is more than 100%")


@pytest.mark.parametrize("address, field", [
    (socket("10.0.0.1", 0), "endpoint.address.socket_address.port_value: expected a port 1-65535, got 0"),
    (socket("", 80), "endpoint.address.socket_address.address: is empty"),
    (Address(pipe=Pipe(path="/tmp/s")), "endpoint.address: expected a socket_address"),
    (Address(socket_address=SocketAddress(address="h", named_port="http")), "endpoint.address.socket_address.named_port: is not supported"),
    (None, "endpoint.address: expected a socket_address"),
])
def test_endpoint_addresses_the_proxy_cannot_dial_are_refused(address, field):
    endpoint = EnvoyEndpoint(address=address) if address is not None else EnvoyEndpoint()
    message = refused({**eds("m|a"), **assignment("m|a", LbEndpoint(endpoint=endpoint))})
    assert message.startswith(f"ClusterLoadAssignment m|a: endpoints[0].lb_endpoints[0].{field}")


@pytest.mark.parametrize("port", [0, 70000, 1.5, "15002"])
def test_a_bad_grpc_port_is_refused(port):
    lb = LbEndpoint(endpoint=EnvoyEndpoint(address=socket("10.0.0.1", 80)), metadata=knobs(grpc_port=port))
    assert refused(assignment("m|a", lb)).startswith(
        "ClusterLoadAssignment m|a: endpoints[0].lb_endpoints[0].metadata.filter_metadata.sidemesh.grpc_port: expected a port 1-65535")


@pytest.mark.parametrize("values, field", [
    ({"stats_sample": 1.5}, "stats_sample: expected a share between 0 and 1, got 1.5"),
    ({"compare": "yes"}, "compare: expected true or false, got 'yes'"),
    ({"state_version": -1}, "state_version: expected a whole number >= 0"),
    ({"sticky_key": "bad key"}, "sticky_key: expected an HTTP header name"),
    ({"model": 3}, "model: expected a model name"),
])
def test_bad_sidecar_knobs_are_refused(values, field):
    route = weighted(("m|a", 1))
    route.metadata = knobs(**values)
    assert refused(with_routes(route)).startswith(
        f"RouteConfiguration sidemesh_routes: virtual_hosts[0].routes[0].metadata.filter_metadata.sidemesh.{field}")


@pytest.mark.parametrize("action, field", [
    (RouteAction(cluster_header="x-cluster"), "route.cluster_header: is not supported"),
    (RouteAction(weighted_clusters=WeightedCluster(clusters=[])), "route.weighted_clusters: lists no clusters"),
    (RouteAction(weighted_clusters=WeightedCluster(clusters=[WeightedClusterClusterWeight(name="", weight=1)])),
     "route.weighted_clusters.clusters[0].name: is empty"),
    (RouteAction(cluster="m|a", timeout=timedelta(seconds=-1)), "route.timeout: expected a duration >= 0"),
    (RouteAction(cluster="m|a", request_mirror_policies=[RouteActionRequestMirrorPolicy(cluster_header="x")]),
     "route.request_mirror_policies[0].cluster: is empty; cluster_header is not supported"),
    (RouteAction(weighted_clusters=WeightedCluster(clusters=[WeightedClusterClusterWeight(name="m|a", weight=1, request_headers_to_add=[
        HeaderValueOption(header=HeaderValue(key=":authority", value="x"))])])),
     "route.weighted_clusters.clusters[0].request_headers_to_add[0].header.key: expected an HTTP header name"),
    (RouteAction(weighted_clusters=WeightedCluster(clusters=[WeightedClusterClusterWeight(name="m|a", weight=1),
                                                             WeightedClusterClusterWeight(name="m|a", weight=2)])),
     "route.weighted_clusters.clusters[1].name: version 'a' is listed twice"),
])
def test_route_actions_the_sidecar_cannot_follow_are_refused(action, field):
    route = EnvoyRoute(match=RouteMatch(path_separated_prefix="/v2/models/m"), route=action)
    assert refused(with_routes(route)).startswith(f"RouteConfiguration sidemesh_routes: virtual_hosts[0].routes[0].{field}")


def test_a_model_route_that_does_not_forward_is_refused():
    route = EnvoyRoute(match=RouteMatch(prefix="/v2/models/m"), redirect=RedirectAction(host_redirect="example.com"))
    assert refused(with_routes(route)) == (
        "RouteConfiguration sidemesh_routes: virtual_hosts[0].routes[0]: has no route action; the sidecar only forwards "
        "(redirect and direct_response are not supported)")


@pytest.mark.parametrize("fields, field", [
    ({"connect_timeout": timedelta(0)}, "connect_timeout: must be greater than 0"),
    ({"outlier_detection": OutlierDetection(consecutive_5xx=0)}, "outlier_detection.consecutive_5xx: must be at least 1"),
    ({"outlier_detection": OutlierDetection(base_ejection_time=timedelta(seconds=10), max_ejection_time=timedelta(seconds=5))},
     "outlier_detection.max_ejection_time: 5 s is shorter than base_ejection_time (10 s)"),
    ({"outlier_detection": OutlierDetection(base_ejection_time=timedelta(0))}, "outlier_detection.base_ejection_time: must be greater than 0"),
])
def test_cluster_settings_the_sidecar_cannot_use_are_refused(fields, field):
    assert refused(eds("m|a", **fields)) == f"Cluster m|a: {field}"


def test_an_original_destination_cluster_is_refused():
    resources = {CLUSTER: {"m|a": bytes(Cluster(name="m|a", type=ClusterDiscoveryType.ORIGINAL_DST))}}
    assert refused(resources).startswith("Cluster m|a: type: ORIGINAL_DST clusters are not supported")


def test_an_inline_route_configuration_in_the_listener_is_refused():
    manager = HttpConnectionManager(stat_prefix="s", route_config=RouteConfiguration(name="inline"))
    listener = Listener(name="l", filter_chains=[FilterChain(filters=[Filter(name="hcm", typed_config=Any.pack(manager))])])
    assert refused({LISTENER: {"l": bytes(listener)}}) == (
        "Listener l: filter_chains[0].filters[0].typed_config.route_config: inline route configurations are not supported; serve them over RDS")


def test_bytes_that_do_not_parse_are_refused():
    assert refused({CLUSTER: {"x": b"\xff\xff\xff"}}).startswith("Cluster: cannot parse the resource")
