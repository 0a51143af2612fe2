"""``sidemesh up``: the whole mesh on this machine, a live status board, and a guided demo.

Ctrl-C (or SIGTERM) stops every child in reverse start order and exits 0 once none is
left and every port is free; a second Ctrl-C skips the grace period. Running ``up`` again
on the same state directory resumes: routes, references, alert state, token and secret
are kept.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

from .config import UpConfig, parse_ports
from .errors import ConfigError, UpError

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "sidemesh up") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the whole mesh on this machine: the control plane, model servers for versions 1 and 2 and a "
        "shadow version 3 of the example model, each with its sidecar, the drift detector with a reference, a local "
        "alert receiver, and Prometheus and Alertmanager when they are on the PATH; show a live status board. "
        "Ctrl-C stops everything. Running it again on the same --state-dir resumes with the same routes.",
        epilog="docs/local.md walks through it.",
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".sidemesh"), metavar="DIR",
                        help="where models, databases, token, configs and logs live (default .sidemesh)")
    parser.add_argument("--ports", default="default", metavar="PLAN",
                        help="'default' (version 1 on the documented ports, versions 2 and 3 at +100 and +200), "
                        "'free' (unused ports picked now) or a base port N (N, N+1, ...)")
    parser.add_argument("--demo", action="store_true",
                        help="drive traffic, move the split to 50/50, mirror to version 3, shift the inputs until "
                        "the drift alert arrives (about 30 s), then keep running")
    parser.add_argument("--exit-after-demo", action="store_true", help="with --demo: stop everything after the demo "
                        "(exit 0 when every phase showed what it should)")
    parser.add_argument("--board-interval", type=float, default=5.0, metavar="SECONDS",
                        help="when stdout is not a terminal, print a compact board this often (default 5); on a "
                        "terminal the board is redrawn every second")
    parser.add_argument("--scrape-interval", type=float, default=5.0, metavar="SECONDS",
                        help="Prometheus's scrape and rule interval, when it runs (default 5)")
    return parser


async def _serve(config: UpConfig, mesh, console, session, stopping: asyncio.Future, started: float) -> int:
    """The board (and the demo) until a signal, or the demo's end with --exit-after-demo."""
    from .board import Board
    from .clients import AdminApi, DriftApi
    from .demo import Demo, DemoTimings
    from .load import Load
    from .observe import Observer

    plan = config.ports
    admin = AdminApi(session, mesh.url(plan.control_admin), mesh.token)
    observer = Observer(session, plan, admin, DriftApi(session, mesh.url(plan.drift_http)))
    demo = None
    if config.demo:
        timings = DemoTimings()
        load = Load(session, mesh.url(plan.entry.sidecar_http, "/v2/models/tabular/infer"), rate=timings.rate)
        demo = Demo(console, admin, observer, load, mesh.url(plan.drift_http, "/report/tabular"), timings)
        mesh.on_alert = demo.on_alert
    header = mesh.header()
    for line in header:
        console.print(line)
    console.print(f"sidemesh up: ready in {time.monotonic() - started:.1f} s; Ctrl-C stops everything")
    board = Board(console, observer, header, config.board_interval, extra=demo.lines if demo else list,
                  alerts=mesh.alert_lines)
    tasks = [asyncio.ensure_future(board.run()), asyncio.ensure_future(mesh.watch())]
    for task, what in zip(tasks, ("the status board", "the child watcher"), strict=True):
        task.add_done_callback(lambda t, what=what: t.cancelled() or t.exception() is None or console.event(
            f"{what} stopped: {t.exception().__class__.__name__}: {t.exception()}; the mesh keeps running"))
    try:
        if demo is None:
            await stopping
            return 0
        demo_task = asyncio.ensure_future(_demo(demo, console))
        tasks.append(demo_task)
        if not config.exit_after_demo:
            await stopping  # the demo ends on its own and the board carries on
            return 0
        await asyncio.wait({stopping, demo_task}, return_when=asyncio.FIRST_COMPLETED)
        if not demo_task.done():
            return 0  # interrupted during the demo
        console.print("sidemesh up: demo finished (--exit-after-demo); stopping")
        return 0 if demo_task.result() else 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _run(config: UpConfig) -> int:
    import aiohttp

    from .board import Console
    from .configs import find_monitoring
    from .mesh import Mesh

    console = Console()
    mesh = Mesh(config, console, find_monitoring())
    loop = asyncio.get_running_loop()
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            hurry.set()  # a second Ctrl-C: no grace period
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
        loop.add_signal_handler(sig, on_signal)
    started = time.monotonic()
    code = 0
    stopping = asyncio.ensure_future(stop.wait())
    async with aiohttp.ClientSession() as session:
        try:
            starting = asyncio.ensure_future(mesh.start(session))
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()  # a failed start raises here
                code = await _serve(config, mesh, console, session, stopping, started)
            else:
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                console.print("sidemesh up: interrupted while starting")
        except UpError as exc:
            print(f"sidemesh up: {exc}", file=sys.stderr, flush=True)
            code = 1
        finally:
            stopping.cancel()
            if mesh.started:
                console.print("sidemesh up: stopping")
            report, bound = await mesh.stop(hurry)
    if not mesh.started:
        return code
    summary = report.line()
    if report.leftover or bound:
        code = 1
        if bound:
            summary += "; ports still bound: " + ", ".join(f"{port} ({name})" for name, port in bound)
    else:
        summary += "; no process left, every port free"
    console.print(f"sidemesh up: {summary}; state kept in {config.state_dir} (run again to resume)")
    return code


async def _demo(demo, console) -> bool:
    """The demo, which fails alone: the mesh keeps running when a component refuses it."""
    try:
        return await demo.run()
    except UpError as exc:
        console.event(f"demo: stopped: {exc}")
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = UpConfig(state_dir=args.state_dir, ports=parse_ports(args.ports), demo=args.demo,
                          exit_after_demo=args.exit_after_demo, board_interval=args.board_interval,
                          scrape_interval=args.scrape_interval)
    except ConfigError as exc:
        print(f"sidemesh up: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(config))
