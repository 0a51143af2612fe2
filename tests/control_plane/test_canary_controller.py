"""The canary controller inside a real control plane: started and read over the admin API,
measured from load reports sent over a real LRS stream, routes written into the history."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import warnings

import aiohttp
import grpc
from aiohttp import web

from control_plane.resources import CLUSTER
from control_plane.routing import Route
from control_plane.server import ControlPlaneConfig, ControlPlaneServer
from sidemesh import load_metrics as lm
from tests.control_plane.ads_client import AdsClient
from tests.control_plane.peers import free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.config.core.v3 import Node
    from envoy_data_plane.envoy.config.endpoint.v3 import ClusterStats, EndpointLoadMetricStats, UpstreamLocalityStats
    from envoy_data_plane.envoy.service.load_stats.v3 import LoadStatsRequest, LoadStatsResponse

LRS = "/envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats"
BASELINE = {"backends": [{"version": "v1", "weight": 100}], "timeout_ms": 5000}
FAST = dict(interval_s=0.3, min_requests=20, drift=False)


class Reporter:
    """A sidecar's LRS stream: hello with the node, then reports when told."""

    def __init__(self, address: str, node_id: str = "entry-sidecar") -> None:
        self.address, self.node_id = address, node_id
        self._queue: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self) -> "Reporter":
        self.channel = grpc.aio.insecure_channel(self.address)
        self.call = self.channel.stream_stream(LRS, request_serializer=bytes, response_deserializer=LoadStatsResponse.FromString)(self._requests())
        self._queue.put_nowait(LoadStatsRequest(node=Node(id=self.node_id)))
        self.hello = await asyncio.wait_for(self.call.read(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        self.call.cancel()
        await self.channel.close()

    async def _requests(self):
        while True:
            yield await self._queue.get()

    def report(self, cluster: str, issued: int = 0, errors: int = 0, latency_bucket: int = 3, **shadow: int) -> None:
        metrics = [EndpointLoadMetricStats(metric_name=lm.bucket_name(lm.LATENCY, latency_bucket),
                                           num_requests_finished_with_metric=issued, total_metric_value=0.001 * issued)]
        names = {"answers": lm.SHADOW_ANSWERS, "errors": lm.SHADOW_ERRORS, "compared_rows": lm.SHADOW_COMPARED_ROWS,
                 "agreed_rows": lm.SHADOW_AGREED_ROWS}
        for key, value in shadow.items():
            count = shadow.get("answers", value) if key in ("compared_rows", "agreed_rows") else value
            metrics.append(EndpointLoadMetricStats(metric_name=names[key], num_requests_finished_with_metric=count,
                                                   total_metric_value=float(value)))
        stats = ClusterStats(cluster_name=cluster, upstream_locality_stats=[UpstreamLocalityStats(
            total_issued_requests=issued, total_successful_requests=issued - errors, total_error_requests=errors,
            load_metric_stats=metrics)], load_report_interval=datetime.timedelta(seconds=0.05))
        self._queue.put_nowait(LoadStatsRequest(cluster_stats=[stats]))


class Mesh:
    def __init__(self, server: ControlPlaneServer, session: aiohttp.ClientSession) -> None:
        self.server, self.session = server, session
        self.base = f"http://127.0.0.1:{server.admin_port}"
        self.xds = f"127.0.0.1:{server.xds_port}"

    async def call(self, method: str, path: str, body=None) -> tuple[int, dict]:
        async with self.session.request(method, self.base + path, json=body) as resp:
            return resp.status, await resp.json()

    async def status(self, model: str = "m") -> dict:
        status, doc = await self.call("GET", f"/v1/canaries/{model}")
        assert status == 200, doc
        return doc

    async def until_finished(self, feed, model: str = "m", timeout: float = 20.0) -> dict:
        """Feed reports every 50 ms until the canary finishes (bounded)."""
        async with asyncio.timeout(timeout):
            while True:
                doc = await self.status(model)
                if not doc["active"]:
                    return doc
                feed(doc)
                await asyncio.sleep(0.05)


def run(body, tmp_path, receiver: tuple[web.Application, int] | None = None, **config):
    """``receiver``: an app served on 127.0.0.1:port while the control plane runs."""

    async def main():
        if receiver is not None:
            runner = web.AppRunner(receiver[0], access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", receiver[1]).start()
            try:
                return await mesh_body()
            finally:
                await runner.cleanup()
        return await mesh_body()

    async def mesh_body():
        cfg = ControlPlaneConfig(state=tmp_path / "cp.db", admin_port=0, xds_port=0, endpoint_grace_s=30.0,
                                 load_report_interval_s=0.1, canary_tick_s=0.05, **config)
        async with aiohttp.ClientSession() as session, ControlPlaneServer(cfg) as server:
            if not server.control_plane.store.routes():  # not again after a restart: that would be a person's change
                server.control_plane.store.put(Route.from_dict("m", BASELINE), "alice")
                server.control_plane.publish()
            mesh = Mesh(server, session)
            async with AdsClient(mesh.xds, "candidate-sidecar", {"model": "m", "version": "v2", "inbound": "127.0.0.1:1"}) as ads:
                ads.send(CLUSTER)
                await asyncio.wait_for(ads.recv(), 10)
                return await body(mesh)

    return asyncio.run(main())


def _history(mesh: Mesh) -> list:
    return list(reversed(mesh.server.control_plane.store.history("m")))


def test_a_good_candidate_steps_through_every_weight_and_is_promoted(tmp_path):
    async def body(mesh: Mesh):
        status, doc = await mesh.call("POST", "/v1/canaries/m", {"to": "v2", "steps": [10, 50], **FAST})
        assert status == 201 and doc["state"] == "step" and doc["weight"] == 10 and doc["baseline"] == {"v1": 100}
        async with Reporter(mesh.xds) as lrs:
            assert lrs.hello.send_all_clusters and lrs.hello.load_reporting_interval.total_seconds() == 0.1
            done = await mesh.until_finished(lambda doc: lrs.report("m|v2", issued=10))
        assert done["state"] == "promoted" and done["weight"] == 100 and done["reason"] is None
        assert [e["event"] for e in done["history"]] == ["started", "step", "promoted"]
        canary_changes = [c for c in _history(mesh) if c.author == f"canary:{done['id']}"]
        weights = [{b["version"]: b["weight"] for b in c.route["backends"]} for c in canary_changes]
        assert weights == [{"v1": 9000, "v2": 1000}, {"v1": 5000, "v2": 5000}, {"v1": 0, "v2": 10000}]
        assert all(g["ok"] for g in done["gates"]) and done["measurement"]["requests"] >= 20
        metrics = await (await mesh.session.get(mesh.base + "/metrics")).text()
        assert 'sidemesh_canary_decisions_total{decision="promoted",model="m"} 1.0' in metrics
        assert "sidemesh_load_reports_received_total" in metrics

    run(body, tmp_path)


def test_a_candidate_with_errors_is_rolled_back_to_the_route_before_the_canary(tmp_path):
    async def body(mesh: Mesh):
        before = mesh.server.control_plane.store.get("m")[0].to_dict()
        await mesh.call("POST", "/v1/canaries/m", {"to": "v2", "steps": [10, 50], **FAST})
        async with Reporter(mesh.xds) as lrs:
            done = await mesh.until_finished(lambda doc: lrs.report("m|v2", issued=10, errors=1))
        assert done["state"] == "rolled_back" and done["failed_gate"] == "error_ratio" and done["step"] == 0
        assert "error ratio" in done["reason"] and "above the limit 0.01" in done["reason"]
        assert mesh.server.control_plane.store.get("m")[0].to_dict() == before
        assert _history(mesh)[-1].author == f"canary:{done['id']}"
        assert [e["event"] for e in done["history"]] == ["started", "rolled_back"]

    run(body, tmp_path)


def test_the_shadow_phase_mirrors_to_the_candidate_and_rolls_back_on_disagreement(tmp_path):
    async def body(mesh: Mesh):
        status, doc = await mesh.call("POST", "/v1/canaries/m", {"to": "v2", "shadow_first": True, "mirror_percent": 50, **FAST})
        assert doc["state"] == "shadow" and doc["weight"] == 0
        route = mesh.server.control_plane.store.get("m")[0]
        assert route.weights == {"v1": 100, "v2": 0} and [(m.version, m.percent) for m in route.mirrors] == [("v2", 50)]
        async with Reporter(mesh.xds) as lrs:
            done = await mesh.until_finished(lambda doc: lrs.report("m|v2", answers=10, compared_rows=40, agreed_rows=20))
        assert done["state"] == "rolled_back" and done["failed_gate"] == "agreement" and done["step"] is None
        assert "below the minimum 0.98" in done["reason"] and done["measurement"]["agreement"] == 0.5
        assert mesh.server.control_plane.store.get("m")[0].mirrors == ()

    run(body, tmp_path)


def test_a_good_shadow_moves_on_to_the_weight_steps(tmp_path):
    async def body(mesh: Mesh):
        await mesh.call("POST", "/v1/canaries/m", {"to": "v2", "shadow_first": True, "steps": [20], **FAST})

        def feed(doc):
            if doc["state"] == "shadow":
                lrs.report("m|v2", answers=10, compared_rows=10, agreed_rows=10)
            else:
                lrs.report("m|v2", issued=10)

        async with Reporter(mesh.xds) as lrs:
            done = await mesh.until_finished(feed)
        assert done["state"] == "promoted"
        assert [e["summary"].split(";")[0] for e in done["history"][1:]] == ["shadow passed", "step 1/1 (20%) passed"]

    run(body, tmp_path)


def test_bad_requests_are_refused_with_the_reason(tmp_path):
    async def body(mesh: Mesh):
        assert await mesh.call("POST", "/v1/canaries/m", {"to": "v2", "steps": [50, 10]}) == (
            400, {"error": "steps[1]: expected steps in increasing order, got 50 then 10"})
        status, doc = await mesh.call("POST", "/v1/canaries/nope", {"to": "v2", **FAST})
        assert status == 404 and "no route for model 'nope'" in doc["error"]
        status, doc = await mesh.call("POST", "/v1/canaries/m", {"to": "v7", **FAST})
        assert status == 409 and "no sidecar of model 'm' version 'v7' is registered" in doc["error"]
        status, doc = await mesh.call("POST", "/v1/canaries/m", {"to": "v2", "interval_s": 1})
        assert status == 409 and "--drift-url" in doc["error"] and "--no-drift" in doc["error"]
        status, doc = await mesh.call("GET", "/v1/canaries/m")
        assert status == 404 and "sidemesh canary start m" in doc["error"]
        status, doc = await mesh.call("POST", "/v1/canaries/m/abort")
        assert status == 409 and "no canary of model 'm' is running" in doc["error"]
        status, doc = await mesh.call("POST", "/v1/canaries/m", {"to": "v2", **FAST})
        assert status == 201
        status, doc = await mesh.call("POST", "/v1/canaries/m", {"to": "v2", **FAST})
        assert status == 409 and "already running" in doc["error"] and "sidemesh canary abort m" in doc["error"]

    run(body, tmp_path)


def test_abort_restores_the_route_and_a_person_changing_the_route_stops_the_canary(tmp_path):
    async def body(mesh: Mesh):
        store = mesh.server.control_plane.store
        before = store.get("m")[0].to_dict()
        await mesh.call("POST", "/v1/canaries/m", {"to": "v2", **FAST})
        status, doc = await mesh.call("POST", "/v1/canaries/m/abort")
        assert status == 200 and doc["state"] == "aborted" and doc["reason"] == "aborted by anonymous"
        assert store.get("m")[0].to_dict() == before

        await mesh.call("POST", "/v1/canaries/m", {"to": "v2", **FAST})
        theirs = {"backends": [{"version": "v1", "weight": 70}, {"version": "v2", "weight": 30}]}
        assert (await mesh.call("PUT", "/v1/routes/m", theirs))[0] == 200
        async with asyncio.timeout(10):
            while (doc := await mesh.status())["active"]:
                await asyncio.sleep(0.05)
        assert doc["state"] == "aborted" and doc["failed_gate"] == "route_changed" and "anonymous changed the route" in doc["reason"]
        assert store.get("m")[0].weights == {"v1": 70, "v2": 30}  # their route stays
        status, listed = await mesh.call("GET", "/v1/canaries")
        assert [c["id"] for c in listed["canaries"]] == [doc["id"]]

    run(body, tmp_path)


def test_a_running_canary_resumes_after_a_control_plane_restart(tmp_path):
    async def first(mesh: Mesh):
        status, doc = await mesh.call("POST", "/v1/canaries/m", {"to": "v2", "steps": [30, 60], **FAST})
        return doc["id"]

    canary_id = run(first, tmp_path)

    async def second(mesh: Mesh):
        doc = await mesh.status()
        assert doc["id"] == canary_id and doc["active"] and doc["step"] == 0
        assert doc["history"][-1]["event"] == "resumed"
        assert mesh.server.control_plane.store.get("m")[0].weights == {"v1": 7000, "v2": 3000}
        async with Reporter(mesh.xds) as lrs:
            done = await mesh.until_finished(lambda doc: lrs.report("m|v2", issued=10))
        assert done["state"] == "promoted" and done["id"] == canary_id

    run(second, tmp_path)


def test_every_transition_is_sent_as_a_signed_webhook_event_in_order(tmp_path):
    secret = b"canary-secret-9d1c"
    (tmp_path / "secret").write_bytes(secret + b"\n")
    received: list[tuple[dict, dict]] = []

    async def receive(request: web.Request) -> web.Response:
        raw = await request.read()
        received.append((json.loads(raw), dict(request.headers)))
        assert request.headers["X-Sidemesh-Signature"] == "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()
        return web.json_response({"ok": True})

    async def body(mesh: Mesh):
        await mesh.call("POST", "/v1/canaries/m", {"to": "v2", "steps": [25, 75], **FAST})
        async with Reporter(mesh.xds) as lrs:
            done = await mesh.until_finished(lambda doc: lrs.report("m|v2", issued=10, errors=0 if doc["step"] == 0 else 5))
        async with asyncio.timeout(10):
            while len(received) < 3:
                await asyncio.sleep(0.02)
        return done

    app = web.Application()
    app.router.add_post("/hook", receive)
    port = free_port()
    done = run(body, tmp_path, receiver=(app, port), webhooks=(f"http://127.0.0.1:{port}/hook",),
               webhook_secret_file=tmp_path / "secret")
    docs = [doc for doc, _ in received]
    assert [d["status"] for d in docs] == ["started", "step", "rolled_back"]
    assert all(d["kind"] == "canary" and d["model"] == "m" and d["modelVersion"] == "v2" for d in docs)
    last = docs[-1]
    assert last["details"]["failed_gate"] == "error_ratio" and last["summary"] == done["history"][-1]["summary"]
    assert last["details"]["canary"] == done["id"] and last["details"]["step"] == 1
    assert last["details"]["route_version"] == done["route_version"]
    assert len({h["X-Sidemesh-Event-Id"] for _, h in received}) == 3
