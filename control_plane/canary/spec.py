"""What a canary is asked to do, as a frozen, validated dataclass.

``CanarySpec.from_dict`` parses the admin API's JSON (``POST /v1/canaries/{model}``) and names
the field at fault in every error, as ``Route.from_dict`` does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ValidationError
from ..routing import NAME

__all__ = ["CanarySpec", "DEFAULT_STEPS"]

DEFAULT_STEPS = (5, 10, 25, 50, 100)
_DAY = 86400.0


def _number(value: Any, where: str, low: float, high: float, low_open: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bound = f"greater than {low}" if low_open else f"at least {low}"
        raise ValidationError(where, f"expected a number {bound} and at most {high}, got {value!r}")
    return float(value)


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(where, f"expected an integer between {low} and {high}, got {value!r}")
    return value


@dataclass(frozen=True)
class CanarySpec:
    """``steps``: candidate weight percentages, strictly increasing; after the last passes
    the candidate gets 100%. ``interval_s``: the least time each phase runs; it passes once
    the interval is over and its traffic reached ``min_requests``. ``step_timeout_s``: a
    phase that has not reached its sample by then fails (default: ten intervals).
    ``max_p99_ms`` None: latency is not gated. ``drift``: gate on the drift detector's
    verdicts for the candidate (needs the control plane's ``--drift-url``)."""

    to: str
    shadow_first: bool = False
    steps: tuple[int, ...] = DEFAULT_STEPS
    interval_s: float = 60.0
    max_error_ratio: float = 0.01
    max_p99_ms: float | None = None
    min_agreement: float = 0.98
    drift: bool = True
    min_requests: int = 100
    mirror_percent: float = 100.0
    step_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.to, str) or not NAME.match(self.to):
            raise ValidationError("to", f"expected a version name of letters, digits, '_', '.' or '-', got {self.to!r}")
        for name in ("shadow_first", "drift"):
            if not isinstance(getattr(self, name), bool):
                raise ValidationError(name, f"expected true or false, got {getattr(self, name)!r}")
        steps = self.steps
        if not isinstance(steps, (tuple, list)) or not steps:
            raise ValidationError("steps", f"expected a non-empty list of percentages, got {steps!r}")
        for i, step in enumerate(steps):
            _integer(step, f"steps[{i}]", 1, 100)
            if i and step <= steps[i - 1]:
                raise ValidationError(f"steps[{i}]", f"expected steps in increasing order, got {steps[i - 1]} then {step}")
        object.__setattr__(self, "steps", tuple(steps))
        _number(self.interval_s, "interval_s", 0.0, _DAY, low_open=True)
        _number(self.max_error_ratio, "max_error_ratio", 0.0, 1.0)
        if self.max_p99_ms is not None:
            _number(self.max_p99_ms, "max_p99_ms", 0.0, 3_600_000.0, low_open=True)
        _number(self.min_agreement, "min_agreement", 0.0, 1.0)
        _integer(self.min_requests, "min_requests", 1, 100_000_000)
        _number(self.mirror_percent, "mirror_percent", 0.0, 100.0, low_open=True)
        if self.step_timeout_s is not None:
            _number(self.step_timeout_s, "step_timeout_s", 0.0, 7 * _DAY, low_open=True)
            if self.step_timeout_s < self.interval_s:
                raise ValidationError("step_timeout_s", f"expected at least interval_s ({self.interval_s:g}), got {self.step_timeout_s:g}")

    @property
    def timeout_s(self) -> float:
        return self.step_timeout_s if self.step_timeout_s is not None else 10 * self.interval_s

    @classmethod
    def from_dict(cls, doc: Any) -> "CanarySpec":
        if not isinstance(doc, dict):
            raise ValidationError("", 'expected a JSON object such as {"to": "v2", "steps": [10, 50, 100]}')
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - allowed)
        if unknown:
            raise ValidationError(unknown[0], f"unknown field; expected one of {', '.join(sorted(allowed))}")
        if "to" not in doc:
            raise ValidationError("to", "is required: the version to roll out")
        if "steps" in doc and not isinstance(doc["steps"], list):
            raise ValidationError("steps", f"expected a list of percentages, got {doc['steps']!r}")
        return cls(**doc)

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["steps"] = list(self.steps)
        return doc
