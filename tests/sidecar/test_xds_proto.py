"""The sidecar's trimmed Envoy protos read and write the same bytes as the real ones.

Every field the trimmed files declare is checked against envoy-data-plane (generated from
Envoy's own protos): name, number, type, repeatedness, oneof and message type. Then whole
resources as the control plane builds them cross the wire both ways.
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import warnings
from datetime import timedelta

import pytest
from google.protobuf.descriptor import FieldDescriptor

from control_plane import resources as cp
from control_plane.routing import Route
from sidecar.proto import (
    cluster_pb2, core_pb2, discovery_pb2, endpoint_pb2, http_connection_manager_pb2, listener_pb2, percent_pb2, route_pb2,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import envoy_data_plane.envoy.config.cluster.v3 as ecluster
    import envoy_data_plane.envoy.config.core.v3 as ecore
    import envoy_data_plane.envoy.config.endpoint.v3 as eendpoint
    import envoy_data_plane.envoy.service.discovery.v3 as ediscovery
    import envoy_data_plane.envoy.type.v3 as etype
    from envoy_data_plane.google.protobuf import Any, Struct

MODULES = [percent_pb2, core_pb2, listener_pb2, http_connection_manager_pb2, route_pb2, cluster_pb2, endpoint_pb2, discovery_pb2]

_TYPES = {
    FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BYTES: "bytes", FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_UINT32: "uint32", FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_MESSAGE: "message",
}


def _flat(full_name: str, package: str) -> str:
    """``envoy.config.route.v3.WeightedCluster.ClusterWeight`` as envoy-data-plane names it:
    ``envoy.config.route.v3.WeightedClusterClusterWeight``."""
    return package + "." + full_name[len(package) + 1:].replace(".", "")


def _their_name(cls) -> str:
    return cls.__module__.removeprefix("envoy_data_plane.") + "." + cls.__name__


def _messages():
    def walk(message):
        if not message.GetOptions().map_entry:
            yield message
            for nested in message.nested_types:
                yield from walk(nested)

    for module in MODULES:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            yield from walk(message)


def _enums():
    for module in MODULES:
        yield from module.DESCRIPTOR.enum_types_by_name.values()
        for message in _messages():
            if message.file is module.DESCRIPTOR:
                yield from message.enum_types


def _their_class(full_name: str, package: str):
    module = importlib.import_module("envoy_data_plane." + package)
    return getattr(module, _flat(full_name, package).rpartition(".")[2])


@pytest.mark.parametrize("message", list(_messages()), ids=lambda m: m.full_name)
def test_every_declared_field_matches_envoy(message):
    theirs = _their_class(message.full_name, message.file.package)
    meta = theirs._betterproto
    for field in message.fields:
        assert field.name in meta.meta_by_field_name, f"{message.full_name}.{field.name} is not an Envoy field"
        their = meta.meta_by_field_name[field.name]
        where = f"{message.full_name}.{field.name}"
        assert field.number == their.number, where
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        assert (their.proto_type == "map") if is_map else (_TYPES[field.type] == their.proto_type), where
        assert (field.label == FieldDescriptor.LABEL_REPEATED and not is_map) == their.repeated, where
        assert (field.containing_oneof.name if field.containing_oneof else None) == their.group, where
        if is_map:
            value = field.message_type.fields_by_name["value"].message_type
            assert _flat(value.full_name, value.file.package) == _their_name(meta.cls_by_field[field.name + ".value"]), where
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            cls = their.unwrap() if their.unwrap else meta.cls_by_field[field.name]
            ours = field.message_type
            assert _flat(ours.full_name, ours.file.package) == _their_name(cls), where
        elif field.type == FieldDescriptor.TYPE_ENUM:
            assert _flat(field.enum_type.full_name, field.enum_type.file.package) == _their_name(meta.cls_by_field[field.name]), where


@pytest.mark.parametrize("enum", list(_enums()), ids=lambda e: e.full_name)
def test_every_declared_enum_value_matches_envoy(enum):
    theirs = _their_class(enum.full_name, enum.file.package)
    assert {v.name: v.number for v in enum.values} == {v.name: v.value for v in theirs}


def _pack(message) -> Any:
    return Any.pack(message)


ROUTES = {"tabular": Route.from_dict("tabular", {
    "backends": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}, {"version": "v3", "weight": 0}],
    "mirrors": [{"version": "v3", "percent": 2.5}], "sticky_key": "x-user", "timeout_ms": 1500,
    "retry": {"attempts": 2, "per_try_timeout_ms": 500, "on": ["5xx", "reset"]},
    "sidecar": {"stats_sample": 0.25, "compare": False},
})}


def test_a_route_configuration_from_the_control_plane_parses_field_for_field():
    response = ediscovery.DiscoveryResponse(version_info="r1", type_url=cp.ROUTE, nonce="7",
                                            resources=[_pack(cp.route_configuration(ROUTES, 42))])
    parsed = discovery_pb2.DiscoveryResponse.FromString(bytes(response))
    assert (parsed.version_info, parsed.type_url, parsed.nonce) == ("r1", cp.ROUTE, "7")
    assert parsed.resources[0].type_url == cp.ROUTE
    config = route_pb2.RouteConfiguration.FromString(parsed.resources[0].value)
    assert config.name == "sidemesh_routes"
    route = config.virtual_hosts[0].routes[0]
    assert route.name == "tabular" and route.match.path_separated_prefix == "/v2/models/tabular"
    action = route.route
    assert action.WhichOneof("cluster_specifier") == "weighted_clusters"
    assert [(c.name, c.weight.value) for c in action.weighted_clusters.clusters] == [("tabular|v1", 90), ("tabular|v2", 10)]
    hop = action.weighted_clusters.clusters[1].request_headers_to_add[0]
    assert (hop.header.key, hop.header.value) == ("x-sidemesh-hop", "v2")
    assert hop.append_action == core_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert action.timeout.ToTimedelta() == timedelta(milliseconds=1500)
    assert action.retry_policy.retry_on == "5xx,reset" and action.retry_policy.num_retries.value == 2
    assert action.retry_policy.per_try_timeout.ToTimedelta() == timedelta(milliseconds=500)
    mirror = action.request_mirror_policies[0]
    assert mirror.cluster == "tabular|v3"
    assert (mirror.runtime_fraction.default_value.numerator, mirror.runtime_fraction.default_value.denominator) == (
        25_000, percent_pb2.FractionalPercent.MILLION)
    knobs = dict(route.metadata.filter_metadata["sidemesh"])
    assert knobs == {"model": "tabular", "state_version": 42, "sticky_key": "x-user", "stats_sample": 0.25, "compare": False}


def test_a_listener_names_its_route_configuration_through_the_connection_manager():
    listener = listener_pb2.Listener.FromString(bytes(cp.listener(("127.0.0.1", 15001))))
    assert listener.name == "sidemesh_inbound"
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == ("127.0.0.1", 15001)
    typed = listener.filter_chains[0].filters[0].typed_config
    assert typed.type_url.endswith("http_connection_manager.v3.HttpConnectionManager")
    manager = http_connection_manager_pb2.HttpConnectionManager.FromString(typed.value)
    assert manager.stat_prefix == "sidemesh" and manager.rds.route_config_name == "sidemesh_routes"


def test_clusters_and_endpoints_parse_with_outlier_detection_health_and_metadata():
    cluster = ecluster.Cluster(
        name="tabular|v1", type=ecluster.ClusterDiscoveryType.EDS, connect_timeout=timedelta(milliseconds=250),
        outlier_detection=ecluster.OutlierDetection(consecutive_5xx=3, base_ejection_time=timedelta(seconds=2),
                                                    max_ejection_time=timedelta(seconds=20)),
    )
    parsed = cluster_pb2.Cluster.FromString(bytes(cluster))
    assert parsed.name == "tabular|v1" and parsed.type == cluster_pb2.Cluster.EDS
    assert parsed.connect_timeout.ToTimedelta() == timedelta(milliseconds=250)
    detection = parsed.outlier_detection
    assert detection.consecutive_5xx.value == 3
    assert detection.base_ejection_time.ToTimedelta() == timedelta(seconds=2)
    assert detection.max_ejection_time.ToTimedelta() == timedelta(seconds=20)

    assignment = cp.load_assignments(ROUTES, {("tabular", "v1"): [("10.0.0.1", 15001, 15002)]})[0]
    assignment.endpoints[0].lb_endpoints.append(eendpoint.LbEndpoint(
        endpoint=eendpoint.Endpoint(address=ecore.Address(socket_address=ecore.SocketAddress(address="10.0.0.2", port_value=15001))),
        health_status=ecore.HealthStatus.DRAINING,
    ))
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(bytes(assignment))
    assert cla.cluster_name == "tabular|v1"
    first, second = cla.endpoints[0].lb_endpoints
    assert (first.endpoint.address.socket_address.address, first.endpoint.address.socket_address.port_value) == ("10.0.0.1", 15001)
    assert first.metadata.filter_metadata["sidemesh"]["grpc_port"] == 15002
    assert second.health_status == core_pb2.DRAINING and not second.HasField("metadata")


def test_fractional_percent_denominators_keep_their_numbers():
    for name in ("HUNDRED", "TEN_THOUSAND", "MILLION"):
        theirs = etype.FractionalPercent(numerator=3, denominator=getattr(etype.FractionalPercentDenominatorType, name))
        ours = percent_pb2.FractionalPercent.FromString(bytes(theirs))
        assert (ours.numerator, percent_pb2.FractionalPercent.DenominatorType.Name(ours.denominator)) == (3, name)


def test_a_request_the_sidecar_writes_reads_back_in_envoy_data_plane():
    request = discovery_pb2.DiscoveryRequest(
        version_info="v9", type_url=cp.ROUTE, response_nonce="12", resource_names=["sidemesh_routes"],
    )
    request.node.id = "sidecar-1"
    request.node.cluster = "tabular"
    request.node.user_agent_name = "sidemesh-sidecar"
    request.node.metadata.update({"model": "tabular", "version": "v1", "inbound": "127.0.0.1:15001", "grpc": "127.0.0.1:15002"})
    request.error_detail.code = 3
    request.error_detail.message = "RouteConfiguration sidemesh_routes: bad"
    theirs = ediscovery.DiscoveryRequest.FromString(request.SerializeToString())
    assert (theirs.version_info, theirs.type_url, theirs.response_nonce, theirs.resource_names) == (
        "v9", cp.ROUTE, "12", ["sidemesh_routes"])
    assert (theirs.node.id, theirs.node.cluster, theirs.node.user_agent_name) == ("sidecar-1", "tabular", "sidemesh-sidecar")
    assert theirs.node.metadata.to_dict() == {"model": "tabular", "version": "v1", "inbound": "127.0.0.1:15001", "grpc": "127.0.0.1:15002"}
    assert (theirs.error_detail.code, theirs.error_detail.message) == (3, "RouteConfiguration sidemesh_routes: bad")


def test_the_metadata_struct_round_trips_both_ways():
    theirs = ecore.Metadata(filter_metadata={"sidemesh": Struct.from_dict({"grpc_port": 15002, "x": [1, "a"]})})
    ours = core_pb2.Metadata.FromString(bytes(theirs))
    assert ours.filter_metadata["sidemesh"]["grpc_port"] == 15002
    assert ecore.Metadata.FromString(ours.SerializeToString()) == theirs


def test_the_sidecars_xds_modules_never_import_envoy_data_plane():
    code = (
        "import sys, sidecar.xds_client, sidecar.translate\n"
        "leaked = sorted(m for m in sys.modules if m.startswith('envoy_data_plane') or m.startswith('betterproto'))\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_dataclass_fields_are_what_the_comparison_reads():
    # Guards the comparison above against an envoy-data-plane layout change that would
    # make it vacuous: the betterproto metadata must still be there.
    numbers = {f.name: f.metadata["betterproto"].number for f in dataclasses.fields(ediscovery.DiscoveryRequest)}
    assert numbers["error_detail"] == 6 and numbers["response_nonce"] == 5
