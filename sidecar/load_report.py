"""What this sidecar measured per cluster (``model|version``) since its last load report.

The request path adds to a row per cluster (two list increments and a bisect, no
allocation once the row exists); the LRS client (``load_report_client``) swaps the rows out
whole every reporting interval and sends them as Envoy ``ClusterStats``. What each number
means is the wire contract in ``sidemesh/load_metrics.py``:

- entry rows count inference requests that entered the mesh at this sidecar (no hop mark,
  not a shadow copy) and were routed to the cluster's version, whichever sidecar served
  them, so each client request is counted once in the whole mesh;
- shadow rows count the copies this sidecar mirrored to the cluster's version and compared.

Counts that could not be sent are put back (``restore``) and go out with the next report.
Rows are per cluster, so what waits is bounded by the number of clusters, which
``max_clusters`` caps: a request for a cluster past it is dropped and counted.
"""

from __future__ import annotations

import bisect
import time
from typing import Callable

from sidemesh.load_metrics import LATENCY_BOUNDS

__all__ = ["LoadRecorder", "LoadSnapshot", "ENTRY_OK", "ENTRY_ERRORS", "ENTRY_BUCKETS", "SHADOW_ANSWERS", "SHADOW_ERRORS",
           "SHADOW_COMPARED", "SHADOW_ROWS", "SHADOW_AGREED", "SHADOW_MISMATCHES", "SHADOW_BUCKETS", "BUCKETS"]

BUCKETS = len(LATENCY_BOUNDS) + 1  # the last is +Inf

# Entry row: [successful, errors, count per latency bucket..., latency sum per bucket...].
# ``error`` (a bool) indexes the first two directly.
ENTRY_OK, ENTRY_ERRORS, ENTRY_BUCKETS = 0, 1, 2
_ENTRY_LEN = ENTRY_BUCKETS + 2 * BUCKETS

# Shadow row: [answers, errors, answers with rows compared, compared rows, agreed rows,
# mismatches, count per latency bucket..., latency sum per bucket...]. The latency is the
# answers'.
SHADOW_ANSWERS, SHADOW_ERRORS, SHADOW_COMPARED, SHADOW_ROWS, SHADOW_AGREED, SHADOW_MISMATCHES, SHADOW_BUCKETS = range(7)
_SHADOW_LEN = SHADOW_BUCKETS + 2 * BUCKETS

_BOUNDS = LATENCY_BOUNDS


class LoadSnapshot:
    """The rows taken out of a recorder: what happened between ``since`` and ``until``
    (``time.monotonic`` seconds)."""

    __slots__ = ("entries", "shadows", "since", "until")

    def __init__(self, entries: dict[str, list], shadows: dict[str, list], since: float, until: float) -> None:
        self.entries = entries
        self.shadows = shadows
        self.since = since
        self.until = until

    def clusters(self) -> list[str]:
        return sorted(self.entries.keys() | self.shadows.keys())

    def only(self, wanted: frozenset[str] | None) -> tuple["LoadSnapshot", int]:
        """The rows of the ``wanted`` clusters (None: all) and how many requests and shadow
        copies the others held."""
        if wanted is None:
            return self, 0
        dropped = sum(row[ENTRY_OK] + row[ENTRY_ERRORS] for name, row in self.entries.items() if name not in wanted)
        dropped += sum(row[SHADOW_ANSWERS] + row[SHADOW_ERRORS] for name, row in self.shadows.items() if name not in wanted)
        return LoadSnapshot({n: r for n, r in self.entries.items() if n in wanted},
                            {n: r for n, r in self.shadows.items() if n in wanted}, self.since, self.until), dropped


class LoadRecorder:
    """Per-cluster deltas since the last ``take``. ``on_drop(n)`` is told about requests (or
    shadow copies) left out because ``max_clusters`` rows of their kind exist already."""

    __slots__ = ("_entries", "_shadows", "since", "max_clusters", "_clock", "_on_drop")

    def __init__(self, max_clusters: int = 256, on_drop: Callable[[int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_clusters, bool) or not isinstance(max_clusters, int) or max_clusters < 1:
            raise ValueError(f"max_clusters: expected a positive integer, got {max_clusters!r}")
        self._entries: dict[str, list] = {}
        self._shadows: dict[str, list] = {}
        self.max_clusters = max_clusters
        self._clock = clock
        self._on_drop = on_drop
        self.since = clock()

    # --- the request path ---------------------------------------------------------------

    def entry(self, cluster: str, error: bool, seconds: float) -> None:
        """One inference request that entered here, routed to ``cluster``; ``error``: 5xx."""
        row = self._entries.get(cluster)
        if row is None:
            row = self._new(self._entries, cluster, _ENTRY_LEN, 1)
            if row is None:
                return
        row[error] += 1  # ENTRY_OK or ENTRY_ERRORS
        i = ENTRY_BUCKETS + bisect.bisect_left(_BOUNDS, seconds)
        row[i] += 1
        row[i + BUCKETS] += seconds

    # --- the mirror workers ---------------------------------------------------------------

    def shadow_answer(self, cluster: str, seconds: float) -> None:
        """A copy the shadow answered, compared with the primary's answer."""
        row = self._shadow(cluster)
        if row is not None:
            row[SHADOW_ANSWERS] += 1
            i = SHADOW_BUCKETS + bisect.bisect_left(_BOUNDS, seconds)
            row[i] += 1
            row[i + BUCKETS] += seconds

    def shadow_error(self, cluster: str) -> None:
        """A copy the shadow failed (5xx, reset, timeout, no endpoint)."""
        row = self._shadow(cluster)
        if row is not None:
            row[SHADOW_ERRORS] += 1

    def shadow_rows(self, cluster: str, rows: int, agreed: int) -> None:
        """An answer whose predicted labels were compared: ``agreed`` of ``rows`` matched."""
        row = self._shadow(cluster)
        if row is not None:
            row[SHADOW_COMPARED] += 1
            row[SHADOW_ROWS] += rows
            row[SHADOW_AGREED] += agreed

    def shadow_mismatch(self, cluster: str) -> None:
        """An answer whose outputs differ from the primary's in name, type or shape."""
        row = self._shadow(cluster)
        if row is not None:
            row[SHADOW_MISMATCHES] += 1

    def _shadow(self, cluster: str) -> list | None:
        row = self._shadows.get(cluster)
        return row if row is not None else self._new(self._shadows, cluster, _SHADOW_LEN, 1)

    def _new(self, rows: dict[str, list], cluster: str, length: int, dropping: int) -> list | None:
        """A fresh row, or None (``dropping`` counted as dropped) when ``max_clusters`` exist."""
        if len(rows) >= self.max_clusters:
            if self._on_drop is not None and dropping:
                self._on_drop(dropping)
            return None
        row = rows[cluster] = [0] * (length - BUCKETS) + [0.0] * BUCKETS
        return row

    # --- the reporter ---------------------------------------------------------------------

    def take(self) -> LoadSnapshot:
        """Everything since the last take; the recorder starts over (a swap, O(1))."""
        now = self._clock()
        snapshot = LoadSnapshot(self._entries, self._shadows, self.since, now)
        self._entries, self._shadows, self.since = {}, {}, now
        return snapshot

    def restore(self, snapshot: LoadSnapshot) -> None:
        """Put back a snapshot that could not be sent: its counts join the next report,
        whose interval then starts at the snapshot's."""
        for taken, rows, length, counted in ((snapshot.entries, self._entries, _ENTRY_LEN, (ENTRY_OK, ENTRY_ERRORS)),
                                             (snapshot.shadows, self._shadows, _SHADOW_LEN, (SHADOW_ANSWERS, SHADOW_ERRORS))):
            for cluster, old in taken.items():
                row = rows.get(cluster)
                if row is None:
                    row = self._new(rows, cluster, length, sum(old[i] for i in counted))
                    if row is None:
                        continue
                for i, value in enumerate(old):
                    row[i] += value
        self.since = min(self.since, snapshot.since)
