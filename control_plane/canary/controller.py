"""Runs canaries inside the control plane: start, judge each phase, step, promote or roll back.

One task ticks every ``tick_s`` (and at once after a start or an abort). For each running
canary it measures the candidate over the phase's own window (``Source``), asks the drift
detector, and hands both to ``gates.judge``. A pass moves on (shadow -> step 1 -> ... ->
promoted); a failure writes back the route as it was before the canary began ("the last
good split"). Every route the canary writes goes through ``RouteStore.put`` with author
``canary:<id>``, so the routing history shows each step, and every transition is saved
(``CanaryStore``) and sent as a webhook event.

A restarted control plane resumes each running canary in its current phase, with the
phase's window started again: the load reports behind the old window were in memory.
Someone else changing the model's route while a canary runs stops the canary and leaves
their route in place (``route_changed``): people outrank the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Callable

from ..errors import Conflict, NotFound
from ..routing import Route
from .drift_client import DriftClient
from .events import CanaryEvent, event_for
from .gates import Verdict, judge
from .measure import MeasureError, Measurement, Source
from .plan import promoted_route, shadow_route, step_route
from .spec import CanarySpec
from .state import Canary, CanaryStore, new_id

__all__ = ["CanaryController"]

log = logging.getLogger("sidemesh.control_plane")


class CanaryController:
    def __init__(self, routes, canaries: CanaryStore, source: Source, *, endpoints: Callable[[], dict],
                 on_change: Callable[[], None], notify: Callable[[CanaryEvent], None], drift: DriftClient | None = None,
                 tick_s: float = 1.0, settle_s: float = 2.0, on_decision: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``routes``: the RouteStore. ``endpoints()``: (model, version) -> registered sidecars.
        ``settle_s``: how long after a phase begins its window opens, for a source that
        cannot tell when a count was made (Prometheus: about a scrape interval)."""
        self.routes, self.canaries, self.source, self.drift = routes, canaries, source, drift
        self._endpoints, self._on_change, self._notify = endpoints, on_change, notify
        self._on_decision = on_decision or (lambda model, decision: None)
        self.tick_s, self.settle_s, self._clock = tick_s, settle_s, clock
        self._running: dict[str, Canary] = {}
        self._wake = asyncio.Event()

    # --- reading ---------------------------------------------------------------------------

    def running(self) -> list[Canary]:
        return list(self._running.values())

    def status(self, model: str) -> Canary:
        canary = self._running.get(model) or self.canaries.latest(model)
        if canary is None:
            raise NotFound(f"model {model!r} has had no canary; start one with `sidemesh canary start {model} --to VERSION`")
        return canary

    def statuses(self) -> list[Canary]:
        return [self._running.get(c.model, c) for c in self.canaries.latest_per_model()]

    # --- lifecycle -------------------------------------------------------------------------

    def resume(self) -> None:
        """Take up the canaries that were running when the control plane stopped."""
        now = self._clock()
        for canary in self.canaries.active():
            canary.phase_started_at = now
            canary.record(now, "resumed", f"the control plane restarted; {canary.phase} measures its window again", None)
            self.canaries.save(canary)
            self._running[canary.model] = canary
            log.info("resumed canary %s of model %s in %s", canary.id, canary.model, canary.phase)

    async def run(self) -> None:
        self.resume()
        while True:
            self._wake.clear()
            for canary in list(self._running.values()):
                try:
                    await self._evaluate(canary)
                except Exception:  # one broken canary must not stop the others, nor the loop
                    log.exception("evaluating canary %s of model %s failed", canary.id, canary.model)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick_s):
                    await self._wake.wait()

    async def start(self, model: str, spec: CanarySpec, author: str) -> Canary:
        self._refuse_if_running(model)
        route, version = self.routes.get(model)
        others = sum(w for v, w in route.weights.items() if v != spec.to)
        if others == 0:
            raise Conflict(f"version {spec.to!r} already takes all of model {model!r}'s traffic; there is no baseline to compare it with")
        backend = next((b for b in route.backends if b.version == spec.to), None)
        if not self._endpoints().get((model, spec.to)) and not (backend and backend.endpoints):
            raise Conflict(f"no sidecar of model {model!r} version {spec.to!r} is registered with the control plane; "
                           "start the candidate (with its sidecar) first")
        if spec.drift:
            if self.drift is None:
                raise Conflict("the drift gate needs the control plane's --drift-url (the drift detector's address); "
                               "restart it with one, or pass --no-drift")
            problem = await self.drift.reference_problem(model, spec.to)
            if problem is not None:
                raise Conflict(problem)
        self._refuse_if_running(model)  # another start may have won while we awaited
        route, version = self.routes.get(model)
        now = self._clock()
        canary = Canary(id=new_id(), model=model, spec=spec, baseline_route=route.to_dict(), state="shadow",
                        started_at=now, phase_started_at=now, route_version=version)
        self._running[model] = canary
        try:
            if spec.shadow_first:
                self._write(canary, shadow_route(route, spec.to, spec.mirror_percent))
                summary = f"started by {author}: shadow phase, {spec.mirror_percent:g}% of requests mirrored to {spec.to}"
            else:
                self._enter_step(canary, 0, now)
                summary = f"started by {author}: {canary.phase}"
        except BaseException:
            del self._running[model]
            raise
        self._transition(canary, "started", summary, now)
        self._wake.set()
        return canary

    def abort(self, model: str, author: str) -> Canary:
        canary = self._running.get(model)
        if canary is None:
            raise Conflict(f"no canary of model {model!r} is running")
        now = self._clock()
        self._write(canary, Route.from_dict(model, canary.baseline_route))
        self._finish(canary, "aborted", f"aborted by {author}", None, now)
        return canary

    # --- one tick ----------------------------------------------------------------------------

    async def _evaluate(self, canary: Canary) -> None:
        if self._route_changed(canary):
            return
        now = self._clock()
        phase = "shadow" if canary.state == "shadow" else "step"
        since = canary.phase_started_at + self.settle_s
        error = None
        try:
            m = await self.source.measure(canary.model, canary.candidate, since, now) if now > since else Measurement()
        except MeasureError as exc:
            m, error = Measurement(), str(exc)
        drift = await self.drift.check(canary.model, canary.candidate, canary.started_at) if canary.spec.drift and self.drift else None
        if self._running.get(canary.model) is not canary:
            return  # aborted while we measured
        elapsed = now - canary.phase_started_at
        verdict = judge(canary.spec, phase, m, elapsed, drift)
        canary.measurement = {**m.to_dict(), "window": [since, now], "error": error}
        canary.gates = [g.to_dict() for g in verdict.gates]
        if error is not None and verdict.outcome != "fail":
            if elapsed < canary.spec.timeout_s:
                return
            verdict = Verdict("fail", verdict.gates, "samples", f"the candidate could not be measured for {elapsed:.0f} s: {error}")
        if verdict.outcome == "pass":
            self._advance(canary, now)
        elif verdict.outcome == "fail":
            canary.failed_gate = verdict.failed_gate
            self._write(canary, Route.from_dict(canary.model, canary.baseline_route))
            self._finish(canary, "rolled_back", f"{canary.phase}: {verdict.reason}", verdict.failed_gate, now)

    def _route_changed(self, canary: Canary) -> bool:
        try:
            _, version = self.routes.get(canary.model)
        except NotFound:
            self._finish(canary, "aborted", "the model's route was deleted while the canary ran", "route_changed", self._clock())
            return True
        if version == canary.route_version:
            return False
        latest = self.routes.history(canary.model, 1)[0]
        if latest.author == f"canary:{canary.id}":  # written, then the control plane stopped before saving the canary
            canary.route_version = version
            return False
        self._finish(canary, "aborted", f"{latest.author} changed the route (routing version {version}) while the canary "
                     "ran; the canary stopped and left that route in place", "route_changed", self._clock())
        return True

    def _advance(self, canary: Canary, now: float) -> None:
        passed = canary.phase
        steps = canary.spec.steps
        if canary.state == "shadow":
            self._enter_step(canary, 0, now)
        elif canary.step is not None and canary.step + 1 < len(steps):
            self._enter_step(canary, canary.step + 1, now)
        else:
            if canary.weight < 100:
                self._write(canary, promoted_route(Route.from_dict(canary.model, canary.baseline_route), canary.candidate))
            canary.weight = 100.0
            self._finish(canary, "promoted", f"{passed} passed; {canary.candidate} takes all traffic", None, now)
            return
        self._transition(canary, "step", f"{passed} passed; now {canary.phase}", now)

    def _enter_step(self, canary: Canary, index: int, now: float) -> None:
        percent = canary.spec.steps[index]
        self._write(canary, step_route(Route.from_dict(canary.model, canary.baseline_route), canary.candidate, percent))
        canary.state, canary.step, canary.weight, canary.phase_started_at = "step", index, float(percent), now

    # --- writing -------------------------------------------------------------------------------

    def _write(self, canary: Canary, route: Route) -> None:
        change = self.routes.put(route, f"canary:{canary.id}")
        canary.route_version = change.version
        self._on_change()

    def _finish(self, canary: Canary, state: str, reason: str, failed_gate: str | None, now: float) -> None:
        canary.state, canary.finished_at, canary.failed_gate = state, now, failed_gate
        canary.reason = None if state == "promoted" else reason
        if state != "promoted":
            canary.weight = float(canary.baseline.get(canary.candidate, 0)) * 100 / max(1, sum(canary.baseline.values()))
        self._running.pop(canary.model, None)
        self._transition(canary, state, reason, now)

    def _transition(self, canary: Canary, event: str, summary: str, now: float) -> None:
        canary.record(now, event, summary, canary.route_version)
        self.canaries.save(canary)
        self._on_decision(canary.model, event)
        level = logging.WARNING if event in ("rolled_back", "aborted") else logging.INFO
        log.log(level, "canary %s of model %s: %s: %s", canary.id, canary.model, event, summary)
        try:
            self._notify(event_for(canary, event, summary, now))
        except Exception:  # the record is saved; a broken outbox must not undo the decision
            log.exception("queueing the webhook event of canary %s failed", canary.id)

    def _refuse_if_running(self, model: str) -> None:
        running = self._running.get(model)
        if running is not None:
            raise Conflict(f"canary {running.id} of model {model!r} is already running ({running.phase}); "
                           f"abort it first with `sidemesh canary abort {model}`")
