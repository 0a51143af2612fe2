"""Canary gates measured from a real Prometheus (Debian's 2.42) scraping three fake sidecars
every second: their metric pages are the sidecar's own ``Instruments``, fed by the test the
way the proxy, the forwarder and the mirror feed them, so every count is known.

The mesh: model ``m``; sidecar A serves v1 and is where clients enter; B serves the canary
v2 (some clients enter there too); C serves v3, a shadow of v1's traffic. Traffic recorded
before the window must not count; the window is set on whole seconds between two states
Prometheus has scraped, so every count is exact.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Self

import pytest
from aiohttp import web

from control_plane.canary.measure import MeasureError, Measurement, quantile
from control_plane.canary.prometheus import DEFAULT_QUERIES, PrometheusSource, promql_string, window
from control_plane.errors import ValidationError
from sidecar.instruments import Instruments
from sidecar.metrics import LATENCY_BUCKETS, MetricSet
from tests.control_plane.peers import free_port, wait_until
from tests.monitoring.prometheus import Job, PrometheusProcess

ODD_MODEL, ODD_VERSION = 'we"ird\\model', 'v"} or vector(1) #'


class Sidecar:
    """One fake sidecar's metrics and the port its page is served on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.metrics = MetricSet()
        self.m = Instruments(self.metrics)
        self.port = free_port()


class FakeMesh:
    """The sidecars' ``/metrics`` pages (and a Prometheus that never answers), served by
    aiohttp from one background event loop. Record traffic under ``with mesh.lock``: the
    pages are read from that loop's thread."""

    def __init__(self, *names: str) -> None:
        self.sidecars = {name: Sidecar(name) for name in names}
        self.lock = threading.Lock()
        self.stalled_port = free_port()
        self.latencies: dict[tuple[str, str], list[float]] = {}  # sidemesh_request_duration_seconds observations, by (model, version)
        self.answers = 0  # sidemesh_requests_total over every sidecar
        self._loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-sidecars", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._started.wait(timeout=10):
            raise AssertionError("the fake sidecars did not start within 10 s")
        return self

    def __exit__(self, *exc_info) -> None:
        self._loop.call_soon_threadsafe(self._release.set)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._release = asyncio.Event()
        for sidecar in self.sidecars.values():
            self._site(self._page(sidecar), "/metrics", sidecar.port)
        self._site(self._stall, "/api/v1/query", self.stalled_port)
        self._started.set()
        self._loop.run_forever()
        for runner in self._runners:
            self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def _site(self, handler, path: str, port: int) -> None:
        app = web.Application()
        app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        self._runners.append(runner)

    def _page(self, sidecar: Sidecar):
        async def page(request: web.Request) -> web.Response:
            with self.lock:
                body = sidecar.metrics.exposition()
            return web.Response(body=body, content_type="text/plain")
        return page

    async def _stall(self, request: web.Request) -> web.Response:
        await self._release.wait()
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    # What the sidecars record, as the proxy (answered, local and remote upstream calls) and
    # the mirror (outcomes, comparisons) record it.

    def answered(self, at: str, model: str, version: str, code: int, seconds: float) -> None:
        self.sidecars[at].m.answered(model, version, str(code), seconds)
        self.latencies.setdefault((model, version), []).append(seconds)
        self.answers += 1

    def serve(self, at: str, model: str, version: str, code: int, seconds: float) -> None:
        """A request the sidecar ``at`` served with its own model server."""
        self.sidecars[at].m.upstream_duration.observe((model, version, "local"), seconds * 0.9)
        self.answered(at, model, version, code, seconds)

    def forward(self, entry: str, to: str, model: str, version: str, code: int, seconds: float) -> None:
        """A client request entering at ``entry``, routed to the version that ``to`` serves."""
        self.serve(to, model, version, code, seconds * 0.95)
        self.sidecars[entry].m.upstream_duration.observe((model, version, "remote"), seconds * 0.97)
        self.answered(entry, model, version, code, seconds)

    def mirror(self, entry: str, to: str | None, model: str, primary: str, shadow: str, outcome: str,
               shadow_code: int = 200, seconds: float = 0.03, rows: int = 0, agreed: int = 0, mismatch: bool = False) -> None:
        """A copy of a request ``entry`` answered for ``primary``, sent to ``to`` (None: no
        endpoint, never sent) and judged ``outcome``."""
        m = self.sidecars[entry].m
        labels = (model, primary, shadow)
        if to is not None:
            self.serve(to, model, shadow, shadow_code, seconds)
        m.mirror.inc(labels + (outcome,))
        if outcome == "ok":
            m.latency_delta.observe(labels, seconds - 0.02)
            if mismatch:
                m.mismatches.inc(labels)
            if rows:
                m.compared_rows.inc(labels, rows)
                m.agreed_rows.inc(labels, agreed)


def before_the_window(mesh: FakeMesh) -> None:
    """Earlier traffic, some of it slow, that no window measurement may count."""
    for _ in range(30):
        mesh.serve("a", "m", "v1", 200, 0.01)
    for _ in range(8):
        mesh.forward("a", "b", "m", "v2", 200, 2.0)
    for _ in range(3):
        mesh.serve("b", "m", "v2", 200, 2.0)
    for _ in range(5):
        mesh.serve("a", "m", "v1", 200, 0.01)
        mesh.mirror("a", "c", "m", "v1", "v3", "ok", seconds=3.0, rows=4, agreed=4)


@dataclass
class Expected:
    """What the window holds, as the client saw it."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def in_the_window(mesh: FakeMesh) -> Expected:
    """The canary step (v2) and the shadow (v3) traffic the measurements must find."""
    mesh.latencies.clear()
    # Clients entering at A and routed to v2: 35 fine, 4 failed by v2's model server, one slow.
    for _ in range(35):
        mesh.forward("a", "b", "m", "v2", 200, 0.02)
    for _ in range(4):
        mesh.forward("a", "b", "m", "v2", 500, 0.02)
    mesh.forward("a", "b", "m", "v2", 200, 0.2)
    # One that A could not send: no endpoint of v2 (A's own 503; B never sees it).
    mesh.answered("a", "m", "v2", 503, 0.0002)
    # Clients entering at B: 9 served by v2, one 503; 5 routed back to v1.
    for _ in range(9):
        mesh.serve("b", "m", "v2", 200, 0.015)
    mesh.serve("b", "m", "v2", 503, 0.015)
    for _ in range(5):
        mesh.forward("b", "a", "m", "v1", 200, 0.02)
    # v1's own traffic at A, 20 requests of it mirrored to v3 (one of them failed at v1).
    for _ in range(300):
        mesh.serve("a", "m", "v1", 200, 0.01)
    for i in range(15):
        mesh.mirror("a", "c", "m", "v1", "v3", "ok", seconds=0.04, rows=4, agreed=4 if i >= 3 else 3)
    mesh.mirror("a", "c", "m", "v1", "v3", "ok", seconds=0.4, mismatch=True)
    mesh.mirror("a", "c", "m", "v1", "v3", "primary_error", seconds=0.04)
    mesh.mirror("a", "c", "m", "v1", "v3", "shadow_error", shadow_code=500, seconds=0.04)
    mesh.mirror("a", "c", "m", "v1", "v3", "shadow_error", shadow_code=500, seconds=0.04)
    mesh.mirror("a", None, "m", "v1", "v3", "shadow_error")
    # A model and version whose names need escaping in PromQL.
    for _ in range(7):
        mesh.serve("a", ODD_MODEL, ODD_VERSION, 200, 0.01)
    return Expected(requests={"v2": 40 + 1 + 10, "v3": 0, ODD_VERSION: 7}, errors={"v2": 4 + 1 + 1, "v3": 0, ODD_VERSION: 0})


@dataclass
class Scene:
    prometheus: PrometheusProcess
    url: str
    since: float
    until: float
    expected: Expected
    latencies: dict[tuple[str, str], list[float]]
    mesh: FakeMesh


def scraped(prometheus: PrometheusProcess, answers: int) -> bool:
    """Prometheus's latest samples of all three sidecars hold ``answers`` answers."""
    up = prometheus.query("sum(up)")
    total = prometheus.query("sum(sidemesh_requests_total)")
    return bool(up and float(up[0]["value"][1]) == 3 and total and float(total[0]["value"][1]) == answers)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Scene:
    with FakeMesh("a", "b", "c") as mesh:
        prometheus = PrometheusProcess(tmp_path_factory.mktemp("prometheus"), [
            Job("sidemesh-sidecars", tuple(f"127.0.0.1:{s.port}" for s in mesh.sidecars.values()))], []).start()
        try:
            with mesh.lock:
                before_the_window(mesh)
            wait_until(lambda: scraped(prometheus, mesh.answers), timeout=60, every=0.2,
                       what="Prometheus to scrape the traffic before the window")
            since = time.time()
            with mesh.lock:
                expected = in_the_window(mesh)
            wait_until(lambda: scraped(prometheus, mesh.answers), timeout=60, every=0.2,
                       what="Prometheus to scrape the traffic in the window")
            until = since + math.ceil(time.time() - since)  # whole seconds: the window is exactly since..until
            yield Scene(prometheus, f"http://127.0.0.1:{prometheus.port}", since, until, expected, dict(mesh.latencies), mesh)
        finally:
            prometheus.stop()


def measure(source: PrometheusSource, scene: Scene, version: str, model: str = "m") -> Measurement:
    return asyncio.run(source.measure(model, version, scene.since, scene.until))


def p99(scene: Scene, version: str) -> float:
    """histogram_quantile's answer over the sidecar buckets of the window's observations."""
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for seconds in scene.latencies[("m", version)]:
        counts[next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound), len(LATENCY_BUCKETS))] += 1
    return quantile(0.99, LATENCY_BUCKETS, counts)


def test_a_step_window_counts_each_client_request_once(scene):
    got = measure(PrometheusSource(scene.url), scene, "v2")
    # 91 answers (A forwarded 40 that B answered too, plus A's own 503, plus B's 10 entries).
    assert len(scene.latencies[("m", "v2")]) == 91
    assert got.requests == scene.expected.requests["v2"] == 51
    # The 5xx share of the answers (10/91: a forwarded failure is answered twice, A's own 503
    # once) applied to the 51 requests, rounded up: 5.6 -> 6, as the clients saw them.
    assert got.errors == math.ceil(51 * 10 / 91) == scene.expected.errors["v2"] == 6
    assert got.p99_s == pytest.approx(p99(scene, "v2"), abs=1e-9)
    assert 0.1 < got.p99_s <= 0.25  # the slow forwarded request's bucket, not the 2 s ones before the window
    assert (got.shadow_answers, got.shadow_errors, got.compared_rows, got.agreed_rows, got.mismatches) == (0, 0, 0, 0, 0)


def test_a_shadow_window_reads_the_copies_and_counts_no_client_requests(scene):
    got = measure(PrometheusSource(scene.url), scene, "v3")
    assert (got.requests, got.errors) == (0, 0)
    assert (got.shadow_answers, got.shadow_errors) == (16, 3)
    assert (got.compared_rows, got.agreed_rows, got.mismatches) == (60, 57, 1)
    assert got.agreement == pytest.approx(57 / 61)
    assert got.shadow_error_ratio == pytest.approx(3 / 19)
    # The copies as v3's sidecar served them: 19 (one never reached it); one slow.
    assert len(scene.latencies[("m", "v3")]) == 19
    assert got.shadow_p99_s == pytest.approx(p99(scene, "v3"), abs=1e-9)
    assert 0.25 < got.shadow_p99_s <= 0.5
    assert got.p99_s == got.shadow_p99_s  # the same histogram: while v3 has no weight it serves only copies


def test_label_values_are_escaped_for_promql(scene):
    got = measure(PrometheusSource(scene.url), scene, ODD_VERSION, model=ODD_MODEL)
    assert (got.requests, got.errors) == (7, 0)
    assert promql_string('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_a_version_without_traffic_measures_nothing(scene):
    got = measure(PrometheusSource(scene.url), scene, "v9")
    assert got == Measurement()
    assert got.p99_s is None and got.shadow_p99_s is None and got.error_ratio is None


def test_an_unreachable_prometheus_is_a_measure_error_naming_the_url(scene):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MeasureError, match=f"Prometheus at {url}"):
        measure(PrometheusSource(url), scene, "v2")


def test_a_broken_query_is_a_measure_error_naming_the_query(scene):
    broken = "histogram_quantile(0.99, sum by (le) (rate(sidemesh_request_duration_seconds_bucket[$window]))"
    source = PrometheusSource(scene.url, queries={"p99_s": broken})
    with pytest.raises(MeasureError) as caught:
        measure(source, scene, "v2")
    message = str(caught.value)
    assert "query for p99_s" in message and "bad_data" in message and "HTTP 400" in message
    assert broken.replace("$window", window(scene.since, scene.until)) in message


def test_an_http_error_without_the_api_json_is_a_measure_error(scene):
    with pytest.raises(MeasureError, match=r"HTTP 404, an answer that is not the query API's JSON"):
        measure(PrometheusSource(scene.url + "/no/such/prefix"), scene, "v2")


def test_a_prometheus_that_does_not_answer_in_time_is_a_measure_error(scene):
    url = f"http://127.0.0.1:{scene.mesh.stalled_port}"
    with pytest.raises(MeasureError, match=rf"Prometheus at {url}: .*no answer within 0.3 s"):
        measure(PrometheusSource(url, timeout_s=0.3), scene, "v2")


def test_a_quantile_query_must_return_one_series(scene):
    per_sidecar = "histogram_quantile(0.99, sum by (instance, le) (sidemesh_request_duration_seconds_bucket))"
    with pytest.raises(MeasureError, match=r"query for shadow_p99_s .* returned 3 series"):
        measure(PrometheusSource(scene.url, queries={"shadow_p99_s": per_sidecar}), scene, "v2")


def test_a_count_query_may_return_many_series_and_they_add_up(scene):
    by_sidecar = 'sum by (instance) (sidemesh_requests_total{model="$model",version="$version"})'
    got = measure(PrometheusSource(scene.url, queries={"requests": by_sidecar}), scene, "v2")
    assert got.requests == 91 + 8 * 2 + 3  # every answer ever recorded, before the window included


def test_a_count_that_is_not_finite_is_a_measure_error(scene):
    with pytest.raises(MeasureError, match=r"query for mismatches \(1 / 0\): returned inf, expected a count"):
        measure(PrometheusSource(scene.url, queries={"mismatches": "1 / 0"}), scene, "v2")


def test_every_measurement_field_has_a_default_query():
    assert set(DEFAULT_QUERIES) == set(Measurement.__dataclass_fields__)
    source = PrometheusSource("https://prometheus.example:9090/prom/")
    assert source.url == "https://prometheus.example:9090/prom"
    for name in DEFAULT_QUERIES:
        query = source.render(name, "m", "v2", 100.0, 160.0)
        assert "[60s]" in query or "offset 60s" in query
        assert 'version="v2"' in query and "$" not in query


def test_the_window_is_whole_seconds_rounded_up():
    assert window(100.0, 160.0) == "60s"
    assert window(100.0, 160.4) == "61s"
    assert window(100.0, 100.0) == "1s"
    with pytest.raises(ValueError, match="since: expected a time at or before until"):
        window(160.0, 100.0)


@pytest.mark.parametrize("url", ["", "prometheus:9090", "ftp://prometheus:9090", "http://", "http:///api",
                                 "http://prometheus:99999", "http://prometheus:9090/?x=1", None])
def test_a_bad_url_is_refused_by_name(url):
    with pytest.raises(ValidationError, match=r"^url: expected"):
        PrometheusSource(url)


@pytest.mark.parametrize("timeout_s", [0, -1, math.inf, math.nan, True, "5"])
def test_a_bad_timeout_is_refused_by_name(timeout_s):
    with pytest.raises(ValidationError, match=r"^timeout_s: expected seconds greater than 0"):
        PrometheusSource("http://127.0.0.1:9090", timeout_s=timeout_s)


@pytest.mark.parametrize("queries, message", [
    ({"latency": "up"}, r"^queries\.latency: expected one of requests, errors, p99_s"),
    ({"requests": " "}, r"^queries\.requests: expected a PromQL expression"),
    ({"requests": 5}, r"^queries\.requests: expected a PromQL expression"),
    ({"requests": 'up{job="$job"}'}, r"^queries\.requests: expected placeholders \$model, \$version and \$window only"),
    ({"requests": "up $"}, r"^queries\.requests: expected placeholders"),
    (["requests"], r"^queries: expected a mapping"),
])
def test_a_bad_query_override_is_refused_by_name(queries, message):
    with pytest.raises(ValidationError, match=message):
        PrometheusSource("http://127.0.0.1:9090", queries=queries)
