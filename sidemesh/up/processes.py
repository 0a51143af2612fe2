"""Children: each in its own process group, its output in a log file, started in tiers
and stopped in reverse.

A child gets its own session (``start_new_session``), so a Ctrl-C in the terminal reaches
only ``up``, which then stops the children in order: the sidecars first (they send their
last statistics to the detector), the control plane and detector after them. Stopping
signals the whole group (SIGTERM, then SIGKILL after a grace), waits for the child, and
checks that nothing is left in its group, so that no grandchild survives either.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from .errors import ConfigError, StartError

__all__ = ["ChildSpec", "Child", "StopReport", "Supervisor", "python_child", "log_tail", "group_alive", "stop_leftovers"]

_PROBE_EVERY_S = 0.1


@dataclass(frozen=True)
class ChildSpec:
    name: str  # also the log file's name
    argv: tuple[str, ...]
    ready_url: str  # answers 200 once the child serves
    tier: int  # started after every lower tier is ready; stopped before them

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"child.name: expected letters, digits, '-', '_' or '.', got {self.name!r}")
        if not self.argv:
            raise ConfigError(f"child {self.name}: argv is empty")
        if not self.ready_url.startswith("http://"):
            raise ConfigError(f"child {self.name}: ready_url: expected an http:// URL, got {self.ready_url!r}")


def python_child(name: str, command: str, args: list[str], ready_url: str, tier: int) -> ChildSpec:
    """``sidemesh <command> ...`` with this interpreter (the venv's, whatever the PATH says)."""
    return ChildSpec(name, (sys.executable, "-m", "sidemesh", command, *args), ready_url, tier)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError:
        return ""


def _live_members(pgid: int) -> bool:
    """Linux: whether /proc lists a member of the group that has not exited. An exited
    grandchild stays a zombie until init reaps it, which some container inits do late."""
    with os.scandir("/proc") as entries:
        pids = [e.name for e in entries if e.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # it ended while we looked
        state, _ppid, pgrp = stat[stat.rindex(b")") + 2:].split()[:3]
        if int(pgrp) == pgid and state != b"Z":
            return True
    return False


def group_alive(pgid: int) -> bool:
    """Whether a process that has not exited is left in the process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _live_members(pgid) if os.path.isdir("/proc/self") else True


@dataclass
class Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process
    log: Path
    started_at: float
    exited: asyncio.Task = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def describe(self) -> dict:
        return {"name": self.name, "pid": self.pid, "pgid": self.pid, "log": str(self.log),
                "argv": list(self.spec.argv), "running": self.returncode is None}


@dataclass
class StopReport:
    stopped: list[tuple[str, int]] = field(default_factory=list)  # (name, exit code)
    killed: list[str] = field(default_factory=list)  # needed SIGKILL
    leftover: list[str] = field(default_factory=list)  # a process still in its group afterwards

    def line(self) -> str:
        n = len(self.stopped)
        text = f"stopped {n} process{'es' if n != 1 else ''}"
        if self.killed:
            text += f" ({len(self.killed)} killed after the grace period: {', '.join(self.killed)})"
        if self.leftover:
            text += f"; STILL RUNNING: {', '.join(self.leftover)}"
        return text


class Supervisor:
    """Starts children and keeps them in start order; ``stop_all`` undoes ``start``."""

    def __init__(self, logs: Path, env: dict[str, str] | None = None) -> None:
        self.logs = logs
        self.env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.children: list[Child] = []

    async def start(self, spec: ChildSpec) -> Child:
        if any(c.name == spec.name for c in self.children):
            raise ConfigError(f"child {spec.name}: started twice")
        log = self.logs / f"{spec.name}.log"
        with open(log, "ab") as out:  # the child keeps its own descriptor; ours closes now
            out.write(f"--- sidemesh up: starting {spec.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"{' '.join(spec.argv)}\n".encode())
            out.flush()
            try:
                process = await asyncio.create_subprocess_exec(
                    *spec.argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True, env=self.env)
            except OSError as exc:
                raise StartError(f"cannot start {spec.name} ({spec.argv[0]}): {exc}", spec.name) from None
        child = Child(spec, process, log, time.monotonic(), asyncio.ensure_future(process.wait()))
        self.children.append(child)
        return child

    async def wait_ready(self, child: Child, session: aiohttp.ClientSession, timeout: float) -> None:
        """Until its ready URL answers 200; fails at once, with its log, if it exits first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await _answers(session, child.spec.ready_url):
                return
            done, _ = await asyncio.wait({child.exited}, timeout=_PROBE_EVERY_S)
            if done:
                raise StartError(f"{child.name} exited with code {child.returncode} while starting "
                                 f"(log: {child.log})", child.name, log_tail(child.log))
            if loop.time() > deadline:
                raise StartError(f"{child.name} was not ready after {timeout:g} s ({child.spec.ready_url}; "
                                 f"log: {child.log})", child.name, log_tail(child.log))

    async def start_tier(self, specs: list[ChildSpec], session: aiohttp.ClientSession, timeout: float) -> list[Child]:
        """Start these together and wait until every one is ready."""
        children = [await self.start(spec) for spec in specs]
        waits = [asyncio.ensure_future(self.wait_ready(c, session, timeout)) for c in children]
        try:
            await asyncio.gather(*waits)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return children

    def exited(self) -> list[Child]:
        return [c for c in self.children if c.returncode is not None]

    async def stop_all(self, grace: float, hurry: asyncio.Event | None = None) -> StopReport:
        """Stop tiers in reverse order, the children of one tier together."""
        report = StopReport()
        hurry = hurry or asyncio.Event()
        for tier in sorted({c.spec.tier for c in self.children}, reverse=True):
            group = [c for c in self.children if c.spec.tier == tier]
            await asyncio.gather(*(self._stop(c, grace, hurry, report) for c in reversed(group)))
        return report

    async def _stop(self, child: Child, grace: float, hurry: asyncio.Event, report: StopReport) -> None:
        if child.returncode is None:
            _signal_group(child.pid, signal.SIGTERM)
            hurried = asyncio.ensure_future(hurry.wait())
            await asyncio.wait({child.exited, hurried}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            hurried.cancel()
            if child.returncode is None:
                _signal_group(child.pid, signal.SIGKILL)
                report.killed.append(child.name)
        await child.exited
        if group_alive(child.pid):  # a grandchild that outlived its parent
            _signal_group(child.pid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while group_alive(child.pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # no event tells when a non-child process is gone
            if group_alive(child.pid):
                report.leftover.append(child.name)
        report.stopped.append((child.name, child.returncode))


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            await response.read()
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


def _same_process(pid: int, argv: list[str]) -> bool:
    """Whether ``pid`` still runs ``argv`` (and is not a new process that got the pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[:-1] == [a.encode() for a in argv]
    except OSError:
        return False


async def stop_leftovers(recorded: list[dict], grace: float) -> list[str]:
    """Stop the children a killed ``up`` left running (as its up.json recorded them); the
    names of those it found. Only a process still running the recorded command is touched."""
    found = []
    for child in recorded:
        try:
            pid, argv, name = int(child["pid"]), [str(a) for a in child["argv"]], str(child["name"])
        except (KeyError, TypeError, ValueError):
            continue
        if _same_process(pid, argv):
            found.append(name)
            _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in recorded:
        pgid = child.get("pgid")
        while isinstance(pgid, int) and child.get("name") in found and group_alive(pgid):
            if time.monotonic() > deadline:
                _signal_group(pgid, signal.SIGKILL)
            await asyncio.sleep(0.05)  # not our children: nothing to await but their absence
    return found
