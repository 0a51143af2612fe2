"""Windows: the statistics of one model version's traffic over a span of rows and/or time.

Reports from every sidecar serving a version merge into that version's open window (the
sketches are mergeable, so the order and the number of sidecars do not matter). A window
closes when it holds ``rows`` rows or is ``seconds`` old, whichever comes first (either
limit can be off); the closed window is evaluated and a fresh one opens with the next
report. Windows are timed on the detector's clock, not the sidecars'.

A reference capture is the same accumulation with a row target, ending in a reference
instead of an evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import ConfigError
from .sketch import InputSketch

__all__ = ["Accumulator", "WindowPolicy", "Windows"]


@dataclass(frozen=True)
class WindowPolicy:
    """``rows``: close at this many rows (0: no row limit); ``seconds``: close at this age (0: none)."""

    rows: int = 1000
    seconds: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 0:
            raise ConfigError(f"--window-rows: expected a whole number >= 0, got {self.rows!r}")
        if not isinstance(self.seconds, (int, float)) or not math.isfinite(self.seconds) or self.seconds < 0:
            raise ConfigError(f"--window-seconds: expected seconds >= 0, got {self.seconds!r}")
        if self.rows == 0 and self.seconds == 0:
            raise ConfigError("--window-rows and --window-seconds are both 0: a window would never close")


@dataclass
class Accumulator:
    """Merged statistics of one model version, per input, since ``started_at``."""

    model: str
    version: str
    started_at: float
    inputs: dict[str, InputSketch] = field(default_factory=dict)
    first_row_at: float = math.inf  # the sidecars' own times of the first and last rows
    last_row_at: float = -math.inf

    @property
    def rows(self) -> int:
        """Rows seen: the largest row count of any input (a request counts once per input)."""
        return max((s.rows for s in self.inputs.values()), default=0)

    def add(self, input_name: str, sketch: InputSketch, start: float, end: float) -> None:
        mine = self.inputs.get(input_name)
        if mine is None or mine.datatype != sketch.datatype:
            # A changed datatype restarts that input's statistics rather than mixing kinds.
            self.inputs[input_name] = sketch
        else:
            mine.merge(sketch)
        if start and start < self.first_row_at:
            self.first_row_at = start
        if end and end > self.last_row_at:
            self.last_row_at = end

    def describe(self, now: float) -> dict:
        return {
            "model": self.model, "version": self.version, "rows": self.rows,
            "started_at": self.started_at, "age_s": round(max(0.0, now - self.started_at), 3),
            "inputs": {name: {"datatype": s.datatype, "rows": s.rows, "features": len(s.features)}
                       for name, s in sorted(self.inputs.items())},
        }


class Windows:
    """The open window of every model version."""

    def __init__(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self.open: dict[tuple[str, str], Accumulator] = {}

    def add(self, model: str, version: str, input_name: str, sketch: InputSketch, start: float, end: float,
            now: float) -> Accumulator | None:
        """Merge a report's input; return the window if this closed it (by rows)."""
        key = (model, version)
        window = self.open.get(key)
        if window is None:
            window = self.open[key] = Accumulator(model, version, now)
        window.add(input_name, sketch, start, end)
        if self.policy.rows and window.rows >= self.policy.rows:
            del self.open[key]
            return window
        return None

    def due(self, now: float) -> list[Accumulator]:
        """Close and return the windows that have reached their age limit."""
        if not self.policy.seconds:
            return []
        closed = [w for w in self.open.values() if now - w.started_at >= self.policy.seconds]
        for window in closed:
            del self.open[(window.model, window.version)]
        return closed

    def restore(self, window: Accumulator) -> None:
        self.open[(window.model, window.version)] = window
