"""The xDS client against the real control plane (a process) and against a scripted ADS
server: tables arrive and are ACKed, bad resources are NACKed while the last good table
stays, and a control plane that goes away and comes back is reconnected to."""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from typing import Callable

import grpc
import pytest

from control_plane import resources as cp
from control_plane.routing import Route
from control_plane.store import RouteStore
from sidecar.errors import ConfigError
from sidecar.table import Endpoint, RoutingTable
from sidecar.reconnect import backoff_delay
from sidecar.xds_client import XdsClient, XdsConfig
from sidecar.xds_resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.control_plane.peers import ControlPlaneProcess, free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
    from envoy_data_plane.google.protobuf import Any

TWO = {"backends": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}
WAIT_S = 20.0


class Tables:
    """``on_table``: keeps every table handed over and wakes whoever waits for one."""

    def __init__(self) -> None:
        self.seen: list[RoutingTable] = []
        self._arrived = asyncio.Event()

    def __call__(self, table: RoutingTable) -> None:
        self.seen.append(table)
        self._arrived.set()

    async def until(self, predicate: Callable[[RoutingTable], bool], what: str) -> RoutingTable:
        try:
            async with asyncio.timeout(WAIT_S):
                while not (self.seen and predicate(self.seen[-1])):
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"no table with {what} within {WAIT_S:.0f} s; last: {self.seen[-1:] or None}") from None
        return self.seen[-1]


async def eventually(predicate: Callable[[], object], what: str, timeout: float = WAIT_S):
    """For state outside this process (or a plain attribute): checked every 20 ms, bounded."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


@contextlib.asynccontextmanager
async def running(client: XdsClient):
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def config(xds_port: int, **overrides) -> XdsConfig:
    args = dict(control_plane=f"127.0.0.1:{xds_port}", node_id="sidecar-tabular-v1", model="tabular", version="v1",
                inbound="127.0.0.1:25001", grpc_inbound="127.0.0.1:25002", backoff_base_s=0.05, backoff_max_s=0.3)
    return XdsConfig(**{**args, **overrides})


def weights(table: RoutingTable, model: str = "tabular") -> dict[str, int]:
    route = table.routes.get(model)
    return {t.version: t.weight for t in route.targets} if route else {}


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, field", [
    ({"control_plane": "nowhere"}, "control_plane"),
    ({"inbound": "127.0.0.1:0"}, "inbound"),
    ({"grpc_inbound": "host:99999"}, "grpc_inbound"),
    ({"node_id": ""}, "node_id"),
    ({"backoff_base_s": 0}, "backoff_base_s"),
    ({"backoff_max_s": 0.01}, "backoff_max_s"),
])
def test_a_bad_client_setting_is_refused_naming_it(overrides, field):
    with pytest.raises(ConfigError) as info:
        config(15010, **overrides)
    assert info.value.where == field


def test_the_node_announces_model_version_and_both_inbound_addresses():
    node = config(15010).node()
    assert (node.id, node.user_agent_name) == ("sidecar-tabular-v1", "sidemesh-sidecar")
    assert dict(node.metadata) == {"model": "tabular", "version": "v1", "inbound": "127.0.0.1:25001",
                                   "listen": "127.0.0.1:25001", "grpc": "127.0.0.1:25002"}
    assert "grpc" not in dict(config(15010, grpc_inbound=None).node().metadata)


def test_backoff_grows_exponentially_under_its_cap_with_full_jitter():
    assert [backoff_delay(n, 0.25, 10.0, rand=lambda: 0.999999) for n in range(8)] == pytest.approx(
        [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0], rel=1e-4)
    assert backoff_delay(3, 0.25, 10.0, rand=lambda: 0.0) == 0.0
    assert backoff_delay(10_000, 0.25, 10.0, rand=lambda: 0.5) == 5.0


# --- against the real control plane ------------------------------------------------------------


def test_tables_follow_the_control_plane_through_changes_and_a_restart(tmp_path):
    plane = ControlPlaneProcess(state=tmp_path / "cp.db").start()
    try:
        status, body = plane.api("PUT", "/v1/routes/tabular", TWO)
        assert status == 200, body
        asyncio.run(_follow(plane, body["version"]))
    finally:
        plane.stop()


async def _follow(plane: ControlPlaneProcess, first_version: int) -> None:
    tables = Tables()
    client = XdsClient(config(plane.xds_port), tables)
    async def api(method: str, path: str, doc: dict | None = None) -> tuple[int, dict]:
        return await asyncio.to_thread(plane.api, method, path, doc)

    async def node() -> dict | None:
        status, body = await api("GET", "/v1/nodes")
        return next((n for n in body["nodes"] if n["id"] == "sidecar-tabular-v1"), None) if status == 200 else None

    async def acked(version: int) -> dict:
        deadline = time.monotonic() + WAIT_S
        while (found := await node()) is None or found["acked_state_version"] != version:
            assert time.monotonic() < deadline, f"the control plane never saw state {version} ACKed: {found}"
            await asyncio.sleep(0.05)
        return found

    async with running(client):
        # The first table carries the route's weights and, once registered, this sidecar
        # itself as an endpoint of tabular|v1 with its gRPC port.
        own = Endpoint("127.0.0.1", 25001, 25002)
        table = await tables.until(lambda t: weights(t) == {"v1": 90, "v2": 10} and own in t.clusters["tabular|v1"].endpoints,
                                   "90/10 and this sidecar registered")
        assert table.routes["tabular"].targets[1].headers == ((b"x-sidemesh-hop", b"v2"),)
        assert client.connected and client.applied_state_version == first_version
        assert set(client.applied_versions) == {CLUSTER, ENDPOINT, LISTENER, ROUTE}
        seen = await acked(first_version)
        assert seen["grpc_address"] == "127.0.0.1:25002" and seen["last_nack"] is None

        status, body = await api("PUT", "/v1/routes/tabular", {"backends": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}]})
        assert status == 200, body
        await tables.until(lambda t: weights(t) == {"v1": 50, "v2": 50}, "the 50/50 change")
        await acked(body["version"])
        assert client.nacks_total == 0 and client.acks_total >= 5

        # The control plane goes away: the table stays, nothing empty is handed over.
        before, acks = len(tables.seen), client.acks_total
        await asyncio.to_thread(plane.stop)
        await eventually(lambda: not client.connected, "the client to notice the control plane is gone")
        await eventually(lambda: client.reconnects_total >= 2, "reconnect attempts while it is down")
        assert len(tables.seen) == before and weights(client.table) == {"v1": 50, "v2": 50}
        assert client.last_error is not None

        # It comes back on the same port and state file: the client resyncs and follows again.
        await asyncio.to_thread(plane.start)
        await eventually(lambda: client.connected and client.acks_total >= acks + 4, "the stream to be back and resynced")
        status, body = await api("PUT", "/v1/routes/tabular", {"backends": [{"version": "v1", "weight": 20}, {"version": "v2", "weight": 80}]})
        assert status == 200, body
        await tables.until(lambda t: weights(t) == {"v1": 20, "v2": 80}, "the change made after the restart")
        await acked(body["version"])
        assert all(t.routes for t in tables.seen), "a table without routes was handed over"


def test_a_control_plane_that_is_not_up_yet_is_waited_for(tmp_path):
    async def body():
        tables = Tables()
        client = XdsClient(config(plane.xds_port), tables)
        async with running(client):
            await eventually(lambda: client.reconnects_total >= 2, "retries while nothing listens")
            assert not client.connected and tables.seen == [] and client.table is None
            await asyncio.to_thread(plane.start)
            await tables.until(lambda t: weights(t) == {"v1": 90, "v2": 10}, "the first table")

    plane = ControlPlaneProcess(state=tmp_path / "cp.db")
    try:
        asyncio.run(_seed_then(plane, body))
    finally:
        if hasattr(plane, "popen"):
            plane.stop()


async def _seed_then(plane: ControlPlaneProcess, body) -> None:
    """Store a route in the state file before the control plane runs, then run ``body``."""
    store = RouteStore(plane.state)
    try:
        store.put(Route.from_dict("tabular", TWO), "test")
    finally:
        store.close()
    await body()


# --- against a scripted ADS server -------------------------------------------------------------


class ScriptedAds:
    """An in-process ADS server: every request the client sends lands in ``requests``; the
    test decides each response."""

    def __init__(self, port: int = 0) -> None:
        self.port = port  # 0: any free port; another: where a control plane was before
        self.requests: asyncio.Queue[DiscoveryRequest] = asyncio.Queue()
        self._responses: asyncio.Queue[DiscoveryResponse] = asyncio.Queue()

    async def __aenter__(self) -> "ScriptedAds":
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "envoy.service.discovery.v3.AggregatedDiscoveryService",
            {"StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._stream, request_deserializer=DiscoveryRequest.FromString, response_serializer=bytes)},
        ),))
        bound = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert bound and self.port in (0, bound), f"cannot listen on port {self.port}"
        self.port = bound
        await self.server.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.server.stop(0)

    async def _stream(self, requests, context) -> None:
        async def read() -> None:
            async for request in requests:
                self.requests.put_nowait(request)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                await context.write(await self._responses.get())
        finally:
            reader.cancel()

    def respond(self, type_url: str, resources: list, version: str, nonce: str) -> None:
        self._responses.put_nowait(DiscoveryResponse(
            type_url=type_url, version_info=version, nonce=nonce, resources=[Any.pack(r) for r in resources]))

    async def request(self) -> DiscoveryRequest:
        return await asyncio.wait_for(self.requests.get(), WAIT_S)


def _state(doc: dict, state_version: int = 1):
    routes = {"tabular": Route.from_dict("tabular", doc)}
    return (cp.clusters(routes), cp.load_assignments(routes, {("tabular", "v1"): [("127.0.0.1", 25001, 25002)]}),
            cp.route_configuration(routes, state_version))


def test_a_bad_route_configuration_is_nacked_and_the_last_good_table_stays():
    async def body():
        tables = Tables()
        async with ScriptedAds() as ads, running(XdsClient(config(ads.port), tables)) as client:
            first = [await ads.request() for _ in range(3)]
            assert [r.type_url for r in first] == [CLUSTER, LISTENER, ROUTE]
            assert first[0].node.id == "sidecar-tabular-v1" and first[0].node.metadata.to_dict()["grpc"] == "127.0.0.1:25002"
            assert first[1].node is None and first[2].resource_names == ["sidemesh_routes"]

            clusters, assignments, routes = _state(TWO)
            ads.respond(CLUSTER, clusters, "c1", "1")
            ack, eds = await ads.request(), await ads.request()
            assert (ack.type_url, ack.version_info, ack.response_nonce, ack.error_detail) == (CLUSTER, "c1", "1", None)
            assert (eds.type_url, eds.resource_names) == (ENDPOINT, ["tabular|v1", "tabular|v2"])  # by name, as Envoy asks
            ads.respond(ENDPOINT, assignments, "e1", "2")
            ads.respond(LISTENER, [cp.listener(("127.0.0.1", 25001))], "l1", "3")
            assert [(r.type_url, r.response_nonce) for r in (await ads.request(), await ads.request())] == [(ENDPOINT, "2"), (LISTENER, "3")]
            assert tables.seen == [], "a table went out before any route configuration arrived"

            ads.respond(ROUTE, [routes], "r1", "4")
            ack = await ads.request()
            assert (ack.type_url, ack.version_info, ack.response_nonce, ack.error_detail) == (ROUTE, "r1", "4", None)
            assert len(tables.seen) == 1, "the ACK went out before the table was applied"
            good = tables.seen[0]
            assert weights(good) == {"v1": 90, "v2": 10}
            assert good.clusters["tabular|v1"].endpoints == (Endpoint("127.0.0.1", 25001, 25002),)
            assert good.versions == {CLUSTER: "c1", ENDPOINT: "e1", LISTENER: "l1", ROUTE: "r1"}

            bad = cp.route_configuration({"tabular": Route.from_dict("tabular", TWO)}, 2)
            for cluster in bad.virtual_hosts[0].routes[0].route.weighted_clusters.clusters:
                cluster.weight = 0
            ads.respond(ROUTE, [bad], "r2", "5")
            nack = await ads.request()
            assert (nack.type_url, nack.version_info, nack.response_nonce) == (ROUTE, "r1", "5")
            assert nack.error_detail.code == 3
            assert nack.error_detail.message == (
                "RouteConfiguration sidemesh_routes: virtual_hosts[0].routes[0].route.weighted_clusters: total weight is 0")
            assert tables.seen == [good] and client.table is good
            assert (client.nacks_total, client.last_nack) == (1, nack.error_detail.message)
            assert client.applied_versions[ROUTE] == "r1" and client.applied_state_version == 1

            _, _, fixed = _state({"backends": [{"version": "v1", "weight": 1}, {"version": "v2", "weight": 3}]}, 3)
            ads.respond(ROUTE, [fixed], "r3", "6")
            ack = await ads.request()
            assert (ack.version_info, ack.response_nonce, ack.error_detail) == ("r3", "6", None)
            assert weights(tables.seen[-1]) == {"v1": 1, "v2": 3} and client.applied_state_version == 3

            # State of the world: a Cluster response without resources removes them all.
            ads.respond(CLUSTER, [], "c2", "7")
            ack, unsubscribe = await ads.request(), await ads.request()
            assert (ack.type_url, ack.version_info) == (CLUSTER, "c2")
            assert (unsubscribe.type_url, unsubscribe.resource_names) == (ENDPOINT, [])
            assert tables.seen[-1].clusters == {} and weights(tables.seen[-1]) == {"v1": 1, "v2": 3}

    asyncio.run(body())


def test_a_resource_of_the_wrong_type_is_nacked():
    async def body():
        tables = Tables()
        async with ScriptedAds() as ads, running(XdsClient(config(ads.port), tables)) as client:
            for _ in range(3):
                await ads.request()
            clusters, _, _ = _state(TWO)
            ads.respond(LISTENER, clusters[:1], "l1", "1")
            nack = await ads.request()
            assert (nack.type_url, nack.version_info, nack.response_nonce) == (LISTENER, "", "1")
            assert nack.error_detail.message.startswith("resources[0]: type_url is 'type.googleapis.com/envoy.config.cluster.v3.Cluster'")
            assert client.nacks_total == 1 and tables.seen == []

    asyncio.run(body())


def test_a_new_stream_announces_the_versions_last_applied():
    async def body():
        tables = Tables()
        ads = ScriptedAds()
        async with ads, running(XdsClient(config(ads.port), tables)) as client:
            for _ in range(3):
                await ads.request()
            clusters, assignments, routes = _state(TWO)
            ads.respond(CLUSTER, clusters, "c1", "1")
            ads.respond(ENDPOINT, assignments, "e1", "2")
            ads.respond(ROUTE, [routes], "r1", "3")
            await tables.until(lambda t: weights(t) == {"v1": 90, "v2": 10}, "the first table")
            await ads.server.stop(0)  # the stream breaks
            await eventually(lambda: not client.connected, "the client to notice")
            # Same port, a fresh server: the first requests carry the versions applied before.
            async with ScriptedAds(ads.port) as again:
                first = {}
                while len(first) < 4:
                    request = await again.request()
                    first.setdefault(request.type_url, request)
                assert {t: r.version_info for t, r in first.items()} == {CLUSTER: "c1", ENDPOINT: "e1", LISTENER: "", ROUTE: "r1"}
                assert first[ENDPOINT].resource_names == ["tabular|v1", "tabular|v2"]
                assert first[CLUSTER].node.id == "sidecar-tabular-v1"
                assert tables.seen[-1].routes, "the table was dropped while disconnected"

    asyncio.run(body())


def test_a_route_is_held_until_the_endpoints_of_its_clusters_arrive():
    """Cluster warming: routes that arrive before their clusters' endpoints (a new sidecar
    asks for endpoints only once it knows the clusters) do not make a table with empty
    clusters, which would answer 503s; the table goes out when the endpoints come."""
    async def body():
        tables = Tables()
        async with ScriptedAds() as ads, running(XdsClient(config(ads.port), tables)):
            for _ in range(3):
                await ads.request()
            clusters, assignments, routes = _state(TWO)
            ads.respond(CLUSTER, clusters, "c1", "1")
            ads.respond(ROUTE, [routes], "r1", "2")
            acked = set()
            while ROUTE not in acked:
                request = await ads.request()
                if request.response_nonce:
                    acked.add(request.type_url)
            assert tables.seen == [], "a table with clusters but no endpoints went out"
            ads.respond(ENDPOINT, assignments, "e1", "3")
            table = await tables.until(lambda t: weights(t) == {"v1": 90, "v2": 10}, "the warmed table")
            assert table.clusters["tabular|v1"].endpoints == (Endpoint("127.0.0.1", 25001, 25002),)

    asyncio.run(body())


def test_cancelling_the_client_ends_it_cleanly():
    async def body():
        client = XdsClient(config(free_port()), Tables())
        task = asyncio.create_task(client.run())
        await eventually(lambda: client.reconnects_total >= 1, "a failed attempt")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert not client.connected

    asyncio.run(body())


def test_a_cancellation_that_meets_a_dying_stream_is_not_lost():
    # grpc.aio turns a cancellation that meets a stream the server just ended into an
    # UNAVAILABLE error; the client must end anyway, not reconnect forever.
    async def body():
        for step in range(25):
            async with ScriptedAds() as ads:
                task = asyncio.create_task(XdsClient(config(ads.port), Tables()).run())
                await ads.request()  # the stream is up
                await ads.server.stop(0)
                for _ in range(step % 5):
                    await asyncio.sleep(0)  # cancel a loop turn later each time
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.wait_for(task, 5)

    asyncio.run(body())
