"""Proof against a real peer: a stock Envoy 1.40, bootstrapped only with ADS pointing at
our control plane, routes and mirrors exactly as the routing state says."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import urllib.request

import pytest

from control_plane.routing import Route
from control_plane.store import RouteStore
from tests.control_plane.peers import Backend, ControlPlaneProcess, EnvoyProcess, wait_until

PATH = "/v2/models/tabular/infer"
REQUESTS = 2000


def within_binomial(observed: int, n: int, p: float, z: float = 5.0) -> bool:
    """|observed - np| within z standard deviations (z=5: a false failure ~1 in 1.7M runs)."""
    return abs(observed - n * p) <= z * math.sqrt(n * p * (1 - p))


@pytest.fixture(scope="module")
def backends():
    made = {name: Backend(name) for name in ("v1", "v2", "v3")}
    yield made
    for b in made.values():
        b.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, backends):
    workdir = tmp_path_factory.mktemp("envoy")
    cp = ControlPlaneProcess(workdir / "cp.db").start()
    envoy = EnvoyProcess(workdir, cp.xds_port)
    yield cp, envoy, workdir
    envoy.stop()
    cp.stop()


def route(backends, weights: dict[str, int], mirror_percent: float | None = None, extra_v1: list[str] = ()) -> dict:
    doc = {"backends": [
        {"version": v, "weight": weights.get(v, 0), "endpoints": [backends[v].address, *(extra_v1 if v == "v1" else [])]}
        for v in ("v1", "v2", "v3")
    ]}
    if mirror_percent is not None:
        doc["mirrors"] = [{"version": "v3", "percent": mirror_percent}]
    return doc


def apply(cp: ControlPlaneProcess, doc: dict) -> int:
    status, body = cp.api("PUT", "/v1/routes/tabular", doc)
    assert status == 200, body
    return body["version"]


def wait_acked(cp: ControlPlaneProcess, version: int) -> None:
    wait_until(lambda: any(n["id"] == "front-envoy" and (n["acked_state_version"] or 0) >= version for n in cp.nodes()),
               60, f"Envoy to ACK state version {version}")


def test_envoy_splits_traffic_by_the_weights(mesh, backends):
    cp, envoy, _ = mesh
    wait_acked(cp, apply(cp, route(backends, {"v1": 70, "v2": 30})))
    seen, failed = envoy.count(PATH, REQUESTS)
    assert failed == 0
    assert set(seen) == {"v1", "v2"}
    assert within_binomial(seen["v2"], REQUESTS, 0.30), seen
    scraped = urllib.request.urlopen(cp.url + "/metrics", timeout=30).read().decode()
    assert "sidemesh_xds_connected_nodes 1.0" in scraped and "sidemesh_xds_stale_nodes 0.0" in scraped
    assert 'sidemesh_xds_responses_total{type="route"}' in scraped


def test_envoy_mirrors_the_configured_share_to_the_shadow(mesh, backends):
    cp, envoy, _ = mesh
    wait_acked(cp, apply(cp, route(backends, {"v1": 50, "v2": 50}, mirror_percent=12.5)))
    for b in backends.values():
        b.reset()
    seen, failed = envoy.count(PATH, REQUESTS)
    assert failed == 0 and "v3" not in seen, "a shadow must never answer"
    wait_until(lambda: backends["v3"].shadow + backends["v3"].primary >= 0.5 * REQUESTS * 0.125, 30, "mirrored copies")
    assert backends["v3"].primary == 0
    assert within_binomial(backends["v3"].shadow, REQUESTS, 0.125), backends["v3"].shadow


def sidemesh(cp: ControlPlaneProcess, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SIDEMESH_TOKEN="")
    return subprocess.run([sys.executable, "-m", "sidemesh", *args, "--control-plane", cp.url],
                          capture_output=True, text=True, timeout=60, env=env)


def test_sidemesh_split_changes_envoy_live_without_a_failed_request(mesh, backends):
    cp, envoy, _ = mesh
    wait_acked(cp, apply(cp, route(backends, {"v1": 100})))
    stop = threading.Event()
    outcome = {"ok": 0, "failed": 0}

    def drive() -> None:  # bounded: stops on the event or after 20,000 requests
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=30)
        for _ in range(20_000):
            if stop.is_set():
                break
            status, _ = envoy.post(PATH, conn)
            outcome["ok" if status == 200 else "failed"] += 1
        conn.close()

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        wait_until(lambda: outcome["ok"] >= 100, 30, "traffic to flow")
        result = sidemesh(cp, "split", "tabular", "v1=0", "v2=100")
        assert result.returncode == 0, result.stderr
        version = cp.api("GET", "/v1/routes/tabular")[1]["version"]
        wait_acked(cp, version)
        before = outcome["ok"]
        wait_until(lambda: outcome["ok"] >= before + 100, 30, "traffic after the change")
    finally:
        stop.set()
        driver.join(60)
    assert outcome["failed"] == 0
    seen, failed = envoy.count(PATH, 200)
    assert failed == 0 and dict(seen) == {"v2": 200}


def test_a_change_envoy_rejects_is_a_nack_and_envoy_keeps_its_last_good_config(mesh, backends):
    cp, envoy, _ = mesh
    good = apply(cp, route(backends, {"v1": 100}))
    wait_acked(cp, good)
    # Our validation accepts host names (sidecars resolve them); Envoy's EDS takes IPs only.
    rejected = apply(cp, route(backends, {"v1": 100}, extra_v1=["model-v1.example.invalid:8000"]))
    nack = wait_until(lambda: next((n["last_nack"] for n in cp.nodes() if n["id"] == "front-envoy" and n["last_nack"]), None),
                      60, "Envoy's NACK")
    assert nack["type_url"].endswith("ClusterLoadAssignment")
    assert "model-v1.example.invalid" in nack["error"]
    node = next(n for n in cp.nodes() if n["id"] == "front-envoy")
    assert node["acked_state_version"] < rejected
    shown = sidemesh(cp, "routes", "tabular")
    assert shown.returncode == 0, shown.stderr
    assert "model-v1.example.invalid" in shown.stdout and "front-envoy" in shown.stdout
    seen, failed = envoy.count(PATH, 300)
    assert failed == 0 and dict(seen) == {"v1": 300}, "Envoy must keep serving the last good endpoints"
    scraped = urllib.request.urlopen(cp.url + "/metrics", timeout=30).read().decode()
    assert 'sidemesh_xds_nacks_total{type="endpoint"} 1.0' in scraped
    assert "sidemesh_xds_nacked_nodes 1.0" in scraped and "sidemesh_xds_stale_nodes 1.0" in scraped


def test_envoy_rides_out_a_control_plane_outage_and_resyncs_when_it_returns(mesh, backends):
    cp, envoy, _ = mesh
    wait_acked(cp, apply(cp, route(backends, {"v1": 100})))
    assert cp.stop() == 0
    seen, failed = envoy.count(PATH, 300)
    assert failed == 0 and dict(seen) == {"v1": 300}, "Envoy keeps routing on its last config"
    # The state changes while the control plane is away (a restore, another replica ...).
    store = RouteStore(cp.state)
    changed = store.put(Route.from_dict("tabular", route(backends, {"v2": 100})), "operator").version
    store.close()
    cp.start()
    wait_acked(cp, changed)
    seen, failed = envoy.count(PATH, 300)
    assert failed == 0 and dict(seen) == {"v2": 300}
