"""Children in their own process groups: ready when their URL answers, a death while
starting reported with the log, stopped in reverse tiers, stubborn ones killed, and
nothing left in any group afterwards."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest

from sidemesh.up.errors import StartError
from sidemesh.up.processes import ChildSpec, Supervisor, group_alive, stop_leftovers
from tests.control_plane.peers import free_port
from tests.up.peers import processes_in_groups

# A tiny HTTP server that starts a grandchild (a sleeper) in its own process group first.
SERVER = """
import http.server, signal, subprocess, sys
port, stubborn, grandchild_stubborn = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1"
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if grandchild_stubborn else ""
subprocess.Popen([sys.executable, "-c", "import signal, time; " + ignore + "time.sleep(600)"])
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
print("serving on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Ok).serve_forever()
"""


def _server(name: str, tier: int = 0, stubborn: bool = False, grandchild_stubborn: bool = False) -> ChildSpec:
    port = free_port()
    return ChildSpec(name, (sys.executable, "-c", SERVER, str(port), str(int(stubborn)), str(int(grandchild_stubborn))),
                     f"http://127.0.0.1:{port}/ready", tier)


async def _run(tmp_path: Path, specs: list[ChildSpec], grace: float = 5.0):
    supervisor = Supervisor(tmp_path)
    async with aiohttp.ClientSession() as session:
        try:
            for tier in sorted({s.tier for s in specs}):
                await supervisor.start_tier([s for s in specs if s.tier == tier], session, timeout=30)
            groups = {c.name: c.pid for c in supervisor.children}
            assert all(group_alive(pgid) for pgid in groups.values())
            assert len(processes_in_groups(set(groups.values()))) == 2 * len(specs)  # each child and its grandchild
        finally:
            report = await supervisor.stop_all(grace)
    return report, groups


def test_children_stop_in_reverse_tiers_with_their_grandchildren(tmp_path: Path):
    report, groups = asyncio.run(_run(tmp_path, [_server("first", 0), _server("second", 1), _server("third", 1)]))
    assert [name for name, _ in report.stopped][0] in ("second", "third")
    assert report.stopped[-1][0] == "first"
    assert report.killed == [] and report.leftover == []
    assert processes_in_groups(set(groups.values())) == []
    assert "serving on" in (tmp_path / "first.log").read_text()  # output captured per child


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path):
    report, groups = asyncio.run(_run(tmp_path, [_server("polite"), _server("stubborn", stubborn=True)], grace=0.5))
    assert report.killed == ["stubborn"]
    assert dict(report.stopped)["polite"] == -15  # python's default SIGTERM handling
    assert processes_in_groups(set(groups.values())) == []


def test_a_grandchild_that_outlives_its_parent_is_killed_too(tmp_path: Path):
    report, groups = asyncio.run(_run(tmp_path, [_server("parent", grandchild_stubborn=True)]))
    assert report.killed == [] and report.leftover == []
    assert processes_in_groups(set(groups.values())) == []
    assert report.line() == "stopped 1 process"


def test_a_child_that_dies_while_starting_fails_the_start_with_its_log(tmp_path: Path):
    dying = ChildSpec("dying", (sys.executable, "-c", "print('cannot bind: address in use'); raise SystemExit(3)"),
                      f"http://127.0.0.1:{free_port()}/", 0)

    async def scenario():
        supervisor = Supervisor(tmp_path)
        async with aiohttp.ClientSession() as session:
            try:
                with pytest.raises(StartError) as caught:
                    await supervisor.start_tier([dying], session, timeout=30)
            finally:
                await supervisor.stop_all(1.0)
        return caught.value

    error = asyncio.run(scenario())
    assert error.name == "dying"
    assert f"dying exited with code 3 while starting (log: {tmp_path / 'dying.log'})" in str(error)
    assert "cannot bind: address in use" in str(error)


def test_a_child_that_never_answers_fails_the_start_after_the_timeout(tmp_path: Path):
    silent = ChildSpec("silent", (sys.executable, "-c", "import time; time.sleep(600)"), f"http://127.0.0.1:{free_port()}/", 0)

    async def scenario():
        supervisor = Supervisor(tmp_path)
        async with aiohttp.ClientSession() as session:
            try:
                with pytest.raises(StartError, match=r"silent was not ready after 0.5 s"):
                    await supervisor.start_tier([silent], session, timeout=0.5)
            finally:
                report = await supervisor.stop_all(1.0)
        return report

    assert asyncio.run(scenario()).stopped == [("silent", -15)]


@pytest.mark.parametrize("name, argv, url, error", [
    ("", ("x",), "http://h/", "child.name: expected letters"),
    ("a b", ("x",), "http://h/", "child.name: expected letters"),
    ("ok", (), "http://h/", "child ok: argv is empty"),
    ("ok", ("x",), "h:1", "child ok: ready_url: expected an http:// URL"),
])
def test_a_bad_child_spec_is_refused_naming_the_field(name, argv, url, error):
    with pytest.raises(ValueError, match=error):
        ChildSpec(name, argv, url, 0)


def test_children_a_killed_up_left_behind_are_stopped_and_a_reused_pid_is_left_alone(tmp_path: Path):
    async def scenario():
        supervisor = Supervisor(tmp_path)
        async with aiohttp.ClientSession() as session:
            try:
                await supervisor.start_tier([_server("orphan"), _server("bystander")], session, timeout=30)
                recorded = [c.describe() for c in supervisor.children]  # as up.json holds them
                recorded[1]["argv"] = ["something", "else"]  # its pid now runs another command
                found = await stop_leftovers(recorded, grace=5.0)
                alive = {c.name: group_alive(c.pid) for c in supervisor.children}
            finally:
                await supervisor.stop_all(1.0)
        return found, alive

    found, alive = asyncio.run(scenario())
    assert found == ["orphan"]
    assert alive == {"orphan": False, "bystander": True}
