"""Prometheus metrics of the drift detector; the registry is injected so tests use a fresh one.

Counters are bumped where things happen (a report applied, a window evaluated, an alert
delivered). Scores, p-values and verdicts are gauges set when a window is evaluated; a
feature's series is kept until its model version's next evaluation replaces it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DriftMetrics"]

_FEATURE = ("model", "version", "input", "feature", "test")


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.score = Gauge("sidemesh_drift_score", "Latest window's drift score per feature and test "
                           "(KS statistic, PSI, Jensen-Shannon distance, normalized Wasserstein, Cramer's V).",
                           _FEATURE, registry=r)
        self.p_value = Gauge("sidemesh_drift_p_value", "Latest window's p-value per feature and test (before correction).",
                             _FEATURE, registry=r)
        self.feature_drifted = Gauge("sidemesh_drift_feature_drifted", "1 when the feature drifted in the latest window "
                                     "(after multiple-testing correction).", ("model", "version", "input", "feature"), registry=r)
        self.verdict = Gauge("sidemesh_drift_verdict", "1 when the latest window of the model version drifted.",
                             ("model", "version"), registry=r)
        self.alert_firing = Gauge("sidemesh_drift_alert_firing", "1 while the model version's drift alert is firing "
                                  "(after hysteresis).", ("model", "version"), registry=r)
        self.windows = Counter("sidemesh_drift_windows_evaluated_total", "Windows closed, by verdict "
                               "(drift, clean, insufficient: too few rows, no_reference).", ("model", "version", "verdict"), registry=r)
        self.evaluation_seconds = Histogram("sidemesh_drift_evaluation_seconds", "Time to evaluate one window.",
                                            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
                                            registry=r)
        self.alerts_sent = Counter("sidemesh_drift_alerts_sent_total", "Alert notifications delivered, by target and status "
                                   "(firing, resolved).", ("target", "status"), registry=r)
        self.alerts_failed = Counter("sidemesh_drift_alerts_failed_total", "Failed delivery attempts (retried with "
                                     "backoff unless the target refused it with a 4xx).", ("target",), registry=r)
        self.alerts_expired = Counter("sidemesh_drift_alerts_expired_total", "Notifications given up on after the "
                                      "outbox's maximum age.", ("target",), registry=r)
        self.outbox_pending = Gauge("sidemesh_drift_outbox_pending", "Notifications waiting in the outbox.", registry=r)
        self.stats_received = Counter("sidemesh_drift_stats_received_total", "Feature values received in statistics "
                                      "reports.", ("model", "version"), registry=r)
        self.reports = Counter("sidemesh_drift_reports_total", "Statistics reports, by outcome (applied, duplicate, "
                               "rejected).", ("outcome",), registry=r)
        self.stats_dropped = Counter("sidemesh_drift_stats_dropped_total", "Statistics lost: reports the sidecars "
                                     "dropped (reason=sidecar_queue) or the detector refused (reason=invalid).",
                                     ("reason",), registry=r)
        self.streams = Gauge("sidemesh_drift_streams", "Open statistics streams from sidecars.", registry=r)
