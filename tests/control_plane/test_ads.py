"""The ADS protocol as the control plane speaks it, driven over real gRPC streams."""

from __future__ import annotations

import asyncio
import time
import warnings

import grpc

from control_plane import snapshot as snapshot_module
from control_plane.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from control_plane.routing import Route
from control_plane.server import ControlPlaneConfig, ControlPlaneServer
from tests.control_plane.ads_client import METHOD, AdsClient, DiscoveryRequest, DiscoveryResponse

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment

TWO_VERSIONS = {"backends": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}


def run(body, tmp_path, grace_s: float = 2.0):
    async def main():
        config = ControlPlaneConfig(state=tmp_path / "cp.db", admin_port=0, xds_port=0, endpoint_grace_s=grace_s)
        async with ControlPlaneServer(config) as server:
            return await body(server, f"127.0.0.1:{server.xds_port}")

    return asyncio.run(main())


def put(server, doc: dict, model: str = "tabular") -> int:
    """A change as the admin API makes it: stored, then published after the debounce."""
    version = server.control_plane.store.put(Route.from_dict(model, doc), "test").version
    server.control_plane.changed()
    return version


def setup(server, doc: dict) -> None:
    """Initial state, published at once so the first responses already carry it."""
    server.control_plane.store.put(Route.from_dict("tabular", doc), "test")
    server.control_plane.publish()


def endpoints(response) -> dict[str, list[str]]:
    out = {}
    for resource in response.resources:
        cla = ClusterLoadAssignment.FromString(resource.value)
        out[cla.cluster_name] = [f"{e.endpoint.address.socket_address.address}:{e.endpoint.address.socket_address.port_value}"
                                 for group in cla.endpoints for e in group.lb_endpoints]
    return out


async def next_of(client: AdsClient, type_url: str):
    while True:
        response = await client.recv()
        client.ack(response)
        if response.type_url == type_url:
            return response


def test_a_sidecar_is_an_endpoint_while_connected_and_leaves_after_the_grace_period(tmp_path):
    async def body(server, address):
        setup(server, TWO_VERSIONS)
        async with AdsClient(address, "watcher") as watcher:
            watcher.send(ENDPOINT)
            assert endpoints(await next_of(watcher, ENDPOINT))["tabular|v1"] == []
            sidecar = AdsClient(address, "sidecar-v1", {"model": "tabular", "version": "v1", "inbound": "127.0.0.9:15001"})
            async with sidecar:
                sidecar.send(ENDPOINT)
                assert endpoints(await next_of(watcher, ENDPOINT))["tabular|v1"] == ["127.0.0.9:15001"]
            closed = time.monotonic()
            assert endpoints(await next_of(watcher, ENDPOINT))["tabular|v1"] == []
            assert time.monotonic() - closed >= 0.3, "the endpoint left before its grace period ended"
            node = server.control_plane.nodes.get("sidecar-v1")
            assert node is None

    run(body, tmp_path, grace_s=0.3)


def test_a_sidecars_grpc_port_rides_on_its_endpoint_and_static_endpoints_have_none(tmp_path):
    async def body(server, address):
        setup(server, {"backends": [{"version": "v1", "weight": 1, "endpoints": ["10.0.0.5:8000"]}]})
        meta = {"model": "tabular", "version": "v1", "inbound": "127.0.0.9:15001", "grpc": "127.0.0.9:15002"}
        async with AdsClient(address, "sidecar-grpc", meta) as sidecar:
            sidecar.send(ENDPOINT)
            while True:
                cla = ClusterLoadAssignment.FromString((await next_of(sidecar, ENDPOINT)).resources[0].value)
                found = {e.endpoint.address.socket_address.port_value: e.metadata for e in cla.endpoints[0].lb_endpoints}
                if 15001 in found:
                    break
            assert found[15001].filter_metadata["sidemesh"].to_dict() == {"grpc_port": 15002}
            assert found[8000] is None
            status = server.control_plane.nodes.get("sidecar-grpc").to_dict()
            assert (status["address"], status["grpc_address"]) == ("127.0.0.9:15001", "127.0.0.9:15002")

    run(body, tmp_path)


def test_acks_and_nacks_are_tracked_and_a_rejected_version_is_never_sent_again(tmp_path):
    async def body(server, address):
        setup(server, TWO_VERSIONS)
        async with AdsClient(address, "envoy-1") as client:
            client.send(ROUTE, names=("sidemesh_routes",))
            first = await client.recv()
            client.ack(first)
            node = server.control_plane.nodes.get("envoy-1")
            await asyncio.wait_for(_until(lambda: node.acked.get(ROUTE) == first.version_info), 10)
            acked_state = node.acked_state_version
            rejected_state = put(server, {"backends": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}]})
            second = await client.recv()
            client.nack(second, "route rejected for the test", previous=first.version_info)
            await asyncio.wait_for(_until(lambda: node.last_nack is not None), 10)
            assert node.last_nack["version"] == second.version_info
            assert node.last_nack["error"] == "route rejected for the test"
            assert node.acked[ROUTE] == first.version_info and node.acked_state_version == acked_state < rejected_state
            put(server, {"backends": [{"version": "v1", "weight": 10}, {"version": "v2", "weight": 90}]})
            third = await client.recv()  # the next response is the new state, not the rejected one again
            assert third.version_info not in (first.version_info, second.version_info)
            client.ack(third)
            await asyncio.wait_for(_until(lambda: node.acked_state_version == server.control_plane.store.version), 10)

    run(body, tmp_path)


def test_a_request_with_a_stale_nonce_is_ignored(tmp_path):
    async def body(server, address):
        setup(server, TWO_VERSIONS)
        async with AdsClient(address, "envoy-2") as client:
            client.send(CLUSTER)
            first = await client.recv()
            put(server, {**TWO_VERSIONS, "backends": [*TWO_VERSIONS["backends"], {"version": "v3", "weight": 0}]})
            second = await client.recv()
            client.send(CLUSTER, first.version_info, first.nonce)  # answers the older response
            client.ack(second)
            node = server.control_plane.nodes.get("envoy-2")
            await asyncio.wait_for(_until(lambda: CLUSTER in node.acked), 10)
            assert node.acked[CLUSTER] == second.version_info

    run(body, tmp_path)


def test_only_the_types_whose_content_changed_are_pushed(tmp_path):
    async def body(server, address):
        setup(server, TWO_VERSIONS)
        async with AdsClient(address, "envoy-3") as client:
            for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
                client.send(type_url)
            initial = {(await next_of_any(client)).type_url for _ in range(4)}
            assert initial == {CLUSTER, ENDPOINT, LISTENER, ROUTE}
            put(server, {"backends": [{"version": "v1", "weight": 60}, {"version": "v2", "weight": 40}]})
            weights_only = await next_of_any(client)
            put(server, {"backends": [{"version": "v1", "weight": 60, "endpoints": ["127.0.0.7:9000"]}, {"version": "v2", "weight": 40}]})
            with_endpoint = [await next_of_any(client), await next_of_any(client)]
        # A weight change re-sends the routes alone; a new endpoint, endpoints then routes.
        assert weights_only.type_url == ROUTE
        assert [r.type_url for r in with_endpoint] == [ENDPOINT, ROUTE]

    run(body, tmp_path)


def test_a_burst_of_changes_is_published_once(tmp_path):
    async def body(server, address):
        async with AdsClient(address, "envoy-4") as client:
            client.send(ROUTE)
            await next_of_any(client)
            before = server.control_plane.rebuilds
            for weight in range(1, 6):
                put(server, {"backends": [{"version": "v1", "weight": weight}]})
            await next_of_any(client)
            assert server.control_plane.rebuilds == before + 1

    run(body, tmp_path)


def test_an_inconsistent_snapshot_is_never_published(tmp_path, monkeypatch):
    async def body(server, address):
        setup(server, TWO_VERSIONS)
        async with AdsClient(address, "envoy-5") as client:
            client.send(ROUTE)
            good = await next_of_any(client)
            monkeypatch.setattr(snapshot_module, "load_assignments", lambda routes, registered: [])
            before = server.control_plane.rebuilds
            put(server, {"backends": [{"version": "v1", "weight": 1}]})
            await asyncio.wait_for(_until(lambda: not server.control_plane._dirty.is_set()), 10)
            assert server.control_plane.rebuilds == before
            assert server.control_plane.cache.get("envoy-5").versions[ROUTE] == good.version_info

    run(body, tmp_path)


async def next_of_any(client: AdsClient):
    response = await client.recv()
    client.ack(response)
    return response


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


def test_a_stream_without_a_node_id_is_refused_clearly(tmp_path):
    async def body(server, address):
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.stream_stream(METHOD, request_serializer=bytes, response_deserializer=DiscoveryResponse.FromString)(
                iter([DiscoveryRequest(type_url=ROUTE)]))
            try:
                async for _ in call:
                    raise AssertionError("a stream without node.id was answered")
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details()

    code, details = run(body, tmp_path)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "must carry node.id" in details
