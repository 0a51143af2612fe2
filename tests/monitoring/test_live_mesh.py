"""The dashboards and rules against a real Prometheus scraping a real mesh every second.

A model server holding tabular v1-v3, the control plane routing 80/20 between v1 and v2 and
mirroring half of the requests to v3, a sidecar per version streaming input statistics to
the drift detector, which holds v1's training data as reference. Prometheus (Debian's 2.42)
scrapes all of it with rules.yaml loaded, as the Prometheus Operator would, with the
`namespace` label the PodMonitor/ServiceMonitor would add. Steady traffic like the training
data, one request in ten malformed, then shifted by one standard deviation; then every
template variable and every panel query of both dashboards, variables filled in as a user
would pick them, must return numbers through Prometheus's HTTP API.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from model_server.examples import tabular_data
from tests.control_plane.peers import ControlPlaneProcess, wait_until
from tests.drift.peers import DriftProcess
from tests.monitoring.load import SteadyLoad
from tests.monitoring.panels import DASHBOARD_FILES, fill, label_values_query, query_variables, read_board, targets
from tests.monitoring.prometheus import Job, PrometheusProcess, finite
from tests.servers import ModelServerProcess
from tests.sidecar.peers import SidecarProcess
from tools.monitoring.generate import MONITORING

MODEL = "tabular"
NAMESPACE = "models"  # the model pods' namespace; the PodMonitors add it in Kubernetes
SYSTEM = "sidemesh-system"
WINDOW_ROWS = 200
# What a user picks in the dashboards; $__rate_interval as Grafana computes it for a 15 s scrape.
VALUES = {"datasource": "prometheus", "namespace": NAMESPACE, "model": MODEL, "version": "1", "__rate_interval": "1m"}
ROUTE = {"backends": [{"version": "1", "weight": 80}, {"version": "2", "weight": 20}, {"version": "3", "weight": 0}],
         "mirrors": [{"version": "3", "percent": 50}]}

# Series the load must have created, and Prometheus scraped, before rates over them mean
# anything: answers of every version (shadow included), bad requests, shadow copies of both
# primaries, computed requests of every version, statistics.
SERIES = (*(f'sidemesh_requests_total{{version="{v}", code="200"}}' for v in ("1", "2", "3")),
          'sidemesh_requests_total{code="400"}',
          *(f'sidemesh_mirror_requests_total{{version="{v}", outcome="ok"}}' for v in ("1", "2")),
          *(f'sidemesh_model_requests_total{{model="{MODEL}", version="{v}", code="200"}}' for v in ("1", "2", "3")),
          "sidemesh_mirror_agreed_rows_total", "sidemesh_stats_reports_sent_total")


@dataclass
class Mesh:
    prometheus: PrometheusProcess
    detector: DriftProcess
    load: SteadyLoad


def _present(prometheus: PrometheusProcess, selector: str):
    return lambda: prometheus.query(selector)


@pytest.fixture(scope="module")
def mesh(repo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    with ExitStack() as stack:
        # An own model server: the session's is shared with other tests, whose traffic would
        # show in these rates.
        server = stack.enter_context(ModelServerProcess(repo))
        cp = ControlPlaneProcess(tmp / "cp.db")
        detector = DriftProcess(tmp / "drift.db", ["--window-rows", WINDOW_ROWS, "--window-seconds", 0, "--alpha", 0.001,
                                                   "--fire-after", 1, "--resolve-after", 1])
        sidecars = {v: SidecarProcess(MODEL, v, server.http, upstream_grpc=server.grpc, control_plane=f"127.0.0.1:{cp.xds_port}",
                                      extra_args=["--static-after", "never", "--drift", f"127.0.0.1:{detector.stats_port}",
                                                  "--stats-interval", "0.2"])
                    for v in ("1", "2", "3")}
        prometheus = PrometheusProcess(tmp / "prometheus", [
            Job("sidemesh-sidecars", tuple(f"127.0.0.1:{s.admin_port}" for s in sidecars.values()), {"namespace": NAMESPACE}),
            Job("sidemesh-model-servers", (server.http,), {"namespace": NAMESPACE}),
            Job("sidemesh-control-plane", (f"127.0.0.1:{cp.admin_port}",), {"namespace": SYSTEM}),
            Job("sidemesh-drift", (f"127.0.0.1:{detector.port}",), {"namespace": SYSTEM}),
        ], [MONITORING / "rules.yaml"])
        # Prometheus first: its first scrape lands seconds after it starts, while the rest starts.
        stack.callback(prometheus.stop)
        prometheus.start()
        stack.callback(cp.stop)
        cp.start()
        stack.callback(detector.stop)
        detector.start()

        train, _ = tabular_data(11, 4000)  # version 1's training features
        reference = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(train.shape), "data": train.ravel().tolist()}]}
        status, body = detector.api("PUT", f"/v1/references/{MODEL}/1", reference)
        assert status == 201, body
        status, body = cp.api("PUT", f"/v1/routes/{MODEL}", ROUTE)
        assert status == 200, body
        for sidecar in sidecars.values():
            stack.callback(sidecar.stop)
            sidecar.start(wait_ready=False)
        for sidecar in sidecars.values():  # each waits for every version's endpoints before it routes
            sidecar.wait_for(re.compile(r": ready: routing from"))
        entry = sidecars["1"]

        wait_until(lambda: sum(float(r["value"][1]) for r in prometheus.query("up")) == 6, timeout=30,
                   what="Prometheus to scrape all six targets")

        load = SteadyLoad(entry.port, MODEL).start()  # like the training data, one request in ten malformed
        stack.callback(load.stop)  # before the processes stop
        for selector in SERIES:
            wait_until(_present(prometheus, selector), timeout=30, what=f"Prometheus to scrape {selector}")

        def first_verdict():
            status, body = detector.api("GET", f"/v1/models/{MODEL}/versions/1")
            return body if status == 200 else None

        assert wait_until(first_verdict, what="version 1's first window verdict")["verdict"] == "clean"
        load.shift = 1.0  # one standard deviation off
        wait_until(lambda: f'sidemesh_drift_alert_firing{{model="{MODEL}",version="1"}} 1.0' in detector.metrics(),
                   what="the detector's drift alert for version 1")
        yield Mesh(prometheus, detector, load)


def test_every_template_variable_lists_the_mesh(mesh):
    for path in DASHBOARD_FILES:
        for variable in query_variables(read_board(path)):
            label, selector = label_values_query(fill(variable["query"], VALUES))
            listed = mesh.prometheus.label_values(label, selector)
            assert VALUES[variable["name"]] in listed, f"{path.name} ${variable['name']}: {listed}"
            if label == "version":
                assert {"1", "2", "3"} <= set(listed)


def test_every_panel_query_returns_numbers(mesh):
    pending = [(t, fill(t.expr, VALUES)) for path in DASHBOARD_FILES for t in targets(read_board(path))]
    assert len(pending) > 40

    def remaining():
        pending[:] = [(t, expr) for t, expr in pending if not finite(mesh.prometheus.query(expr))]
        return not pending

    try:
        wait_until(remaining, timeout=30, what="every panel to show data")
    except AssertionError:
        raise AssertionError("panels without data:\n" + "\n".join(f"{t}: {expr}" for t, expr in pending)) from None


def test_no_rule_fails_to_evaluate(mesh):
    wait_until(lambda: mesh.prometheus.query("sidemesh:routed_requests:share1m"), what="the recording rules to run")
    assert mesh.prometheus.rule_health() == []


def test_the_load_was_answered(mesh):
    statuses = dict(mesh.load.statuses)
    assert mesh.load.errors == [] and set(statuses) == {200, 400}, statuses
    assert statuses[400] * 9 <= statuses[200] <= statuses[400] * 9 + 9  # one request in ten is malformed


def test_the_observed_split_follows_the_weights_and_the_shadow_is_not_counted(mesh):
    def steady():  # ten scrapes of steady traffic since every series involved was first scraped
        counts = [mesh.prometheus.query(f"min(count_over_time({selector}[1m]))") for selector in SERIES]
        return all(c and float(c[0]["value"][1]) >= 10 for c in counts)

    wait_until(steady, what="ten scrapes of steady traffic")
    shares = {r["metric"]["version"]: float(r["value"][1])
              for r in finite(mesh.prometheus.query(f'sidemesh:routed_requests:share1m{{model="{MODEL}"}}'))}
    # 80/20 over a few hundred requests; version 3 computed only shadow copies
    assert 0.6 <= shares["1"] <= 0.95 and 0.05 <= shares["2"] <= 0.4, shares
    assert shares.get("3", 0.0) < 0.05, shares


def test_bad_requests_are_answered_but_not_errors(mesh):
    answered = mesh.prometheus.query(f'sum(sidemesh:requests:rate1m{{model="{MODEL}", code="400"}})')
    assert answered and float(answered[0]["value"][1]) > 0
    ratio = finite(mesh.prometheus.query(f'sidemesh:request_errors:ratio_rate1m{{model="{MODEL}", version="1"}}'))
    assert [float(r["value"][1]) for r in ratio] == [0.0]


def test_the_drift_shift_fires_the_alert_in_prometheus_and_on_the_dashboard(mesh):
    def firing():
        return [a for a in mesh.prometheus.alerts()
                if a["labels"]["alertname"] == "SidemeshDriftDetected" and a["state"] == "firing"]

    alert, = wait_until(firing, what="SidemeshDriftDetected to fire")
    assert (alert["labels"]["model"], alert["labels"]["version"], alert["labels"]["severity"]) == (MODEL, "1", "warning")
    shown = mesh.prometheus.query(fill(_drift_panel("Drift alerts firing in Prometheus").expr, VALUES))
    assert [(r["metric"].get("version"), float(r["value"][1])) for r in shown] == [("1", 1.0)]
    verdict = mesh.prometheus.query(f'sidemesh_drift_verdict{{model="{MODEL}", version="1"}}')
    assert [float(r["value"][1]) for r in verdict] == [1.0]


def test_the_first_window_of_each_verdict_counts_on_the_dashboard(mesh):
    """The detector creates a verdict's counter with its first window; Prometheus would not
    count that first value as an increase, and the panel must."""
    shown = mesh.prometheus.query(fill(_drift_panel("Windows evaluated in the last hour, by verdict").expr, VALUES))
    windows = {r["metric"]["verdict"]: float(r["value"][1]) for r in shown}
    assert windows.get("clean", 0) >= 1 and windows.get("drift", 0) >= 1, windows


def _drift_panel(title: str, ref: str = "A"):
    return next(t for t in targets(read_board(MONITORING / "dashboards" / "drift.json")) if t.panel == title and t.ref == ref)
