"""The mesh with real processes on loopback: the control plane, one model server holding
tabular versions 1-3, and a sidecar per version, each asking its model server for its own
version. Requests enter the version-1 sidecar, as a client of the model would."""

from __future__ import annotations

import http.client
import json
import math
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from model_server.examples import tabular_data
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.control_plane.peers import ControlPlaneProcess, wait_until
from tests.sidecar.peers import SidecarProcess, total

MODEL = "tabular"


def _bodies(rows: int, seed: int = 11) -> list[bytes]:
    x, _ = tabular_data(seed, rows)
    return [json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": row.tolist()}]}).encode()
            for row in x]


class Client:
    """Drives requests through one sidecar on persistent connections from a few threads."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self._all.append(conn)
        return conn

    def close(self) -> None:
        for conn in self._all:
            conn.close()

    def infer(self, body: bytes, headers: dict | None = None) -> tuple[int, str | None, dict]:
        conn = self._conn()
        try:
            conn.request("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            data = response.read()
        except (ConnectionError, http.client.HTTPException):
            self._local.conn = None
            conn.close()
            raise
        return response.status, response.getheader("x-sidemesh-version"), json.loads(data)

    def many(self, bodies: list[bytes], headers=None, threads: int = 8) -> list[tuple[int, str | None, dict]]:
        try:
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(lambda i: self.infer(bodies[i], headers(i) if headers else None), range(len(bodies))))
        finally:
            self.close()


@pytest.fixture(scope="module")
def mesh(server, tmp_path_factory):
    cp = ControlPlaneProcess(tmp_path_factory.mktemp("cp") / "state.db").start()
    sidecars = {}
    try:
        for version in ("1", "2", "3"):
            sidecars[version] = SidecarProcess(MODEL, version, server.http, upstream_grpc=server.grpc,
                                               control_plane=f"127.0.0.1:{cp.xds_port}",
                                               extra_args=["--static-after", "never"]).start(wait_ready=False)
        yield cp, sidecars
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()
        cp.popen.send_signal(signal.SIGTERM)
        cp.popen.wait(30)
        cp.popen.stdout.close()


def put_route(cp: ControlPlaneProcess, sidecars: dict, doc: dict) -> int:
    status, body = cp.api("PUT", f"/v1/routes/{MODEL}", doc)
    assert status == 200, body
    state = body["version"]
    for sidecar in sidecars.values():
        wait_until(lambda s=sidecar: _dump(s)["table"] and (_dump(s)["table"]["routes"].get(MODEL) or {}).get("state_version", -1) >= state,
                   what=f"sidecar {sidecar.version} applying state {state}")
    # every sidecar knows every other version's endpoint
    wait_until(lambda: all(len(_dump(s)["table"]["clusters"].get(f"{MODEL}|{v}", {}).get("endpoints", [])) == 1
                           for s in sidecars.values() for v in sidecars), what="endpoints of every version")
    return state


def _dump(sidecar: SidecarProcess) -> dict:
    return json.loads(sidecar.admin("/config_dump")[2])


def _route(weights: dict, **extra) -> dict:
    return {"backends": [{"version": v, "weight": w} for v, w in weights.items()], **extra}


def _within_binomial(count: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_the_split_over_2000_requests_matches_the_weights_and_the_answering_version_is_named(mesh):
    cp, sidecars = mesh
    put_route(cp, sidecars, _route({"1": 70, "2": 30, "3": 0}))
    answers = Client(sidecars["1"].port).many(_bodies(2000))
    assert all(status == 200 for status, _, _ in answers)
    assert all(version == body["model_version"] for _, version, body in answers)  # the header names who answered
    twos = sum(version == "2" for _, version, _ in answers)
    assert {version for _, version, _ in answers} == {"1", "2"}
    assert _within_binomial(twos, 2000, 0.3), twos


def test_a_sticky_key_keeps_its_version_and_the_share_across_keys_follows_the_weights(mesh):
    cp, sidecars = mesh
    put_route(cp, sidecars, _route({"1": 50, "2": 50, "3": 0}, sticky_key="x-user"))
    bodies = _bodies(900)
    answers = Client(sidecars["1"].port).many(bodies, headers=lambda i: {"x-user": f"user-{i % 300}"})
    by_user: dict[int, set] = {}
    for i, (status, version, _) in enumerate(answers):
        assert status == 200
        by_user.setdefault(i % 300, set()).add(version)
    assert all(len(versions) == 1 for versions in by_user.values())
    twos = sum(versions == {"2"} for versions in by_user.values())
    assert _within_binomial(twos, 300, 0.5), twos


def test_the_pin_header_and_a_versioned_path_reach_that_version_even_a_shadow(mesh):
    cp, sidecars = mesh
    put_route(cp, sidecars, _route({"1": 100, "2": 0, "3": 0}))
    client = Client(sidecars["1"].port)
    for version in ("2", "3"):
        status, answered, body = client.infer(_bodies(1)[0], {"x-sidemesh-version": version})
        assert (status, answered, body["model_version"]) == (200, version, version)
    client.close()
    status, headers, body = sidecars["1"].call("POST", f"/v2/models/{MODEL}/versions/2/infer", _bodies(1)[0])
    assert status == 200 and headers["x-sidemesh-version"] == "2" and json.loads(body)["model_version"] == "2"


def test_the_mirror_gets_its_share_and_the_agreement_reflects_how_the_versions_differ(mesh):
    cp, sidecars = mesh
    put_route(cp, sidecars, _route({"1": 50, "2": 50, "3": 0}, mirrors=[{"version": "3", "percent": 40}]))
    entry, shadow = sidecars["1"], sidecars["3"]
    before = total(shadow.metrics(), "sidemesh_requests_total", model=MODEL, version="3")
    n = 1500
    answers = Client(entry.port).many(_bodies(n, seed=5))
    assert all(status == 200 and version in ("1", "2") for status, version, _ in answers)  # the shadow never answers
    wait_until(lambda: total(entry.metrics(), "sidemesh_mirror_pending") == 0, what="mirror copies to finish")
    m = entry.metrics()
    copied = total(m, "sidemesh_mirror_requests_total", outcome="ok")
    received = total(shadow.metrics(), "sidemesh_requests_total", model=MODEL, version="3") - before
    assert copied == received
    assert _within_binomial(copied, n, 0.4), copied
    for primary in ("1", "2"):
        rows = total(m, "sidemesh_mirror_compared_rows_total", version=primary, shadow_version="3")
        agreed = total(m, "sidemesh_mirror_agreed_rows_total", version=primary, shadow_version="3")
        # version 3 was fitted with noisier labels: it mostly agrees, never completely
        assert rows > 100 and 0.5 < agreed / rows < 0.97, (primary, agreed, rows)
        # negative buckets: OpenMetrics leaves out _count and _sum, the +Inf bucket counts
        assert total(m, "sidemesh_mirror_latency_delta_seconds_bucket", version=primary, shadow_version="3", le="+Inf") == rows
        assert total(m, "sidemesh_mirror_max_abs_diff_count", version=primary, shadow_version="3") == rows


def test_a_weight_change_applies_live_without_a_failed_request(mesh):
    cp, sidecars = mesh
    put_route(cp, sidecars, _route({"1": 80, "2": 20, "3": 0}))
    client = Client(sidecars["1"].port)
    results, stop = [], threading.Event()
    bodies = _bodies(50)

    def traffic():
        i = 0
        while not stop.is_set() and i < 20_000:
            results.append(client.infer(bodies[i % 50]))
            i += 1

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for w in workers:
        w.start()
    wait_until(lambda: len(results) > 200, what="traffic before the change")
    put_route(cp, sidecars, _route({"1": 0, "2": 100, "3": 0}))
    mark = len(results)
    wait_until(lambda: len(results) > mark + 200, what="traffic after the change")
    stop.set()
    for w in workers:
        w.join(30)
    client.close()
    assert [r for r in results if r[0] != 200] == []
    assert {version for _, version, _ in results[mark + 50:]} == {"2"}


def test_traffic_is_unaffected_while_the_control_plane_is_gone_and_it_resyncs_on_return(mesh):
    cp, sidecars = mesh
    put_route(cp, sidecars, _route({"1": 60, "2": 40, "3": 0}))
    entry = sidecars["1"]
    cp.popen.send_signal(signal.SIGKILL)
    cp.popen.wait(10)
    cp.popen.stdout.close()
    wait_until(lambda: total(entry.metrics(), "sidemesh_xds_connected") == 0, what="the sidecar noticing")
    answers = Client(entry.port).many(_bodies(600))
    assert all(status == 200 for status, _, _ in answers)
    assert _within_binomial(sum(v == "2" for _, v, _ in answers), 600, 0.4)
    assert entry.admin("/healthz/ready")[0] == 200  # the last good config keeps serving
    restarted = ControlPlaneProcess(cp.state, admin_port=cp.admin_port, xds_port=cp.xds_port).start()
    cp.popen, cp.lines = restarted.popen, restarted.lines
    wait_until(lambda: all(total(s.metrics(), "sidemesh_xds_connected") == 1 for s in sidecars.values()), what="reconnection")
    put_route(cp, sidecars, _route({"1": 0, "2": 100, "3": 0}))
    assert {v for _, v, _ in Client(entry.port).many(_bodies(100))} == {"2"}


def test_grpc_requests_are_split_and_answer_with_the_version_in_metadata(mesh):
    cp, sidecars = mesh
    put_route(cp, sidecars, _route({"1": 50, "2": 50, "3": 0}))
    x, _ = tabular_data(3, 400)
    channel = grpc.insecure_channel(f"127.0.0.1:{sidecars['1'].grpc_port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    seen = []
    for row in x:
        request = pb.ModelInferRequest(model_name=MODEL)
        tensor = request.inputs.add(name="features", datatype="FP32", shape=[1, 8])
        tensor.contents.fp32_contents.extend(row.tolist())
        response, call = stub.ModelInfer.with_call(request, timeout=30)
        header = dict(call.initial_metadata())["x-sidemesh-version"]
        assert header == response.model_version
        seen.append(header)
    channel.close()
    assert _within_binomial(seen.count("2"), 400, 0.5)


def test_tritonclient_works_through_the_sidecar_over_http_and_grpc(mesh):
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    cp, sidecars = mesh
    put_route(cp, sidecars, _route({"1": 100, "2": 0, "3": 0}))
    x = tabular_data(1, 4)[0]
    for module, port in ((triton_http, sidecars["1"].port), (triton_grpc, sidecars["1"].grpc_port)):
        client = module.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_ready() and client.is_model_ready(MODEL)
        tensor = module.InferInput("features", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, **({"binary_data": True} if module is triton_http else {}))
        result = client.infer(MODEL, [tensor])
        assert result.as_numpy("probabilities").shape == (4, 3)
        assert np.allclose(result.as_numpy("probabilities").sum(axis=1), 1, atol=1e-5)
        client.close()


def test_bad_input_at_the_sidecar_gets_a_clear_error_and_it_keeps_serving(mesh):
    cp, sidecars = mesh
    put_route(cp, sidecars, _route({"1": 100, "2": 0, "3": 0}))
    entry = sidecars["1"]
    status, headers, body = entry.infer(headers={"x-sidemesh-version": "9"})
    assert status == 400 and "x-sidemesh-version header names version '9'" in json.loads(body)["error"]
    status, _, body = entry.call("POST", f"/v2/models/{MODEL}/versions/9/infer", b"{}")
    assert status == 404 and "request path names version '9'" in json.loads(body)["error"]
    status, headers, body = entry.infer(body=b'{"inputs": [{"name": "features"')
    assert status == 400 and headers["x-sidemesh-version"] == "1" and "error" in json.loads(body)  # the model server's own 400
    status, _, body = entry.admin("/nope")
    assert status == 404 and "/healthz/ready" in json.loads(body)["error"]
    with pytest.raises(grpc.RpcError) as err:
        channel = grpc.insecure_channel(f"127.0.0.1:{entry.grpc_port}")
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            pb.ModelInferRequest(model_name=MODEL), metadata=(("x-sidemesh-version", "9"),), timeout=10)
    channel.close()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'9'" in err.value.details()
    assert entry.infer()[0] == 200


def test_a_stock_envoy_in_front_splits_once_and_each_sidecar_serves_its_own_version(mesh, tmp_path):
    """Envoy takes the same routes over xDS; its hop mark makes the sidecar it picks answer
    locally, so the split is Envoy's alone and the answering version is the one it chose."""
    from tests.control_plane.peers import EnvoyProcess

    cp, sidecars = mesh
    state = put_route(cp, sidecars, _route({"1": 25, "2": 75, "3": 0}))
    envoy = EnvoyProcess(tmp_path, cp.xds_port)
    try:
        wait_until(lambda: any(n["id"] == "front-envoy" and (n["acked_state_version"] or 0) >= state for n in cp.nodes()),
                   what="Envoy acknowledging the routes")
        wait_until(envoy.serves_listener, what="Envoy's listener")
        answers = Client(envoy.listen_port).many(_bodies(800), threads=4)
    finally:
        envoy.stop()
    assert all(status == 200 and version == body["model_version"] for status, version, body in answers)
    assert _within_binomial(sum(v == "2" for _, v, _ in answers), 800, 0.75)
