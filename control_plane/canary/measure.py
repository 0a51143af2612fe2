"""What a canary gate reads about one model version over one window, wherever it came from.

Two sources fill a ``Measurement``: the sidecars' own load reports (``ledger.LoadLedger``,
fed by the LRS stream) and, when the control plane is given ``--prometheus-url``, PromQL
queries (``prometheus.PrometheusSource``). Gates only ever see this dataclass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

__all__ = ["Measurement", "MeasureError", "Source", "quantile"]


class MeasureError(Exception):
    """A source could not measure (Prometheus unreachable, a query failed); the step waits."""


@dataclass(frozen=True)
class Measurement:
    """Primary traffic routed to the version (entry view: each client request once) and the
    shadow copies mirrored to it. ``p99_s``/``shadow_p99_s`` are None without samples."""

    requests: int = 0
    errors: int = 0
    p99_s: float | None = None
    shadow_answers: int = 0  # copies answered and compared
    shadow_errors: int = 0  # copies the shadow failed
    compared_rows: int = 0
    agreed_rows: int = 0
    mismatches: int = 0  # answers whose outputs differ in name, type or shape
    shadow_p99_s: float | None = None

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def shadow_copies(self) -> int:
        return self.shadow_answers + self.shadow_errors

    @property
    def shadow_error_ratio(self) -> float | None:
        return self.shadow_errors / self.shadow_copies if self.shadow_copies else None

    @property
    def agreement(self) -> float | None:
        """Share of compared rows whose predicted label agreed; an answer whose outputs do
        not even match in shape counts as one disagreeing row."""
        rows = self.compared_rows + self.mismatches
        return self.agreed_rows / rows if rows else None

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc.update(error_ratio=self.error_ratio, shadow_error_ratio=self.shadow_error_ratio, agreement=self.agreement)
        return doc


class Source(Protocol):
    async def measure(self, model: str, version: str, since: float, until: float) -> Measurement:
        """The version's traffic between ``since`` and ``until`` (unix seconds)."""


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """Prometheus's ``histogram_quantile`` over non-cumulative bucket ``counts`` (one per
    bound, then +Inf): linear interpolation inside the bucket; the highest finite bound
    when the rank falls in +Inf. None without observations."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    running = 0
    for i, count in enumerate(counts):
        if running + count >= rank and count > 0:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = bounds[i - 1] if i > 0 else 0.0
            return lower + (bounds[i] - lower) * (rank - running) / count
        running += count
    return float(bounds[-1]) if bounds else math.nan
