"""The sidecar's metrics, by name. Names follow DESIGN.md: ``sidemesh_`` prefix, base
units, ``model`` and ``version`` labels (``version`` is the version that answered)."""

from __future__ import annotations

from .metrics import DELTA_BUCKETS, DIFF_BUCKETS, MetricSet

__all__ = ["Instruments", "StatsInstruments", "LoadReportInstruments"]

_MV = ("model", "version")
_MIRROR = ("model", "version", "shadow_version")


class Instruments:
    def __init__(self, metrics: MetricSet, model: str = "", version: str = "") -> None:
        """``model``/``version``: this sidecar's own, the labels of what it refuses itself."""
        m = metrics
        self._own = (model, version)
        # What the load reports carry (load_report.LoadRecorder); set only when the sidecar
        # sends them, so the request path checks one attribute for None.
        self.load = None
        self.requests = m.counter("sidemesh_requests_total", "Requests answered, by the version that answered and the status code.", _MV + ("code",))
        self.duration = m.histogram("sidemesh_request_duration_seconds", "Time from a complete request to its response, retries included.", _MV)
        self.upstream_duration = m.histogram(
            "sidemesh_upstream_duration_seconds", "Time of one upstream call; upstream is local (this pod's model server) or remote (another sidecar).",
            _MV + ("upstream",))
        self.retries = m.counter("sidemesh_retries_total", "Retries made, by the condition that caused them.", _MV + ("reason",))
        self.retries_refused = m.counter("sidemesh_retry_budget_exhausted_total", "Retries not made because the retry budget was used up.", _MV)
        self.shed = m.counter("sidemesh_shed_total", "Requests refused by the sidecar itself with a 503, by reason; model and "
                              "version are the sidecar's own.", _MV + ("reason",))
        self.ejections = m.counter("sidemesh_outlier_ejections_total", "Endpoints ejected after consecutive 5xx.", _MV + ("endpoint",))
        self.mirror = m.counter(
            "sidemesh_mirror_requests_total",
            "Shadow copies by outcome: ok, shadow_error, primary_error (not compared), dropped_queue_full, dropped_too_large.",
            _MIRROR + ("outcome",))
        self.compared_rows = m.counter("sidemesh_mirror_compared_rows_total", "Rows whose predicted label was compared between primary and shadow.", _MIRROR)
        self.agreed_rows = m.counter("sidemesh_mirror_agreed_rows_total", "Rows where the shadow predicted the primary's label.", _MIRROR)
        self.mismatches = m.counter("sidemesh_mirror_mismatches_total", "Shadow answers whose outputs differ in name, type or shape.", _MIRROR)
        self.max_abs = m.histogram("sidemesh_mirror_max_abs_diff", "Largest absolute difference between primary and shadow outputs, per answer.", _MIRROR, DIFF_BUCKETS)
        self.max_rel = m.histogram("sidemesh_mirror_max_rel_diff", "Largest relative difference between primary and shadow outputs, per answer.", _MIRROR, DIFF_BUCKETS)
        self.latency_delta = m.histogram(
            "sidemesh_mirror_latency_delta_seconds", "Shadow latency minus primary latency (negative: the shadow was faster). With negative buckets "
            "there is no _sum or _count (OpenMetrics); the +Inf bucket is the count.", _MIRROR, DELTA_BUCKETS)

    def refused(self, reason: str) -> None:
        """One request this sidecar shed itself: ``overload`` or ``not_ready``."""
        self.shed.inc(self._own + (reason,))

    def answered(self, model: str, version: str, code: str, seconds: float) -> None:
        """One request answered (by the proxy or by the sidecar itself)."""
        self.requests.inc((model, version, code))
        self.duration.observe((model, version), seconds)


class StatsInstruments:
    """The input-statistics tap and stream (``--drift``); made only when it is on, so a
    sidecar without it exports none of these."""

    def __init__(self, metrics: MetricSet) -> None:
        m = metrics
        self.sampled = m.counter("sidemesh_stats_sampled_total", "Requests whose input tensors were added to the statistics.", _MV)
        self.skipped = m.counter(
            "sidemesh_stats_skipped_total", "Requests eligible for the statistics but not added, by reason: sample (not in the "
            "sampled share), cpu_budget, queue_full, too_large (bodies waiting to be decoded), undecodable.", _MV + ("reason",))
        self.tap_seconds = m.counter("sidemesh_stats_tap_seconds_total", "CPU time the tap spent decoding bodies and building "
                                     "statistics.", ())
        self.reports_sent = m.counter("sidemesh_stats_reports_sent_total", "Statistics reports written to the drift detector's stream "
                                      "(a report resent after a reconnect counts again).", ())
        self.reports_acked = m.counter("sidemesh_stats_reports_acked_total", "Reports the drift detector acknowledged as applied.", ())
        self.reports_rejected = m.counter("sidemesh_stats_reports_rejected_total", "Reports the drift detector refused (acknowledged "
                                          "with an error); they are not sent again.", ())
        self.reports_dropped = m.counter("sidemesh_stats_reports_dropped_total", "Reports dropped unsent or unacknowledged, oldest "
                                         "first, because the queue was full (the drift detector was away or slow).", ())


class LoadReportInstruments:
    """The load reports to the control plane (LRS); made only when they are on."""

    def __init__(self, metrics: MetricSet) -> None:
        m = metrics
        self.reports_sent = m.counter("sidemesh_load_reports_sent_total", "Load reports written to the control plane's LRS "
                                      "stream, one per reporting interval while it is up.", ())
        self.dropped = m.counter(
            "sidemesh_load_report_dropped_total", "Requests and shadow copies left out of the load reports, by reason: "
            "not_requested (the server asked for other clusters), too_many_clusters (the recorder's cap on clusters).", ("reason",))
