"""``sidemesh up --demo``: four timed phases that show what the mesh does.

1. traffic like the training data at 90/10 between versions 1 and 2;
2. the split moved to 50/50, and the observed split following it;
3. 100% of the requests mirrored to version 3, and how often it agrees with the primaries;
4. the inputs shifted by 1.5 standard deviations on four features, until the detector's
   alert arrives at the local receiver.

Each phase is bounded in time (about 30 s in all when things go well, under two minutes
when they do not); a phase that does not see what it waits for says so and the demo
carries on. Changes go through the control plane's admin API, the same calls
``sidemesh split`` and ``sidemesh mirror`` make.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from .board import Console, describe_route
from .clients import AdminApi
from .config import MODEL
from .load import ROWS_PER_REQUEST, SHIFTED_FEATURES, Load, request_bodies
from .observe import Observer
from .receiver import Alert

__all__ = ["Demo", "DemoTimings"]

_SHIFT_SIGMAS = 1.5


@dataclass(frozen=True)
class DemoTimings:
    rate: float = 40.0  # requests per second (8 rows each)
    phase_requests: int = 320  # phases 1 and 2 (8 s each at 40 req/s)
    mirror_requests: int = 240  # phase 3
    agreement_wait_s: float = 10.0  # phase 3: for the comparisons to show in the metrics
    alert_wait_s: float = 60.0  # phase 4: for the drift alert

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.phase_requests > 0 and self.mirror_requests > 0
                and self.agreement_wait_s > 0 and self.alert_wait_s > 0):
            raise ValueError("demo timings: every rate, count and wait must be > 0")


@dataclass
class _Status:
    phase: int = 0
    title: str = ""
    load: Load | None = None
    notes: list[str] = field(default_factory=list)


class Demo:
    PHASES = 4

    def __init__(self, console: Console, admin: AdminApi, observer: Observer, load: Load, report_url: str,
                 timings: DemoTimings = DemoTimings()) -> None:
        self.console, self.admin, self.observer, self.load = console, admin, observer, load
        self.report_url, self.timings = report_url, timings
        self.status = _Status()
        self._alerted: asyncio.Future | None = None

    # -- what the board shows and what the receiver tells

    def lines(self) -> list[str]:
        s = self.status
        if not s.phase:
            return []
        lines = [f"demo phase {s.phase}/{self.PHASES}: {s.title}"]
        if s.load is not None and s.load.target:
            lines.append("  " + s.load.progress())
        return lines

    def on_alert(self, alert: Alert) -> None:
        if self._alerted is not None and not self._alerted.done() and alert.status == "firing" and alert.via == "detector":
            self._alerted.set_result(alert)

    # -- the phases

    def _say(self, text: str) -> None:
        self.console.event(f"demo: {text}")

    def _begin(self, phase: int, title: str) -> None:
        self.status.phase, self.status.title, self.status.load = phase, title, None
        self._say(f"phase {phase}/{self.PHASES}: {title}")

    async def _route(self, weights: dict[str, int], mirror: float | None, command: str) -> None:
        found = await self.admin.route(MODEL)
        route = dict(found[1]) if found else {}
        route["backends"] = [{**b, "weight": weights.get(b["version"], 0)} for b in route.get("backends", [])]
        known = {b["version"] for b in route["backends"]}
        route["backends"] += [{"version": v, "weight": w} for v, w in weights.items() if v not in known]
        route["mirrors"] = [{"version": "3", "percent": mirror}] if mirror else []
        if found and found[1].get("backends") == route["backends"] and found[1].get("mirrors", []) == route["mirrors"]:
            self._say(f"route already {describe_route(route)}")
            return
        version = await self.admin.put_route(MODEL, route)
        self._say(f"route set to {describe_route(route)} (routing version {version}); on the command line: {command}")

    async def _send(self, bodies: list[bytes], target: int) -> None:
        self.status.load = self.load
        await self.load.run(bodies, target)
        summary = f"{self.load.answered}/{target} answered, by {self.load.split()}"
        if self.load.failed:
            summary += f"; {self.load.failed} failed (last: {self.load.last_error})"
        self._say(summary)

    async def run(self) -> bool:
        """The four phases; True when each showed what it is there to show."""
        t = self.timings
        started = time.monotonic()
        clean = request_bodies(400, seed=21)
        ok = True

        self._begin(1, f"{t.phase_requests} requests like the training data, split 90/10 between versions 1 and 2")
        await self._route({"1": 90, "2": 10, "3": 0}, None, f"sidemesh split {MODEL} 1=90 2=10 3=0; sidemesh mirror {MODEL} --off")
        await self._send(clean, t.phase_requests)
        ok &= self.load.answered > 0

        self._begin(2, "move the split to 50/50 and watch the observed split follow")
        await self._route({"1": 50, "2": 50, "3": 0}, None, f"sidemesh split {MODEL} 1=50 2=50")
        await self._send(clean, t.phase_requests)
        ok &= self.load.answered > 0

        self._begin(3, "mirror 100% of the requests to version 3 and compare its answers")
        before = self.observer.view.version("3")
        await self._route({"1": 50, "2": 50, "3": 0}, 100.0, f"sidemesh mirror {MODEL} --to 3 --percent 100")
        await self._send(clean, t.mirror_requests)
        ok &= await self._agreement(before.agreed, before.compared)

        self._begin(4, f"shift features {', '.join(map(str, SHIFTED_FEATURES))} by +{_SHIFT_SIGMAS:g} standard "
                       f"deviations and wait for the drift alert")
        ok &= await self._drift()
        self.status.phase = 0
        self._say(f"done in {time.monotonic() - started:.0f} s" + ("" if ok else "; some phases did not show what they should "
                                                                      "(see above and the logs)"))
        return ok

    async def _agreement(self, agreed0: float, compared0: float) -> bool:
        want = self.load.answered * ROWS_PER_REQUEST * 0.9  # rows: most shadow answers compared
        deadline = asyncio.get_running_loop().time() + self.timings.agreement_wait_s
        view = self.observer.view.version("3")
        while view.compared - compared0 < want:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                view = (await asyncio.wait_for(self.observer.next_view(), remaining)).version("3")
            except TimeoutError:
                break
        agreed, compared = view.agreed - agreed0, view.compared - compared0
        if compared <= 0:
            self._say(f"no comparison reached the metrics within {self.timings.agreement_wait_s:.0f} s (logs/sidecar-*.log)")
            return False
        self._say(f"version 3 agreed with the primaries on {agreed:.0f} of {compared:.0f} rows ({agreed / compared:.1%}); "
                  "its answers were compared and never returned")
        return True

    async def _drift(self) -> bool:
        t = self.timings
        shifted = request_bodies(400, seed=22, shift_sigmas=_SHIFT_SIGMAS)
        self._alerted = asyncio.get_running_loop().create_future()
        shift_at = time.monotonic()
        sending = asyncio.ensure_future(self._send(shifted, int(t.rate * t.alert_wait_s)))
        try:
            alert: Alert = await asyncio.wait_for(asyncio.shield(self._alerted), t.alert_wait_s)
        except TimeoutError:
            self._say(f"no drift alert within {t.alert_wait_s:.0f} s of the shift (logs/drift.log)")
            return False
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            self._alerted = None
        self._say(f"the drift alert for version {alert.version} arrived {time.monotonic() - shift_at:.1f} s after the shift; "
                  f"report: {self.report_url}")
        return True
