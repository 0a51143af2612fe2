"""Load reports (Envoy LRS) from real sidecar processes to a test LRS server written here
with envoy-data-plane's message types (the control plane's): each client request is
reported once, on the version that answered it, however many sidecars it crossed; shadow
outcomes match the sidecars' own Prometheus counters; a server without LRS costs one line
and no busy loop; counts made while the server is away arrive when it returns; a new
response narrows what is reported; stopping sends the last counts."""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import warnings

import grpc
import pytest

from model_server.examples import tabular_data
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from sidemesh import load_metrics as lm
from tests.control_plane.peers import ControlPlaneProcess, free_port, wait_until
from tests.sidecar.peers import ScriptedUpstream, SidecarProcess, total

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.service.load_stats.v3 import LoadStatsRequest, LoadStatsResponse

MODEL = "tabular"
_LATENCY = set(lm.bucket_names(lm.LATENCY))
_SHADOW_LATENCY = set(lm.bucket_names(lm.SHADOW_LATENCY))


class _Stream:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.node_id: str | None = None
        self.requests: list[LoadStatsRequest] = []
        self.outbox: asyncio.Queue = asyncio.Queue()


class LrsServer:
    """A grpc.aio LRS server in its own thread. Each stream's first request (the node) gets
    ``first``; every request is kept. ``implemented=False`` answers UNIMPLEMENTED, as a
    server without LRS does, and counts the attempts."""

    def __init__(self, port: int | None = None, interval_s: float = 0.2, implemented: bool = True) -> None:
        self.port = port or free_port()
        self.first = LoadStatsResponse(send_all_clusters=True, load_reporting_interval=datetime.timedelta(seconds=interval_s))
        self.implemented = implemented
        self.calls = 0
        self.streams: list[_Stream] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the LRS server did not start")

    async def _stream(self, requests, context):
        self.calls += 1
        if not self.implemented:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no load reporting here")
        stream = _Stream(asyncio.get_running_loop())
        self.streams.append(stream)

        async def read():
            async for request in requests:
                if stream.node_id is None:
                    stream.node_id = request.node.id
                    stream.outbox.put_nowait(self.first)
                stream.requests.append(request)
            stream.outbox.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (response := await stream.outbox.get()) is not None:
                yield bytes(response)
        finally:
            reader.cancel()

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()

        async def start():
            self._server = grpc.aio.server()
            self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                "envoy.service.load_stats.v3.LoadReportingService",
                {"StreamLoadStats": grpc.stream_stream_rpc_method_handler(
                    self._stream, request_deserializer=LoadStatsRequest.FromString, response_serializer=None)}),))
            self._server.add_insecure_port(f"127.0.0.1:{self.port}")
            await self._server.start()

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    def push(self, response: LoadStatsResponse) -> None:
        """Send ``response`` on every open stream."""
        for stream in self.streams:
            stream.loop.call_soon_threadsafe(stream.outbox.put_nowait, response)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reports(self, node_prefix: str = "") -> list[LoadStatsRequest]:
        """Every report after the first request of each stream, from nodes whose id starts so."""
        return [r for s in list(self.streams) if (s.node_id or "").startswith(node_prefix) for r in list(s.requests)[1:]]

    def totals(self, node_prefix: str = "") -> dict[str, dict]:
        """cluster -> summed issued/ok/errors and metrics {name: [count, value]}."""
        out: dict[str, dict] = {}
        for report in self.reports(node_prefix):
            for cluster in report.cluster_stats:
                t = out.setdefault(cluster.cluster_name, {"issued": 0, "ok": 0, "errors": 0, "metrics": {}})
                for locality in cluster.upstream_locality_stats:
                    t["issued"] += locality.total_issued_requests
                    t["ok"] += locality.total_successful_requests
                    t["errors"] += locality.total_error_requests
                    for m in locality.load_metric_stats:
                        acc = t["metrics"].setdefault(m.metric_name, [0, 0.0])
                        acc[0] += m.num_requests_finished_with_metric
                        acc[1] += m.total_metric_value
        return out


def _count(totals: dict, cluster: str, metric: str) -> int:
    return totals.get(cluster, {}).get("metrics", {}).get(metric, [0, 0.0])[0]


def _value(totals: dict, cluster: str, metric: str) -> float:
    return totals.get(cluster, {}).get("metrics", {}).get(metric, [0, 0.0])[1]


def _issued(totals: dict) -> int:
    return sum(t["issued"] for t in totals.values())


def _reports_from(server: LrsServer, node_prefix: str) -> int:
    return len(server.reports(node_prefix))


def _wait_more_reports(server: LrsServer, node_prefixes: list[str], more: int = 2) -> None:
    """Until every node has sent ``more`` reports past the ones seen now: whatever it
    counted before this call has been reported."""
    seen = {p: _reports_from(server, p) for p in node_prefixes}
    wait_until(lambda: all(_reports_from(server, p) >= seen[p] + more for p in node_prefixes), what="more reports")


def _dump(sidecar: SidecarProcess) -> dict:
    return json.loads(sidecar.admin("/config_dump")[2])


# --- the mesh ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(server, tmp_path_factory):
    """The control plane, sidecars of versions 1 and 3 on the real model server, version 2
    on a scripted upstream (it answers 500 when told) without gRPC; every sidecar reports to
    one test LRS server."""
    lrs = LrsServer()
    scripted = ScriptedUpstream("2")
    cp = ControlPlaneProcess(tmp_path_factory.mktemp("cp") / "state.db").start()
    sidecars = {}
    try:
        for version in ("1", "2", "3"):
            sidecars[version] = SidecarProcess(
                MODEL, version, server.http if version != "2" else scripted.address,
                upstream_grpc=server.grpc if version != "2" else None, control_plane=f"127.0.0.1:{cp.xds_port}",
                extra_args=["--static-after", "never", "--node-id", f"lrs-{version}", "--load-report-to", lrs.address],
            ).start(wait_ready=False)
        status, body = cp.api("PUT", f"/v1/routes/{MODEL}", {
            "backends": [{"version": "1", "weight": 50}, {"version": "2", "weight": 50}, {"version": "3", "weight": 0}],
            "mirrors": [{"version": "3", "percent": 100}]})
        assert status == 200, body
        wait_until(lambda: all(len((_dump(s)["table"] or {"clusters": {}})["clusters"].get(f"{MODEL}|{v}", {}).get("endpoints", [])) == 1
                               for s in sidecars.values() for v in sidecars), what="every sidecar knowing every version")
        wait_until(lambda: all(_dump(s)["load_reports"]["connected"] for s in sidecars.values()), what="load report streams")
        yield lrs, scripted, sidecars
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()
        cp.stop()
        scripted.close()
        lrs.close()


def _rest(sidecar: SidecarProcess, bodies: list[bytes]) -> dict[str, list[int]]:
    """Statuses by the version that answered."""
    seen: dict[str, list[int]] = {}
    for body in bodies:
        status, headers, _ = sidecar.call("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
        seen.setdefault(headers["x-sidemesh-version"], []).append(status)
    return seen


def _grpc(sidecar: SidecarProcess, rows) -> dict[str, list[str]]:
    """gRPC codes by the version that answered (from the initial metadata, failures too)."""
    seen: dict[str, list[str]] = {}
    with grpc.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for row in rows:
            request = pb.ModelInferRequest(model_name=MODEL)
            request.inputs.add(name="features", datatype="FP32", shape=[1, 8]).contents.fp32_contents.extend(row.tolist())
            try:
                _, call = stub.ModelInfer.with_call(request, timeout=30)
                code = "OK"
            except grpc.RpcError as exc:
                call, code = exc, exc.code().name
            seen.setdefault(dict(call.initial_metadata())["x-sidemesh-version"], []).append(code)
    return seen


def test_each_client_request_is_reported_once_on_the_version_that_answered_it(mesh):
    lrs, scripted, sidecars = mesh
    scripted.script(statuses=[500, 200, 500, 200, 500])  # spaced out: no ejection (5 in a row)
    x, _ = tabular_data(5, 120)
    bodies = [json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": row.tolist()}]}).encode()
              for row in x]
    rest_1 = _rest(sidecars["1"], bodies[:80])
    rest_2 = _rest(sidecars["2"], bodies[80:])  # another entry: its requests for version 1 cross to sidecar 1
    rpc_1 = _grpc(sidecars["1"], x[:40])  # version 2 has no gRPC: those fail with UNAVAILABLE (a 5xx)
    for sidecar in sidecars.values():  # not inference: never reported
        assert sidecar.call("GET", f"/v2/models/{MODEL}")[0] == 200

    expected = {v: {"issued": 0, "errors": 0} for v in ("1", "2")}
    for seen in (rest_1, rest_2):
        for version, statuses in seen.items():
            expected[version]["issued"] += len(statuses)
            expected[version]["errors"] += sum(s >= 500 for s in statuses)
    for version, codes in rpc_1.items():
        expected[version]["issued"] += len(codes)
        expected[version]["errors"] += sum(c == "UNAVAILABLE" for c in codes)
    assert expected["2"]["errors"] >= 3 + len(rpc_1.get("2", [])) and expected["1"]["errors"] == 0
    assert set(rest_1) == set(rest_2) == {"1", "2"}

    wait_until(lambda: _issued(lrs.totals("lrs-")) >= 160, what="every request reported")
    _wait_more_reports(lrs, ["lrs-1", "lrs-2", "lrs-3"])
    totals = lrs.totals("lrs-")
    for version in ("1", "2"):
        got = totals[f"{MODEL}|{version}"]
        assert (got["issued"], got["errors"], got["ok"]) == (
            expected[version]["issued"], expected[version]["errors"], expected[version]["issued"] - expected[version]["errors"]), version
        buckets = {name: count for name, (count, _) in got["metrics"].items() if name in _LATENCY}
        assert sum(buckets.values()) == got["issued"]
        assert all(value >= 0 for name, (_, value) in got["metrics"].items() if name in _LATENCY)
    assert totals.get(f"{MODEL}|3", {}).get("issued", 0) == 0  # the shadow got only copies
    # The sidecar that served forwarded requests did not count them: entries only.
    assert _issued(lrs.totals("lrs-3")) == 0
    assert _issued(lrs.totals("lrs-1")) == 120 and _issued(lrs.totals("lrs-2")) == 40


def test_shadow_outcomes_in_the_reports_match_the_sidecars_own_mirror_counters(mesh):
    lrs, scripted, sidecars = mesh
    scripted.script()
    x, _ = tabular_data(7, 60)
    _rest(sidecars["1"], [json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8],
                                                  "data": row.tolist()}]}).encode() for row in x])
    _grpc(sidecars["1"], x[:20])
    for sidecar in sidecars.values():
        wait_until(lambda s=sidecar: total(s.metrics(), "sidemesh_mirror_pending") == 0, what="mirror copies to finish")
    _wait_more_reports(lrs, ["lrs-1", "lrs-2"])
    totals = lrs.totals("lrs-")
    shadow = f"{MODEL}|3"
    metrics = [s.metrics() for s in sidecars.values()]

    def prom(name: str, **labels) -> float:
        return sum(total(m, name, shadow_version="3", **labels) for m in metrics)

    answers = prom("sidemesh_mirror_requests_total", outcome="ok")
    assert answers > 0 and _count(totals, shadow, lm.SHADOW_ANSWERS) == answers
    assert _count(totals, shadow, lm.SHADOW_ERRORS) == prom("sidemesh_mirror_requests_total", outcome="shadow_error")
    assert _value(totals, shadow, lm.SHADOW_COMPARED_ROWS) == prom("sidemesh_mirror_compared_rows_total") > 0
    assert _value(totals, shadow, lm.SHADOW_AGREED_ROWS) == prom("sidemesh_mirror_agreed_rows_total") > 0
    assert _count(totals, shadow, lm.SHADOW_MISMATCHES) == prom("sidemesh_mirror_mismatches_total")
    assert sum(count for name, (count, _) in totals[shadow]["metrics"].items() if name in _SHADOW_LATENCY) == answers
    for sidecar in sidecars.values():
        m = sidecar.metrics()
        assert total(m, "sidemesh_load_reports_sent_total") >= 2 and total(m, "sidemesh_load_report_connected") == 1


# --- one sidecar, static routing ------------------------------------------------------------


def _lone_sidecar(lrs: LrsServer, upstream: ScriptedUpstream) -> SidecarProcess:
    return SidecarProcess("m", "1", upstream.address, extra_args=["--load-report-to", lrs.address, "--node-id", "lone"]).start()


@pytest.fixture
def upstream():
    scripted = ScriptedUpstream("1")
    yield scripted
    scripted.close()


def test_a_server_without_lrs_gets_one_line_and_no_busy_retries(upstream):
    lrs = LrsServer(implemented=False)
    try:
        with _lone_sidecar(lrs, upstream) as sidecar:
            wait_until(lambda: any("does not take load reports (UNIMPLEMENTED" in line for line in sidecar.lines), what="the line")
            # Once UNIMPLEMENTED is heard, the next attempt waits a minute. (A refusal that races the
            # first write reads as INTERNAL on the client and is retried with the xDS backoff, so on a
            # loaded machine it can take a few quick attempts to hear it.)
            heard = lrs.calls
            assert heard <= 5
            assert [sidecar.infer()[0] for _ in range(20)] == [200] * 20
            assert lrs.calls == heard
            assert total(sidecar.metrics(), "sidemesh_load_report_connected") == 0
            assert _dump(sidecar)["load_reports"]["last_error"].startswith("UNIMPLEMENTED")
        assert sidecar.proc.returncode == 0
        assert sum("does not take load reports" in line for line in sidecar.lines) == 1
    finally:
        lrs.close()


def test_counts_made_while_the_server_is_away_arrive_when_it_returns(upstream):
    lrs = LrsServer()
    port = lrs.port
    with _lone_sidecar(lrs, upstream) as sidecar:
        wait_until(lambda: _dump(sidecar)["load_reports"]["connected"], what="the load report stream")
        assert [sidecar.infer()[0] for _ in range(10)] == [200] * 10
        wait_until(lambda: _issued(lrs.totals()) == 10, what="the first 10 reported")
        lrs.close()
        wait_until(lambda: not _dump(sidecar)["load_reports"]["connected"], what="the sidecar noticing the server left")
        upstream.script(statuses=[503, 503])
        assert [sidecar.infer()[0] for _ in range(15)] == [503, 503] + [200] * 13
        back = LrsServer(port=port)
        try:
            wait_until(lambda: _issued(back.totals()) >= 15, what="the 15 made while away")
            _wait_more_reports(back, ["lone"])
            totals = back.totals()["m|1"]
            assert (totals["issued"], totals["errors"]) == (15, 2)
            assert _issued(lrs.totals()) == 10  # nothing counted twice
            assert _dump(sidecar)["load_reports"]["reconnects_total"] >= 1
        finally:
            back.close()


def test_a_new_response_narrows_the_clusters_and_the_rest_is_counted_as_dropped(upstream):
    lrs = LrsServer()
    try:
        with _lone_sidecar(lrs, upstream) as sidecar:
            wait_until(lambda: _dump(sidecar)["load_reports"]["connected"], what="the load report stream")
            lrs.push(LoadStatsResponse(clusters=["other|1"], load_reporting_interval=datetime.timedelta(seconds=0.1)))
            wait_until(lambda: _dump(sidecar)["load_reports"]["clusters"] == ["other|1"], what="the new response applied")
            before = len(lrs.reports())
            assert [sidecar.infer()[0] for _ in range(5)] == [200] * 5
            wait_until(lambda: total(sidecar.metrics(), "sidemesh_load_report_dropped_total", reason="not_requested") == 5,
                       what="the 5 requests counted as not requested")
            assert all(not r.cluster_stats for r in lrs.reports()[before:])
            assert _dump(sidecar)["load_reports"]["interval_s"] == pytest.approx(0.1)
    finally:
        lrs.close()


def test_stopping_sends_what_was_counted_since_the_last_report(upstream):
    lrs = LrsServer(interval_s=3600)  # no report would come on its own
    try:
        with _lone_sidecar(lrs, upstream) as sidecar:
            wait_until(lambda: _dump(sidecar)["load_reports"]["connected"], what="the load report stream")
            assert [sidecar.infer()[0] for _ in range(7)] == [200] * 7
            assert lrs.reports() == []
        assert sidecar.proc.returncode == 0
        wait_until(lambda: lrs.totals().get("m|1", {}).get("issued") == 7, what="the last report")
        assert lrs.streams[0].node_id == "lone"
    finally:
        lrs.close()


def test_the_first_request_names_the_node_as_the_xds_client_does(upstream):
    lrs = LrsServer()
    try:
        with _lone_sidecar(lrs, upstream):
            wait_until(lambda: lrs.streams and lrs.streams[0].requests, what="the first request")
            first = lrs.streams[0].requests[0]
            assert first.node.id == "lone" and first.node.cluster == "m" and not first.cluster_stats
            assert first.node.metadata.to_dict()["model"] == "m" and first.node.metadata.to_dict()["version"] == "1"
    finally:
        lrs.close()
