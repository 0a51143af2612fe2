"""The live status board, and the console it shares with the demo and the receiver.

On a terminal the board is redrawn in place about once a second, with the latest events
(alerts, demo steps) under it. Anywhere else (a pipe, a log, a test) redrawing would only
add noise, so events are printed as lines when they happen and a compact board every
``--board-interval`` seconds.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from typing import Callable, TextIO

from .config import MODEL
from .observe import MeshView, Observer, VersionView

__all__ = ["Console", "Board", "describe_route", "render_full", "render_compact"]

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


class Console:
    """Where every line of ``up`` goes. ``event`` lines also stay on a terminal's board."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.events: deque[str] = deque(maxlen=8)
        self.board_on = False  # while the board redraws, events are shown by it

    def print(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def event(self, text: str) -> None:
        """A line with the time it happened: printed now, or kept for the board to show."""
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.events.append(line)
        if not (self.tty and self.board_on):
            self.print(line)

    def redraw(self, text: str) -> None:
        self.stream.write(_CLEAR + text + "\n")
        self.stream.flush()


def describe_route(route: dict | None) -> str:
    if route is None:
        return "no route (every sidecar serves its own version)"
    weights = " ".join(f"{b['version']}={b['weight']}" for b in route.get("backends", []))
    mirrors = ", ".join(f"{m['version']} {m['percent']:g}%" for m in route.get("mirrors", []))
    return weights + (f"; mirror {mirrors}" if mirrors else "; no mirror")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _agreement(v: VersionView) -> str:
    if not v.compared:
        return "-"
    return f"{v.agreed:.0f}/{v.compared:.0f} rows ({v.agreed / v.compared:.1%})"


_VERDICTS = {"clean": "clean", "drift": "DRIFTED", "insufficient": "too few rows", "no_reference": "no reference"}


def _drift(v: VersionView) -> str:
    text = _VERDICTS.get(v.verdict or "", v.verdict or "no window yet")
    if v.firing:
        text += ", ALERT FIRING"
    elif v.drifted_in_a_row:
        text += f" ({v.drifted_in_a_row} in a row)"
    return text


def _route_line(view: MeshView) -> str:
    at = f"routing version {view.route_version}" if view.route_version is not None else "not reachable"
    return f"route {MODEL} ({at}): {describe_route(view.route)}"


def render_full(view: MeshView, header: list[str], extra: list[str], events: list[str], alerts: list[str] = ()) -> str:
    """The terminal board: URLs, the route, one row per version, the last alerts received,
    then the demo's progress and the latest events."""
    lines = [*header, "", _route_line(view),
             f"{'VERSION':<8}{'REQ/S':>8}{'SHARE':>7}{'SHADOW/S':>10}{'5XX/S':>7}{'P50':>10}{'P99':>10}  "
             f"{'MIRROR AGREEMENT':<26}DRIFT"]
    for v in view.versions:
        lines.append(f"{v.version:<8}{_rate(v.rps):>8}{_share(v.share):>7}{_rate(v.shadow_rps):>10}{_rate(v.errors_rps):>7}"
                     f"{_ms(v.p50_s):>10}{_ms(v.p99_s):>10}  {_agreement(v):<26}{_drift(v)}")
    lines.append(f"(rates over the last {view.window_s:.0f} s; agreement since the sidecars started)")
    lines += [f"! {p}" for p in view.problems]
    lines += ["", "last alerts received:", *(f"  {a}" for a in alerts[-3:])] if alerts else ["", "no alert received"]
    if extra:
        lines += ["", *extra]
    if events:
        lines += ["", "recent events:", *(f"  {e}" for e in events)]
    lines += ["", "Ctrl-C stops everything."]
    return "\n".join(lines)


def render_compact(view: MeshView, extra: list[str], alerts: list[str]) -> str:
    """A few lines for logs and tests: the route and one line per version."""
    lines = [f"board {time.strftime('%H:%M:%S')}: {_route_line(view)}"]
    for v in view.versions:
        line = (f"  version {v.version}: {_rate(v.rps)} req/s ({_share(v.share)}), p50 {_ms(v.p50_s)}, p99 {_ms(v.p99_s)}, "
                f"5xx {_rate(v.errors_rps)}/s")
        if v.shadow_rps:
            line += f", shadow {_rate(v.shadow_rps)}/s"
        if v.compared:
            line += f", agreement {_agreement(v)}"
        lines.append(line + f"; drift {_drift(v)}")
    lines += [f"  ! {p}" for p in view.problems]
    lines += [f"  {e}" for e in extra]
    lines.append(f"  alerts received: {len(alerts)}" + (f"; last: {alerts[-1]}" if alerts else ""))
    return "\n".join(lines)


class Board:
    """Scrapes once a second and shows the result: redrawn on a terminal, compact elsewhere."""

    def __init__(self, console: Console, observer: Observer, header: list[str], interval: float,
                 extra: Callable[[], list[str]], alerts: Callable[[], list[str]]) -> None:
        self.console, self.observer, self.header = console, observer, header
        self.interval, self.extra, self.alerts = interval, extra, alerts

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_print = loop.time() + self.interval
        self.console.board_on = True
        try:
            while True:
                started = loop.time()
                view = await self.observer.scrape()
                if self.console.tty:
                    self.console.redraw(render_full(view, self.header, self.extra(), list(self.console.events), self.alerts()))
                elif started >= next_print:
                    self.console.print(render_compact(view, self.extra(), self.alerts()))
                    next_print = started + self.interval
                await asyncio.sleep(max(0.0, 1.0 - (loop.time() - started)))
        finally:
            self.console.board_on = False
