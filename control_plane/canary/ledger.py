"""The sidecars' load reports, kept per (model, version) as timestamped deltas.

Each report (one ``ClusterStats`` of one sidecar, see ``sidemesh.load_metrics``) becomes a
``Tally`` stamped with the time span it covers: from its arrival minus the interval the
sidecar says it covers (``load_report_interval``) to its arrival. A gate asks for the sum
over a window and gets the reports that lie wholly inside it, so a report that straddles
the change of weights (or a sidecar's first report after an outage, which covers the
whole outage) is left out. Reports older than ``keep_s`` are pruned as new ones arrive.
The ledger is memory only: a restarted control plane starts the current step's window
again (the controller does that when it resumes).
"""

from __future__ import annotations

import math
import time
from collections import deque

from sidemesh import load_metrics as lm

from .measure import Measurement, quantile

__all__ = ["LoadLedger", "Tally"]

_BUCKETS = len(lm.LATENCY_BOUNDS) + 1
_PRIMARY = {name: i for i, name in enumerate(lm.bucket_names(lm.LATENCY))}
_SHADOW = {name: i for i, name in enumerate(lm.bucket_names(lm.SHADOW_LATENCY))}


class Tally:
    """Counts of one report, or the sum of several."""

    __slots__ = ("requests", "errors", "latency", "shadow_answers", "shadow_errors", "compared_rows", "agreed_rows",
                 "mismatches", "shadow_latency")

    def __init__(self) -> None:
        self.requests = self.errors = 0
        self.shadow_answers = self.shadow_errors = self.compared_rows = self.agreed_rows = self.mismatches = 0
        self.latency = [0] * _BUCKETS
        self.shadow_latency = [0] * _BUCKETS

    @classmethod
    def from_cluster_stats(cls, stats) -> "Tally":
        """One ``ClusterStats``; unknown load metric names are ignored (a newer sidecar)."""
        t = cls()
        for locality in stats.upstream_locality_stats:
            t.requests += locality.total_issued_requests
            t.errors += locality.total_error_requests
            for metric in locality.load_metric_stats:
                name, count = metric.metric_name, metric.num_requests_finished_with_metric
                if (i := _PRIMARY.get(name)) is not None:
                    t.latency[i] += count
                elif (i := _SHADOW.get(name)) is not None:
                    t.shadow_latency[i] += count
                elif name == lm.SHADOW_ANSWERS:
                    t.shadow_answers += count
                elif name == lm.SHADOW_ERRORS:
                    t.shadow_errors += count
                elif name == lm.SHADOW_MISMATCHES:
                    t.mismatches += count
                elif name in (lm.SHADOW_COMPARED_ROWS, lm.SHADOW_AGREED_ROWS):
                    value = metric.total_metric_value
                    rows = int(round(value)) if math.isfinite(value) and value >= 0 else 0
                    if name == lm.SHADOW_COMPARED_ROWS:
                        t.compared_rows += rows
                    else:
                        t.agreed_rows += rows
        t.errors = min(t.errors, t.requests)
        t.agreed_rows = min(t.agreed_rows, t.compared_rows)
        return t

    def add(self, other: "Tally") -> None:
        for name in ("requests", "errors", "shadow_answers", "shadow_errors", "compared_rows", "agreed_rows", "mismatches"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency = [a + b for a, b in zip(self.latency, other.latency)]
        self.shadow_latency = [a + b for a, b in zip(self.shadow_latency, other.shadow_latency)]

    def measurement(self) -> Measurement:
        return Measurement(
            requests=self.requests, errors=self.errors, p99_s=quantile(0.99, lm.LATENCY_BOUNDS, self.latency),
            shadow_answers=self.shadow_answers, shadow_errors=self.shadow_errors, compared_rows=self.compared_rows,
            agreed_rows=self.agreed_rows, mismatches=self.mismatches,
            shadow_p99_s=quantile(0.99, lm.LATENCY_BOUNDS, self.shadow_latency),
        )


class LoadLedger:
    """Implements ``measure.Source`` from the reports; safe to use from the event loop only."""

    def __init__(self, keep_s: float = 3600.0, max_reports: int = 100_000) -> None:
        self.keep_s = keep_s
        self.max_reports = max_reports  # per (model, version): a bound even at absurd report rates
        self._reports: dict[tuple[str, str], deque[tuple[float, float, Tally]]] = {}
        self.reports_total = 0

    def add(self, cluster_name: str, tally: Tally, at: float | None = None, covers_s: float = 0.0) -> bool:
        """Record one cluster's report, which covers the ``covers_s`` seconds before ``at``;
        False when the name is not ``model|version``."""
        model, sep, version = cluster_name.partition("|")
        if not sep or not model or not version:
            return False
        at = time.time() if at is None else at
        reports = self._reports.get((model, version))
        if reports is None:
            reports = self._reports[(model, version)] = deque(maxlen=self.max_reports)
        covers_s = covers_s if math.isfinite(covers_s) and covers_s > 0 else 0.0
        reports.append((at - covers_s, at, tally))
        while reports and reports[0][1] < at - self.keep_s:
            reports.popleft()
        self.reports_total += 1
        return True

    def tally(self, model: str, version: str, since: float, until: float) -> Tally:
        total = Tally()
        for start, end, tally in self._reports.get((model, version), ()):
            if since <= start and end <= until:
                total.add(tally)
        return total

    async def measure(self, model: str, version: str, since: float, until: float) -> Measurement:
        return self.tally(model, version, since, until).measurement()
