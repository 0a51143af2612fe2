"""Alert state per model version: hysteresis over window verdicts, and the events it emits.

A single drifted window is weak evidence (a burst of odd traffic, a small sample), and an
alert that flaps between firing and resolved trains people to ignore it. So an alert fires
only after ``fire_after`` drifted windows in a row and resolves only after ``resolve_after``
clean windows in a row while firing; anything else changes counters, not the alert, and
``observe`` returns ``None`` (repeats are suppressed: one "firing" per episode, one
"resolved" to end it).

The tracker is a plain state machine with no clock and no I/O: the caller passes each
verdict's time and persists ``state()`` in the same transaction as the verdict, so a restart
resumes streaks and firing alerts exactly where they were.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["AlertEvent", "AlertTracker"]

_STATUSES = ("firing", "resolved")
_STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One notification: a model version's alert started firing, or resolved.

    ``id`` is new for every notification (a resolve has its own), so receivers of an
    at-least-once stream dedupe on it; ``starts_at`` is shared by the firing and the resolved
    event of one episode, which is what ties them together.
    """

    id: str
    status: str
    model: str
    version: str
    starts_at: float
    ends_at: float | None
    at: float
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError("alert event id: expected a non-empty string")
        if self.status not in _STATUSES:
            raise ConfigError(f"alert event status: expected 'firing' or 'resolved', got {self.status!r}")
        for name in ("model", "version"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"alert event {name}: expected a non-empty string")
        for name in ("starts_at", "at"):
            _check_time(name, getattr(self, name))
        if self.status == "firing" and self.ends_at is not None:
            raise ConfigError("alert event ends_at: must be None while firing")
        if self.status == "resolved":
            _check_time("ends_at", self.ends_at)
        if not isinstance(self.summary, str):
            raise ConfigError("alert event summary: expected a string")
        try:
            # A deep copy through JSON: receivers get exactly what the outbox stored, and a
            # caller mutating its dict later cannot change an event already emitted.
            details = json.loads(json.dumps(dict(self.details), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"alert event details: expected a JSON-ready mapping ({exc})") from None
        object.__setattr__(self, "details", details)

    @classmethod
    def new(cls, status: str, model: str, version: str, starts_at: float, ends_at: float | None,
            at: float, summary: str, details: Mapping[str, Any]) -> AlertEvent:
        return cls(uuid.uuid4().hex, status, model, version, starts_at, ends_at, at, summary, details)

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "model": self.model, "version": self.version,
                "starts_at": self.starts_at, "ends_at": self.ends_at, "at": self.at,
                "summary": self.summary, "details": json.loads(json.dumps(self.details))}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlertEvent:
        try:
            return cls(d["id"], d["status"], d["model"], d["version"], d["starts_at"], d.get("ends_at"),
                       d["at"], d.get("summary", ""), d.get("details") or {})
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"alert event: missing or malformed field {exc}") from None


def _check_time(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"alert event {name}: expected unix seconds (a finite number >= 0), got {value!r}")


@dataclass(slots=True)
class _Series:
    """Mutable per-version counters; only the tracker touches them."""

    drifted: int = 0            # drifted windows in a row (0 after a clean one)
    clean: int = 0              # clean windows in a row (0 after a drifted one)
    firing: AlertEvent | None = None
    last_at: float | None = None


class AlertTracker:
    """Hysteresis per (model, version); see the module docstring."""

    def __init__(self, fire_after: int, resolve_after: int, state: Mapping | None = None) -> None:
        for name, value in (("fire_after", fire_after), ("resolve_after", resolve_after)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected a whole number of windows >= 1, got {value!r}")
        self.fire_after = fire_after
        self.resolve_after = resolve_after
        self._series: dict[tuple[str, str], _Series] = {}
        if state:
            self._restore(state)

    def observe(self, model: str, version: str, drifted: bool, at: float, summary: str,
                details: Mapping[str, Any]) -> AlertEvent | None:
        """Count one window's verdict; return an event only when the alert changes state."""
        s = self._series.setdefault((model, version), _Series())
        s.last_at = at
        if drifted:
            s.drifted, s.clean = s.drifted + 1, 0
            if s.firing is None and s.drifted >= self.fire_after:
                s.firing = AlertEvent.new("firing", model, version, at, None, at, summary, details)
                return s.firing
            return None
        s.drifted, s.clean = 0, s.clean + 1
        if s.firing is not None and s.clean >= self.resolve_after:
            event = AlertEvent.new("resolved", model, version, s.firing.starts_at, at, at, summary, details)
            s.firing = None
            return event
        return None

    def forget(self, model: str, version: str, at: float, summary: str = "") -> AlertEvent | None:
        """Drop a version's state (its reference was deleted); resolve its alert if firing,
        so that nothing is left firing for a version nobody watches any more."""
        s = self._series.pop((model, version), None)
        if s is None or s.firing is None:
            return None
        summary = summary or f"{model} version {version}: no longer monitored (reference removed)"
        return AlertEvent.new("resolved", model, version, s.firing.starts_at, at, at, summary, {})

    def firing(self) -> list[AlertEvent]:
        """The firing events of alerts still firing (for re-posting to Alertmanager)."""
        return [s.firing for _, s in sorted(self._series.items()) if s.firing is not None]

    def status(self, model: str, version: str) -> dict:
        s = self._series.get((model, version)) or _Series()
        return {"firing": s.firing is not None, "since": s.firing.starts_at if s.firing else None,
                "drifted_in_a_row": s.drifted, "clean_in_a_row": s.clean,
                "fire_after": self.fire_after, "resolve_after": self.resolve_after, "last_at": s.last_at}

    def state(self) -> dict:
        """JSON-ready state; ``AlertTracker(k, m, state=...)`` restores it exactly."""
        return {"format": _STATE_FORMAT, "series": [
            {"model": model, "version": version, "drifted": s.drifted, "clean": s.clean,
             "last_at": s.last_at, "firing": s.firing.to_dict() if s.firing else None}
            for (model, version), s in sorted(self._series.items())]}

    def _restore(self, state: Mapping) -> None:
        if state.get("format") != _STATE_FORMAT or not isinstance(state.get("series"), list):
            raise ConfigError(f"alert tracker state: expected format {_STATE_FORMAT} with a 'series' list")
        for i, item in enumerate(state["series"]):
            try:
                drifted, clean = int(item["drifted"]), int(item["clean"])
                firing = AlertEvent.from_dict(item["firing"]) if item.get("firing") else None
                key = (str(item["model"]), str(item["version"]))
                last_at = item.get("last_at")
            except (KeyError, TypeError, ValueError, ConfigError) as exc:
                raise ConfigError(f"alert tracker state: series[{i}] is malformed ({exc})") from None
            if drifted < 0 or clean < 0 or (firing is not None and firing.status != "firing"):
                raise ConfigError(f"alert tracker state: series[{i}] has impossible counters or alert")
            self._series[key] = _Series(drifted, clean, firing, last_at)
