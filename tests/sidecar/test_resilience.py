"""Timeouts, retries and their budget, outlier ejection, load shedding, drain, and the
static fallback, each against real processes: the control plane routes model ``m`` to
scripted upstreams (static endpoints), and requests enter a sidecar of model ``m``."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.control_plane.peers import ControlPlaneProcess, free_port, wait_until
from tests.sidecar.peers import ScriptedUpstream, SidecarProcess, total


@pytest.fixture(scope="module")
def cp(tmp_path_factory):
    proc = ControlPlaneProcess(tmp_path_factory.mktemp("cp") / "state.db").start()
    yield proc
    proc.popen.send_signal(signal.SIGTERM)
    proc.popen.wait(30)
    proc.popen.stdout.close()


@pytest.fixture
def upstreams():
    made = [ScriptedUpstream(name) for name in ("a", "b", "local")]
    yield made
    for upstream in made:
        upstream.close()


def _route(cp, endpoints: list[str], **extra) -> None:
    doc = {"backends": [{"version": "edge", "weight": 0}, {"version": "1", "weight": 100, "endpoints": endpoints}], **extra}
    status, body = cp.api("PUT", "/v1/routes/m", doc)
    assert status == 200, body


def _sidecar(cp, local: ScriptedUpstream, *args: str) -> SidecarProcess:
    sidecar = SidecarProcess("m", "edge", local.address, control_plane=f"127.0.0.1:{cp.xds_port}",
                             extra_args=["--static-after", "never", *args]).start()
    doc = cp.api("GET", "/v1/routes/m")[1]
    endpoints = {e for b in doc["route"]["backends"] if b["version"] == "1" for e in b.get("endpoints", [])}

    def applied() -> bool:
        table = json.loads(sidecar.admin("/config_dump")[2])["table"]
        route = table["routes"].get("m") or {}
        return route.get("state_version") == doc["version"] and set(table["clusters"]["m|1"]["endpoints"]) == endpoints

    wait_until(applied, what="the sidecar applying the route and its endpoints")
    return sidecar


def _error(body: bytes) -> str:
    return json.loads(body)["error"]


def test_a_route_timeout_answers_504_saying_so_long_before_the_upstream_would(cp, upstreams):
    a, _, local = upstreams
    _route(cp, [a.address], timeout_ms=300)
    a.script(delay_s=3)
    with _sidecar(cp, local) as sidecar:
        started = time.monotonic()
        status, headers, body = sidecar.infer()
        took = time.monotonic() - started
    assert status == 504 and "did not answer in time" in _error(body) and headers["x-sidemesh-version"] == "1", body
    assert took < 2.5


def test_a_connect_failure_is_retried_on_another_endpoint(cp, upstreams):
    a, _, local = upstreams
    dead = f"127.0.0.1:{free_port()}"
    _route(cp, [dead, a.address], retry={"attempts": 2, "on": ["connect-failure"]})
    with _sidecar(cp, local) as sidecar:
        answers = [sidecar.infer()[0] for _ in range(40)]
        m = sidecar.metrics()
    assert answers == [200] * 40
    assert total(m, "sidemesh_retries_total", reason="connect-failure") >= 1
    assert a.requests == 40


def test_a_503_is_retried_when_the_route_asks_and_passed_through_when_not(cp, upstreams):
    a, _, local = upstreams
    _route(cp, [a.address], retry={"attempts": 1, "on": ["gateway-error"]})
    with _sidecar(cp, local) as sidecar:
        a.script(statuses=[503])
        assert sidecar.infer()[0] == 200 and a.requests == 2
        a.script(statuses=[503, 503])
        status, _, body = sidecar.infer()  # one retry only: the second 503 is the answer
        assert status == 503 and "scripted 503" in _error(body)
        assert total(sidecar.metrics(), "sidemesh_retries_total", reason="gateway-error") == 2
    _route(cp, [a.address], retry={"attempts": 0})
    with _sidecar(cp, local) as sidecar:
        before = a.requests
        a.script(statuses=[503])
        assert sidecar.infer()[0] == 503 and a.requests == before + 1


def test_the_retry_budget_caps_retries_when_everything_fails(cp, upstreams):
    a, _, local = upstreams
    _route(cp, [a.address], retry={"attempts": 3, "on": ["5xx"]})
    a.script(statuses=[500] * 10_000, delay_s=0.05)
    with _sidecar(cp, local, "--retry-budget", "0.1", "--eject-after", "100000") as sidecar:
        with ThreadPoolExecutor(30) as pool:
            statuses = list(pool.map(lambda _: sidecar.infer()[0], range(60)))
        m = sidecar.metrics()
    assert statuses == [500] * 60, statuses
    assert total(m, "sidemesh_retry_budget_exhausted_total") > 0, m
    # without a budget 60 requests x 4 tries would reach the upstream
    assert a.requests < 60 * 4


def test_an_endpoint_failing_in_a_row_is_ejected_and_traffic_goes_to_the_healthy_one(cp, upstreams):
    a, b, local = upstreams
    _route(cp, [a.address, b.address])
    a.script(statuses=[500] * 10_000)
    with _sidecar(cp, local, "--eject-after", "3", "--eject-for", "60") as sidecar:
        answers = [sidecar.infer()[0] for _ in range(60)]
        m = sidecar.metrics()
    assert a.requests == 3 and answers.count(500) == 3 and answers.count(200) == 57
    assert total(m, "sidemesh_outlier_ejections_total", endpoint=a.address) == 1
    assert total(m, "sidemesh_outlier_ejected_endpoints") == 1


def test_past_the_concurrency_cap_requests_are_shed_at_once_with_a_v2_503(cp, upstreams):
    a, _, local = upstreams
    _route(cp, [a.address])
    a.script(delay_s=1.0)
    with _sidecar(cp, local, "--max-concurrent", "2") as sidecar:
        results = []
        lock = threading.Lock()

        def call():
            started = time.monotonic()
            status, _, body = sidecar.infer()
            with lock:
                results.append((status, time.monotonic() - started, body))

        slow = [threading.Thread(target=call) for _ in range(2)]
        for t in slow:
            t.start()
        wait_until(lambda: a.requests == 2, what="two requests in flight")
        for _ in range(4):
            call()
        for t in slow:
            t.join(10)
        m = sidecar.metrics()
    shed = [r for r in results if r[0] == 503]
    assert len(shed) == 4 and all("limit of 2 requests in flight" in _error(body) and took < 0.5 for _, took, body in shed)
    assert sorted(r[0] for r in results) == [200, 200, 503, 503, 503, 503]
    assert total(m, "sidemesh_shed_total", reason="overload") == 4


def test_sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_cleanly(cp, upstreams):
    a, _, local = upstreams
    _route(cp, [a.address])
    a.script(delay_s=1.5)
    sidecar = _sidecar(cp, local)
    result = {}
    inflight = threading.Thread(target=lambda: result.setdefault("answer", sidecar.infer()))
    inflight.start()
    wait_until(lambda: a.requests == 1, what="a request in flight")
    sidecar.proc.send_signal(signal.SIGTERM)
    sidecar.wait_for(re.compile("draining"))
    assert sidecar.admin("/healthz/ready")[0] == 503
    status, headers, body = sidecar.infer()
    assert status == 503 and "shutting down" in _error(body) and headers.get("connection") == "close"
    inflight.join(10)
    assert result["answer"][0] == 200
    assert sidecar.wait_exit() == 0


def test_without_a_control_plane_the_static_fallback_serves_the_local_upstream(upstreams):
    _, _, local = upstreams
    dead = f"127.0.0.1:{free_port()}"
    never = SidecarProcess("m", "edge", local.address, control_plane=dead, extra_args=["--static-after", "never"]).start(wait_ready=False)
    try:
        status, _, body = never.admin("/healthz/ready")
        assert status == 503 and "waiting for the control plane" in _error(body)
        status, _, body = never.infer()
        assert status == 503 and "no routing configuration yet" in _error(body)
    finally:
        never.stop()
    with SidecarProcess("m", "edge", local.address, control_plane=dead, extra_args=["--static-after", "0.2"]) as sidecar:
        assert sidecar.admin("/healthz/ready")[0] == 200
        status, headers, _ = sidecar.infer()
        assert status == 200 and headers["x-sidemesh-version"] == "edge"
        assert local.headers[-1].get("x-sidemesh-hop") is None
    assert any("static fallback" in line for line in sidecar.lines)


@pytest.mark.parametrize("args, words", [
    (["--listen", "nonsense"], "--listen: expected HOST:PORT"),
    (["--trace-sample", "2"], "--trace-sample"),
    (["--max-concurrent", "0"], "--max-concurrent: expected a positive integer"),
    (["--mirror-queue", "0"], "--mirror-queue: expected a positive integer"),
    (["--version", "bad version!"], "--version: expected a name"),
])
def test_bad_flags_exit_2_naming_the_flag(args, words):
    import subprocess
    import sys

    base = {"--model": "m", "--version": "1"}
    argv = [sys.executable, "-m", "sidemesh", "sidecar"]
    for flag, value in base.items():
        if flag not in args:
            argv += [flag, value]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and words in done.stderr, done.stderr
