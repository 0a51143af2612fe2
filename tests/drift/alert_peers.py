"""Peers for alert delivery tests, run on the test's own event loop: an HTTP receiver that
answers from a script and records every request, and a real Alertmanager process.

Waiting is always on a condition with a time bound (``Hook.wait_for``, ``eventually``),
never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.control_plane.peers import free_port

__all__ = ["AlertmanagerProcess", "Hook", "Received", "eventually"]

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@dataclass(frozen=True)
class Received:
    at: float                 # time.monotonic() on arrival
    path: str
    headers: dict[str, str]
    body: bytes


# A script decides each answer: (request number from 0, the request) -> HTTP status.
Script = Callable[[int, Received], int | tuple[int, dict[str, str]]]


class Hook:
    """An aiohttp receiver on 127.0.0.1 recording every POST; ``script`` picks the status."""

    def __init__(self, script: Script | None = None, port: int = 0) -> None:
        self.script = script or (lambda n, r: 200)
        self.port = port
        self.requests: list[Received] = []
        self._changed = asyncio.Condition()

    async def start(self) -> Hook:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Hook:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(time.monotonic(), request.path, dict(request.headers), await request.read())
        n = len(self.requests)
        self.requests.append(received)
        answer = self.script(n, received)
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else f"status {status}")

    async def wait_for(self, predicate: Callable[[list[Received]], object], timeout: float = 10.0, what: str = ""):
        """Wait until ``predicate(requests)`` is truthy; return its value."""
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    while not (value := predicate(self.requests)):
                        await self._changed.wait()
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what or 'requests'}; got {len(self.requests)}") from None
        return value


async def eventually(predicate: Callable[[], object | Awaitable[object]], timeout: float = 10.0, what: str = ""):
    """Poll a condition on state the test cannot subscribe to (metrics, the outbox), every 20 ms."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'condition'}")
        await asyncio.sleep(0.02)


class AlertmanagerProcess:
    """Debian's Alertmanager with one webhook receiver (``send_resolved: true``), clustering
    off and 1 s grouping, so a notification leaves about a second after an alert arrives."""

    def __init__(self, workdir: Path, webhook_url: str, receiver: str = "sidemesh") -> None:
        self.workdir = workdir
        self.port = free_port()
        config = workdir / "alertmanager.yml"
        config.write_text(f"""\
route:
  receiver: {receiver}
  group_by: [alertname, model, version]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 24h
receivers:
  - name: {receiver}
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
""")
        self._log = open(workdir / "alertmanager.log", "wb")
        self.popen = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.workdir / "alertmanager.log").read_text(errors="replace")

    async def ready(self, timeout: float = 15.0) -> None:
        async with aiohttp.ClientSession() as session:
            async def up() -> bool:
                if self.popen.poll() is not None:
                    raise AssertionError(f"alertmanager exited ({self.popen.returncode}):\n{self.log()}")
                try:
                    async with session.get(self.url + "/-/ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False
            await eventually(up, timeout, "alertmanager to be ready")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
