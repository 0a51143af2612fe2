"""The gates of one canary phase, as a pure function of what was measured.

A phase (the shadow phase, or one weight step) is judged on its own traffic:

- too few samples (shadow: compared copies; step: requests) -> wait, and fail the
  ``samples`` gate once the phase's timeout is over;
- enough samples -> every gate is checked at once, and the first failed one fails the
  phase without waiting for the interval to end (the minimum sample is what makes the
  figure trustworthy; waiting longer only sends more traffic to a bad candidate);
- every gate passed and the interval is over -> the phase passes.

The drift gate fails as soon as the detector has given the candidate a "drift" verdict
since the canary started. When the detector cannot be reached the phase waits (a canary
is never promoted on a gate it could not read) until its timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

from .measure import Measurement
from .spec import CanarySpec

__all__ = ["DriftView", "Gate", "Verdict", "judge"]


@dataclass(frozen=True)
class DriftView:
    """What the drift detector said about the candidate since the canary started:
    ``drift_at`` is when the first "drift" verdict came (None: none), ``latest`` the newest
    verdict, ``error`` why it could not be asked."""

    latest: str | None = None
    drift_at: float | None = None
    detail: str = ""
    error: str | None = None


@dataclass(frozen=True)
class Gate:
    gate: str
    value: float | str | None
    limit: float | str | None
    ok: bool | None  # None: not decided yet

    def to_dict(self) -> dict:
        return {"gate": self.gate, "value": self.value, "limit": self.limit, "ok": self.ok}


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "pass", "fail" or "wait"
    gates: tuple[Gate, ...]
    failed_gate: str | None = None
    reason: str | None = None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def judge(spec: CanarySpec, phase: str, m: Measurement, elapsed_s: float, drift: DriftView | None) -> Verdict:
    """``phase`` is "shadow" or "step"; ``elapsed_s`` the time since the phase began."""
    shadow = phase == "shadow"
    samples = m.shadow_copies if shadow else m.requests
    what = "compared shadow copies" if shadow else "requests to the candidate"
    gates = [Gate("samples", samples, spec.min_requests, samples >= spec.min_requests)]
    if shadow:
        gates.append(Gate("shadow_errors", m.shadow_error_ratio, spec.max_error_ratio,
                          None if m.shadow_error_ratio is None else m.shadow_error_ratio <= spec.max_error_ratio))
        agreement = m.agreement
        gates.append(Gate("agreement", agreement, spec.min_agreement,
                          None if agreement is None else agreement >= spec.min_agreement))
        p99_ms = _ms(m.shadow_p99_s)
    else:
        gates.append(Gate("error_ratio", m.error_ratio, spec.max_error_ratio,
                          None if m.error_ratio is None else m.error_ratio <= spec.max_error_ratio))
        p99_ms = _ms(m.p99_s)
    if spec.max_p99_ms is not None:
        gates.append(Gate("p99", p99_ms, spec.max_p99_ms, None if p99_ms is None else p99_ms <= spec.max_p99_ms))
    if drift is not None:
        ok = None if drift.error is not None else drift.drift_at is None
        gates.append(Gate("drift", drift.error or drift.latest or "no verdict yet", "no drift verdict", ok))

    # Drift needs no sample of our own: the detector already judged the candidate's inputs.
    if drift is not None and drift.drift_at is not None:
        return Verdict("fail", tuple(gates), "drift", f"the drift detector gave {spec.to} a drift verdict: {drift.detail}")
    if samples < spec.min_requests:
        if elapsed_s >= spec.timeout_s:
            return Verdict("fail", tuple(gates), "samples", f"only {samples} {what} in {elapsed_s:.0f} s; "
                           f"{spec.min_requests} are needed before the step timeout ({spec.timeout_s:g} s)")
        return Verdict("wait", tuple(gates))
    if shadow and m.agreement is None and spec.min_agreement > 0:
        return Verdict("fail", tuple(gates), "agreement", f"{m.shadow_answers} shadow answers, but none had a predicted "
                       "label to compare (agreement is measured on classification outputs); use --min-agreement 0 to "
                       "roll out a model whose answers have no labels")
    for gate in gates:
        if gate.ok is False and gate.gate != "drift":
            return Verdict("fail", tuple(gates), gate.gate, _reason(gate, shadow, m))
    if drift is not None and drift.error is not None:
        if elapsed_s >= spec.timeout_s:
            return Verdict("fail", tuple(gates), "drift", f"the drift detector could not be asked for {elapsed_s:.0f} s: {drift.error}")
        return Verdict("wait", tuple(gates))
    if elapsed_s < spec.interval_s:
        return Verdict("wait", tuple(gates))
    return Verdict("pass", tuple(gates))


def _reason(gate: Gate, shadow: bool, m: Measurement) -> str:
    if gate.gate == "error_ratio":
        return f"error ratio {m.errors}/{m.requests} = {gate.value:.4f} is above the limit {gate.limit:g}"
    if gate.gate == "shadow_errors":
        return f"the shadow failed {m.shadow_errors} of {m.shadow_copies} copies ({gate.value:.4f}), above the limit {gate.limit:g}"
    if gate.gate == "agreement":
        return (f"answers agree on {m.agreed_rows} of {m.compared_rows + m.mismatches} compared rows ({gate.value:.4f}), "
                f"below the minimum {gate.limit:g}")
    if gate.gate == "p99":
        whose = "shadow answers'" if shadow else "requests'"
        return f"p99 latency of the candidate's {whose} {gate.value:g} ms is above the limit {gate.limit:g} ms"
    return f"gate {gate.gate} failed: {gate.value} against {gate.limit}"
