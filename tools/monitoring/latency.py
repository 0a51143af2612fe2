"""The "sidemesh / Latency" dashboard: traffic and split, errors, latency against its
objective, the model server's queue and compute time, resilience, shadows, xDS.

Heavy queries read recorded series from manifests/monitoring/rules.yaml (``sidemesh:*``).
Counters that a sidecar creates only when something first happens (retries, shedding,
ejections) fall back to an explicit 0 for every version that has traffic, so "nothing
happened" shows as 0, not as "No data".
"""

from __future__ import annotations

from .grafana import BY_MODEL, MESH, NAMESPACE, Panel, Query, dashboard, increase

__all__ = ["latency_dashboard"]

RATE = "$__rate_interval"
_MV = "{{model}} v{{version}}"


def _quantiles(series: str, by: str, legend: str) -> tuple[Query, ...]:
    """p50, p90 and p99 of a recorded ``..._bucket:rate1m`` series."""
    return tuple(
        Query(f"histogram_quantile({q}, sum by ({by}, le) ({series}{{{MESH}}}))", f"p{round(q * 100)} {legend}")
        for q in (0.5, 0.9, 0.99)
    )


def _or_zero(expr: str, by: str) -> str:
    """``expr``, or 0 for every (``by``) that answered requests but has no such series."""
    return f"{expr}\nor on ({by}) 0 * sum by ({by}) (rate(sidemesh_requests_total{{{MESH}}}[{RATE}]))"


TRAFFIC = [
    Panel("Requests routed per second", "reqps",
          "Client requests routed to each version: requests the model servers computed minus the shadow copies sent "
          "to them (sidemesh:routed_requests:rate1m). Counted at the model server because a forwarded request passes "
          "two sidecars.",
          (Query(f"sum by (model, version) (sidemesh:routed_requests:rate1m{{{MESH}}})", _MV),)),
    Panel("Desired against observed traffic split", "percentunit",
          "Share of each model's routed requests that each version received (sidemesh:routed_requests:share1m), "
          "next to the share its weight asks for (sidemesh_route_weight_ratio, from the control plane's routing "
          "state). A gap that lasts is a split not taking effect: see the xDS panels.",
          (Query(f"sum by (model, version) (sidemesh:routed_requests:share1m{{{MESH}}})", f"observed {_MV}"),
           Query(f"max by (model, version) (sidemesh_route_weight_ratio{{{BY_MODEL}}})", f"desired {_MV}")), max_value=1),
    Panel("Error ratio (5xx)", "percentunit",
          "Share of answers with a 5xx status, as the sidecars saw them (sidemesh:request_errors:ratio_rate1m). "
          "4xx are the caller's mistakes and do not count. Alert: SidemeshHighErrorRatio above 5% for 5 minutes.",
          (Query(f"sum by (model, version) (sidemesh:request_errors:ratio_rate1m{{{MESH}}})", _MV),)),
    Panel("Answers by status code", "reqps",
          "Answers per second by the version that answered and the HTTP status (gRPC statuses as their HTTP "
          "equivalents), summed over the sidecars.",
          (Query(f"sum by (model, version, code) (sidemesh:requests:rate1m{{{MESH}}})", "{{model}} v{{version}} {{code}}"),)),
]

LATENCY = [
    Panel("Request latency", "s",
          "Time from a complete request to its response at the sidecars, retries included, from "
          "sidemesh_request_duration_seconds (recorded as sidemesh:request_duration_seconds_bucket:rate1m).",
          _quantiles("sidemesh:request_duration_seconds_bucket:rate1m", "model, version", _MV)),
    Panel("Upstream call latency, local and remote (p99)", "s",
          "One upstream call: to this pod's model server (local) or to another version's sidecar (remote).",
          (Query(f"histogram_quantile(0.99, sum by (model, version, upstream, le) "
                 f"(rate(sidemesh_upstream_duration_seconds_bucket{{{MESH}}}[{RATE}])))", "{{model}} v{{version}} {{upstream}}"),)),
    Panel("Requests slower than the objective (250 ms)", "percentunit",
          "Share of requests slower than 250 ms over 5 minutes and over 1 hour. The objective allows 1%.",
          (Query(f"sum by (model, version) (sidemesh:request_latency_objective_misses:ratio_rate5m{{{MESH}}})", f"5m {_MV}"),
           Query(f"sum by (model, version) (sidemesh:request_latency_objective_misses:ratio_rate1h{{{MESH}}})", f"1h {_MV}"))),
    Panel("Latency budget burn rate", "suffix:x",
          "How fast the 1% error budget of the latency objective is spent (1 = exactly over 30 days). Alerts: "
          "SidemeshLatencyBudgetFastBurn (14.4 over 1 h and 5 min), SidemeshLatencyBudgetSlowBurn (6 over 6 h and 30 min).",
          (Query(f"sum by (model, version) (sidemesh:request_latency_objective_misses:ratio_rate5m{{{MESH}}}) / 0.01", f"5m {_MV}"),
           Query(f"sum by (model, version) (sidemesh:request_latency_objective_misses:ratio_rate1h{{{MESH}}}) / 0.01", f"1h {_MV}"))),
]

MODEL_SERVER = [
    Panel("Queue time and compute time", "s",
          "Time a request waited for its batch to start against the ONNX Runtime time of one batch, at the model server.",
          (Query(f"histogram_quantile(0.5, sum by (model, version, le) (sidemesh:model_queue_duration_seconds_bucket:rate1m{{{MESH}}}))",
                 f"queue p50 {_MV}"),
           Query(f"histogram_quantile(0.99, sum by (model, version, le) (sidemesh:model_queue_duration_seconds_bucket:rate1m{{{MESH}}}))",
                 f"queue p99 {_MV}"),
           Query(f"histogram_quantile(0.5, sum by (model, version, le) (sidemesh:model_compute_duration_seconds_bucket:rate1m{{{MESH}}}))",
                 f"compute p50 {_MV}"),
           Query(f"histogram_quantile(0.99, sum by (model, version, le) (sidemesh:model_compute_duration_seconds_bucket:rate1m{{{MESH}}}))",
                 f"compute p99 {_MV}"))),
    Panel("Batch size", "suffix: rows",
          "Rows per ONNX Runtime run: median, 99th percentile and mean. Dynamic batching works when these exceed 1 under load.",
          (Query(f"histogram_quantile(0.5, sum by (model, version, le) (sidemesh:model_batch_size_bucket:rate1m{{{MESH}}}))", f"p50 {_MV}"),
           Query(f"histogram_quantile(0.99, sum by (model, version, le) (sidemesh:model_batch_size_bucket:rate1m{{{MESH}}}))", f"p99 {_MV}"),
           Query(f"sum by (model, version) (rate(sidemesh_model_batch_size_sum{{{MESH}}}[{RATE}]))\n"
                 f"/ sum by (model, version) (rate(sidemesh_model_batch_size_count{{{MESH}}}[{RATE}]))", f"mean {_MV}"))),
    Panel("Requests in flight at the model server", "short",
          "Requests queued or running in the model server.",
          (Query(f"sum by (model, version) (sidemesh_model_inflight_requests{{{MESH}}})", _MV),), width=24),
]

RESILIENCE = [
    Panel("Retries", "reqps",
          "Retries made by the sidecars, by the condition that caused them, and retries refused because the retry "
          "budget was used up. 0 for versions with traffic and no retries.",
          (Query(_or_zero(f"sum by (model, version, reason) (rate(sidemesh_retries_total{{{MESH}}}[{RATE}]))", "model, version"),
                 "{{model}} v{{version}} {{reason}}"),
           Query(_or_zero(f"sum by (model, version) (rate(sidemesh_retry_budget_exhausted_total{{{MESH}}}[{RATE}]))", "model, version"),
                 f"budget exhausted {_MV}")), width=8),
    Panel("Requests shed by the sidecars", "reqps",
          "503s the sidecars gave themselves, by the shedding sidecar's model and version: at their limit of requests "
          "in flight (overload) or without routes yet (not_ready). 0 for versions with traffic and no shedding.",
          (Query(_or_zero(f"sum by (model, version, reason) (rate(sidemesh_shed_total{{{MESH}}}[{RATE}]))", "model, version"),
                 "{{model}} v{{version}} {{reason}}"),), width=8),
    Panel("Outlier ejections", "short",
          "Endpoints ejected after consecutive 5xx in the last 5 minutes, by the ejected endpoint's version, and "
          "endpoints ejected right now (namespace-wide).",
          (Query(f"sum by (model, version) ({increase(f'sidemesh_outlier_ejections_total{{{MESH}}}', '5m')})\n"
                 f"or on (model, version) 0 * sum by (model, version) (rate(sidemesh_requests_total{{{MESH}}}[5m]))",
                 f"ejections in 5m {_MV}"),
           Query(f"sum(sidemesh_outlier_ejected_endpoints{{{NAMESPACE}}})", "ejected now")), width=8),
]

SHADOW = [
    Panel("Shadow latency minus primary latency", "s",
          "Per mirrored request: the shadow's latency minus the primary's (negative: the shadow was faster). "
          "`version` is the primary.",
          _quantiles("sidemesh:mirror_latency_delta_seconds_bucket:rate1m", "model, version, shadow_version",
                     "{{model}} v{{version}} → v{{shadow_version}}")),
    Panel("Shadow copies by outcome", "reqps",
          "Copies sent to shadow versions: ok, shadow_error, primary_error (not compared), dropped_queue_full, "
          "dropped_too_large.",
          (Query(f"sum by (model, version, shadow_version, outcome) (rate(sidemesh_mirror_requests_total{{{MESH}}}[{RATE}]))",
                 "{{model}} v{{version}} → v{{shadow_version}} {{outcome}}"),)),
]

CONTROL_PLANE = [
    Panel("xDS nodes: connected, stale, NACKed", "short",
          "From the control plane: nodes with an open ADS stream, nodes that have not applied the latest routing "
          "version (SidemeshXdsConfigStale after 5 minutes) and nodes behind because they rejected it "
          "(SidemeshXdsConfigNacked).",
          (Query("sum(sidemesh_xds_connected_nodes)", "connected"),
           Query("sum(sidemesh_xds_stale_nodes)", "stale"),
           Query("sum(sidemesh_xds_nacked_nodes)", "NACKed")), width=24),
]


def latency_dashboard():
    return dashboard(
        "sidemesh / Latency", "sidemesh-latency",
        "Per model and version: traffic and split, errors, latency and its objective, model server queue and "
        "compute time, retries, shedding, ejections and shadow latency.",
        [("Traffic", TRAFFIC), ("Latency", LATENCY), ("Model server", MODEL_SERVER), ("Resilience", RESILIENCE),
         ("Shadows", SHADOW), ("Control plane", CONTROL_PLANE)],
    )
