"""``sidemesh up`` as a user runs it: a subprocess on free loopback ports, read line by line.

``UpProcess`` waits for lines (events, bounded in time), reads up.json for the ports and
the children it started, and on leaving stops everything even when the test failed:
SIGINT first, as Ctrl-C would, then SIGKILL for ``up`` and every child's process group.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["UpProcess", "processes_in_groups", "bound_ports", "path_without_monitoring"]


def path_without_monitoring() -> str:
    """A PATH with this interpreter's directory only: no prometheus, no alertmanager."""
    return str(Path(sys.executable).parent)


def processes_in_groups(pgids: set[int]) -> list[tuple[int, int]]:
    """(pid, pgid) of every process on this machine in one of these process groups that has
    not exited (an exited grandchild is a zombie until init reaps it: nothing runs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[2]) in pgids and fields[0] != "Z":  # state, ppid, pgrp
            found.append((int(entry.name), int(fields[2])))
    return found


def bound_ports(ports: list[int]) -> list[int]:
    """Those a server cannot bind on 127.0.0.1 now. SO_REUSEADDR as every server here sets
    it: a listener still makes the bind fail, connections in TIME_WAIT do not."""
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


class UpProcess:
    def __init__(self, state_dir: Path, *args: str, path: str | None = None) -> None:
        self.state_dir = state_dir
        self.argv = [sys.executable, "-m", "sidemesh", "up", "--state-dir", str(state_dir), "--ports", "free",
                     "--board-interval", "1", *args]
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        if path is not None:
            self.env["PATH"] = path
        self.lines: list[str] = []
        self.doc: dict = {}

    def __enter__(self) -> "UpProcess":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()
        return self

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """The first line from now on that matches ``pattern``."""
        compiled = re.compile(pattern)
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"sidemesh up did not print {pattern!r} within {timeout:.0f} s; output:\n{self.output()}") from None
            if line is None:
                self._queue.put(None)  # stays at the end for the next caller
                raise AssertionError(f"sidemesh up exited ({self.proc.wait()}) before printing {pattern!r}; output:\n{self.output()}")
            if match := compiled.search(line):
                return match

    def ready(self, timeout: float = 90.0) -> dict:
        """Wait for the ready line; up.json as it is then (ports, children)."""
        self.wait_for(r"^sidemesh up: ready in ", timeout)
        self.doc = json.loads((self.state_dir / "up.json").read_text())
        return self.doc

    @property
    def plan(self) -> dict:
        return self.doc["plan"]

    @property
    def token(self) -> str:
        return re.search(r"export SIDEMESH_TOKEN=(\w+)", self.output()).group(1)

    def url(self, port_name: str) -> str:
        return f"http://127.0.0.1:{self.plan[port_name]}"

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sidemesh up still running after {timeout:.0f} s; output:\n{self.output()}") from None
        self._pumper.join(10)
        return code

    def interrupt(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """Ctrl-C (SIGINT), or a service manager's SIGTERM, to up alone (its children run in
        their own sessions, as they would when a terminal sends Ctrl-C to its foreground group)."""
        self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def __exit__(self, *exc) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            children = list(self.doc.get("children", []))
            try:  # still there only when up did not finish its stop
                children += json.loads((self.state_dir / "up.json").read_text())["children"]
            except (OSError, ValueError, KeyError):
                pass
            for child in children:  # whatever a failed stop left behind
                try:
                    os.killpg(child["pgid"], signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self._pumper.join(10)
            self.proc.stdout.close()
