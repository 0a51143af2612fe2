"""The load recorder and the reports built from it: counts per cluster, non-cumulative
latency buckets with their sums, take/restore without loss, the cap on clusters, and the
wire format read back with envoy-data-plane's own message types (the control plane's)."""

from __future__ import annotations

import warnings

import pytest

from sidecar.errors import ConfigError
from sidecar.load_report import LoadRecorder
from sidecar.load_report_client import LoadReportConfig, build_request
from sidemesh import load_metrics as lm

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.service.load_stats.v3 import LoadStatsRequest as TheirRequest


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _decoded(recorder: LoadRecorder) -> dict:
    """The report of everything recorded, as the control plane parses it: cluster -> fields."""
    theirs = TheirRequest.FromString(build_request(recorder.take()).SerializeToString())
    out = {}
    for cluster in theirs.cluster_stats:
        (locality,) = cluster.upstream_locality_stats
        out[cluster.cluster_name] = {
            "issued": locality.total_issued_requests, "ok": locality.total_successful_requests,
            "errors": locality.total_error_requests, "interval": cluster.load_report_interval.total_seconds(),
            "metrics": {m.metric_name: (m.num_requests_finished_with_metric, m.total_metric_value) for m in locality.load_metric_stats},
        }
    return out


def test_entry_requests_count_per_cluster_with_errors_and_latency_buckets_that_are_not_cumulative():
    clock = Clock()
    recorder = LoadRecorder(clock=clock)
    for seconds in (0.0004, 0.0005, 0.003, 0.003, 50.0):  # 0.0005 sits on a bound: (0.00025, 0.0005] holds it
        recorder.entry("m|1", False, seconds)
    recorder.entry("m|1", True, 0.003)
    recorder.entry("m|2", True, 0.2)
    clock.now += 2.5
    report = _decoded(recorder)
    assert report["m|1"]["issued"] == 6 and report["m|1"]["ok"] == 5 and report["m|1"]["errors"] == 1
    assert report["m|2"]["issued"] == 1 and report["m|2"]["ok"] == 0 and report["m|2"]["errors"] == 1
    assert report["m|1"]["interval"] == pytest.approx(2.5)
    metrics = report["m|1"]["metrics"]
    assert metrics[lm.bucket_name(lm.LATENCY, 0)] == (2, pytest.approx(0.0009))
    assert metrics[lm.bucket_name(lm.LATENCY, 3)] == (3, pytest.approx(0.009))  # (0.0025, 0.005]
    assert metrics[lm.bucket_name(lm.LATENCY, len(lm.LATENCY_BOUNDS))] == (1, 50.0)  # +Inf
    assert lm.bucket_name(lm.LATENCY, 1) not in metrics  # empty buckets are left out
    assert sum(count for name, (count, _) in metrics.items() if name.startswith(lm.LATENCY + ".le.")) == 6


def test_shadow_outcomes_sit_on_the_shadow_cluster_as_counts_and_row_sums():
    recorder = LoadRecorder()
    recorder.shadow_answer("m|3", 0.004)
    recorder.shadow_answer("m|3", 0.02)
    recorder.shadow_rows("m|3", 8, 6)
    recorder.shadow_rows("m|3", 4, 4)
    recorder.shadow_mismatch("m|3")
    recorder.shadow_error("m|3")
    metrics = _decoded(recorder)["m|3"]["metrics"]
    assert metrics[lm.SHADOW_ANSWERS] == (2, 2.0)
    assert metrics[lm.SHADOW_ERRORS] == (1, 1.0)
    assert metrics[lm.SHADOW_MISMATCHES] == (1, 1.0)
    assert metrics[lm.SHADOW_COMPARED_ROWS] == (2, 12.0)
    assert metrics[lm.SHADOW_AGREED_ROWS] == (2, 10.0)
    assert metrics[lm.bucket_name(lm.SHADOW_LATENCY, 3)] == (1, pytest.approx(0.004))
    assert metrics[lm.bucket_name(lm.SHADOW_LATENCY, 5)] == (1, pytest.approx(0.02))
    assert _decoded(LoadRecorder()) == {}


def test_take_starts_over_and_a_restored_snapshot_joins_the_next_report_with_its_interval():
    clock = Clock()
    recorder = LoadRecorder(clock=clock)
    recorder.entry("m|1", False, 0.01)
    recorder.shadow_answer("m|3", 0.01)
    clock.now += 1.0
    unsent = recorder.take()
    assert recorder.take().clusters() == []
    recorder.entry("m|1", True, 0.01)
    recorder.entry("m|2", False, 0.01)
    recorder.restore(unsent)
    clock.now += 1.0
    report = _decoded(recorder)
    assert {n: (r["ok"], r["errors"]) for n, r in report.items()} == {"m|1": (1, 1), "m|2": (1, 0), "m|3": (0, 0)}
    assert report["m|3"]["metrics"][lm.SHADOW_ANSWERS] == (1, 1.0)
    assert report["m|1"]["interval"] == pytest.approx(2.0)  # from the unsent snapshot's start


def test_only_the_clusters_the_server_asked_for_are_kept_and_the_rest_counted():
    recorder = LoadRecorder()
    recorder.entry("m|1", False, 0.01)
    recorder.entry("m|2", False, 0.01)
    recorder.shadow_error("m|3")
    wanted, dropped = recorder.take().only(frozenset({"m|1"}))
    assert wanted.clusters() == ["m|1"] and dropped == 2
    _, none = LoadRecorder().take().only(None)
    assert none == 0


def test_clusters_past_the_cap_are_dropped_and_counted_not_grown():
    dropped = []
    recorder = LoadRecorder(max_clusters=2, on_drop=dropped.append)
    for name in ("m|1", "m|2", "m|3", "m|3"):
        recorder.entry(name, False, 0.01)
    recorder.shadow_error("m|4")
    assert recorder.take().clusters() == ["m|1", "m|2", "m|4"]
    assert dropped == [1, 1]
    full = LoadRecorder(max_clusters=1, on_drop=dropped.append)
    full.entry("m|1", False, 0.01)
    full.entry("m|1", False, 0.01)
    unsent = full.take()
    full.entry("m|2", False, 0.01)
    full.restore(unsent)  # no room for m|1's two requests
    assert full.take().clusters() == ["m|2"] and dropped[-1] == 2


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_a_bad_cap_is_refused(value):
    with pytest.raises(ValueError, match="max_clusters"):
        LoadRecorder(max_clusters=value)


@pytest.mark.parametrize("field, value, match", [
    ("target", "nowhere", "target: expected host:port"),
    ("backoff_base_s", 0, "backoff_base_s: expected a positive number"),
    ("unimplemented_backoff_s", float("nan"), "unimplemented_backoff_s"),
    ("backoff_max_s", 0.1, "backoff_max_s: expected at least"),
])
def test_bad_client_settings_name_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        LoadReportConfig(**{"target": "127.0.0.1:15010", field: value})
