"""The "sidemesh / Drift" dashboard: per model and feature, drift scores and p-values over
time, verdicts, alerts, the statistics the detector received and lost, shadow agreement.

The detector's own series are filtered by model and version only (the detector serves every
namespace); the sidecars' by namespace too. Loss counters that exist only after a first loss
fall back to 0 wherever statistics flow, so "nothing lost" shows as 0, not as "No data".
"""

from __future__ import annotations

from .grafana import BY_MODEL, MESH, NAMESPACE, Panel, Query, dashboard, increase

__all__ = ["drift_dashboard"]

RATE = "$__rate_interval"
_V = "v{{version}}"
_DRIFT_ALERTS = "SidemeshDriftStatsDropped|SidemeshSidecarStatsDropped"

VERDICTS = [
    Panel("Drift verdict and alert", "bool_yes_no",
          "From the detector: whether the latest window drifted (after multiple-testing correction), and whether "
          "the version's drift alert is firing (after hysteresis: K drifted windows in a row).",
          (Query(f"max by (model, version) (sidemesh_drift_verdict{{{BY_MODEL}}})", "{{model}} v{{version}} latest window drifted"),
           Query(f"max by (model, version) (sidemesh_drift_alert_firing{{{BY_MODEL}}})", "{{model}} v{{version}} alert firing")),
          steps=True, max_value=1),
    Panel("Windows evaluated in the last hour, by verdict", "short",
          "Closed windows: drift, clean, insufficient (too few rows) and no_reference (upload one with "
          "`sidemesh drift reference`).",
          (Query(f"sum by (model, version, verdict) ({increase(f'sidemesh_drift_windows_evaluated_total{{{BY_MODEL}}}', '1h')})",
                 "{{model}} v{{version}} {{verdict}}"),)),
    Panel("Features drifted in the latest window", "short",
          "How many features the latest window rejected after correction.",
          (Query(f"sum by (model, version) (sidemesh_drift_feature_drifted{{{BY_MODEL}}})", "{{model}} v{{version}}"),)),
    Panel("Drift alerts firing in Prometheus", "short",
          "SidemeshDriftDetected for the selected versions, and the alerts about lost statistics "
          f"({_DRIFT_ALERTS.replace('|', ', ')}); 0 when none fires.",
          (Query(f'count by (model, version) (ALERTS{{alertname="SidemeshDriftDetected", alertstate="firing", {BY_MODEL}}})\n'
                 "or on () vector(0)", "SidemeshDriftDetected {{model}} v{{version}}"),
           Query(f'count by (alertname) (ALERTS{{alertname=~"{_DRIFT_ALERTS}", alertstate="firing"}})\n'
                 "or on () vector(0)", "{{alertname}}"))),
]

FEATURES = [
    Panel("Drift score by feature and test", "none",
          "The latest window's score per feature and test: ks (D), psi, js (Jensen-Shannon distance), wasserstein "
          "(normalized), chi_square (Cramer's V). Each test has its own scale.",
          (Query(f"max by (model, version, input, feature, test) (sidemesh_drift_score{{{BY_MODEL}}})",
                 f"{_V} {{{{input}}}}[{{{{feature}}}}] {{{{test}}}}"),), width=24),
    Panel("p-value by feature and test (before correction)", "none",
          "The latest window's p-value per feature and test; small values mean the window differs from the "
          "reference. Log scale.",
          (Query(f"min by (model, version, input, feature, test) (sidemesh_drift_p_value{{{BY_MODEL}}})",
                 f"{_V} {{{{input}}}}[{{{{feature}}}}] {{{{test}}}}"),), width=24, log_scale=True),
]

STATISTICS = [
    Panel("Feature values received by the detector", "cps",
          "Feature values per second in the statistics reports the detector applied.",
          (Query(f"sum by (model, version) (rate(sidemesh_drift_stats_received_total{{{BY_MODEL}}}[{RATE}]))",
                 "{{model}} v{{version}}"),), width=8),
    Panel("Statistics reports at the detector", "cps",
          "Reports per second by outcome (applied, duplicate, rejected), and reports lost: dropped by sidecars "
          "(sidecar_queue) or refused (invalid). Detector-wide: these have no model label.",
          (Query(f"sum by (outcome) (rate(sidemesh_drift_reports_total[{RATE}]))", "{{outcome}}"),
           Query(f"sum by (reason) (rate(sidemesh_drift_stats_dropped_total[{RATE}]))\n"
                 f"or on () 0 * sum(rate(sidemesh_drift_reports_total[{RATE}]))", "lost {{reason}}")), width=8),
    Panel("Sidecar statistics tap", "cps",
          "Requests whose inputs were added to the statistics, requests skipped (by reason), and reports the "
          "sidecars dropped because their queue to the detector was full (namespace-wide).",
          (Query(f"sum by (model, version) (rate(sidemesh_stats_sampled_total{{{MESH}}}[{RATE}]))", "sampled {{model}} v{{version}}"),
           Query(f"sum by (model, version, reason) (rate(sidemesh_stats_skipped_total{{{MESH}}}[{RATE}]))\n"
                 f"or on (model, version) 0 * sum by (model, version) (rate(sidemesh_stats_sampled_total{{{MESH}}}[{RATE}]))",
                 "skipped {{model}} v{{version}} {{reason}}"),
           Query(f"sum(rate(sidemesh_stats_reports_dropped_total{{{NAMESPACE}}}[{RATE}]))\n"
                 f"or on () 0 * sum(rate(sidemesh_stats_reports_sent_total{{{NAMESPACE}}}[{RATE}]))", "reports dropped")), width=8),
]

SHADOW = [
    Panel("Shadow agreement", "percentunit",
          "Rows where the shadow predicted the primary's label, over rows compared, in the last 5 minutes "
          "(sidemesh:mirror_agreement:ratio_rate5m). `version` is the primary.",
          (Query(f"sum by (model, version, shadow_version) (sidemesh:mirror_agreement:ratio_rate5m{{{MESH}}})",
                 "{{model}} v{{version}} → v{{shadow_version}}"),), max_value=1),
    Panel("Largest output difference, shadow against primary (p99)", "none",
          "Per compared answer, the largest absolute and relative difference between the outputs present in both.",
          (Query(f"histogram_quantile(0.99, sum by (model, version, shadow_version, le) "
                 f"(rate(sidemesh_mirror_max_abs_diff_bucket{{{MESH}}}[{RATE}])))", "absolute {{model}} v{{version}} → v{{shadow_version}}"),
           Query(f"histogram_quantile(0.99, sum by (model, version, shadow_version, le) "
                 f"(rate(sidemesh_mirror_max_rel_diff_bucket{{{MESH}}}[{RATE}])))", "relative {{model}} v{{version}} → v{{shadow_version}}"))),
]


def drift_dashboard():
    return dashboard(
        "sidemesh / Drift", "sidemesh-drift",
        "Per model, version and feature: drift scores and p-values over time, verdicts and alerts, the statistics "
        "received and lost, and how often shadow versions agree with the primary.",
        [("Verdicts", VERDICTS), ("Features", FEATURES), ("Statistics", STATISTICS), ("Shadows", SHADOW)],
    )
