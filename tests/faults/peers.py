"""Peers the fault tests add to those of the other suites: a webhook receiver that can be
taken down and brought back on the same port, a SIGKILL that waits, a model server on
fixed ports (so one killed can come back where its sidecar looks for it), and a reader of
a sidecar's applied routing state."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.control_plane.peers import ControlPlaneProcess, free_port, wait_until
from tests.servers import ModelServerProcess
from tests.sidecar.peers import SidecarProcess

__all__ = ["ControlPlaneAsShipped", "Delivery", "SlowShadow", "SwitchableReceiver", "applied_state", "kill9", "model_server_on",
           "until"]


def until(predicate, timeout: float, what: str, every: float = 0.01):
    """Poll ``predicate`` every ``every`` seconds until it is truthy (its value is returned),
    or fail after ``timeout``. Finer than ``wait_until``'s default where a duration is measured."""
    return wait_until(predicate, timeout, what, every)


def kill9(popen: subprocess.Popen, timeout: float = 10.0) -> tuple[float, float]:
    """SIGKILL a process and wait for it to be gone: (signalled, gone), monotonic times."""
    signalled = time.monotonic()
    popen.kill()
    popen.wait(timeout)
    return signalled, time.monotonic()


def model_server_on(repository: Path, http_port: int, grpc_port: int) -> ModelServerProcess:
    """A model server on the given ports (the later ``--*-port`` flags win over the helper's 0)."""
    server = ModelServerProcess(repository, extra_args=["--http-port", str(http_port), "--grpc-port", str(grpc_port)])
    try:
        return server.__enter__()
    except BaseException:
        if hasattr(server, "proc"):
            server.stop()  # not left running when it never got ready
        raise


class ControlPlaneAsShipped(ControlPlaneProcess):
    """The control plane with its default endpoint grace (2 s; the other suites shorten it
    to 0.5 s): how long a restarted one keeps the endpoints registered before it is part
    of what the fault test checks."""

    def start(self) -> "ControlPlaneAsShipped":
        self._run(["--state", str(self.state), "--admin-port", str(self.admin_port), "--xds-port", str(self.xds_port)])
        return self


def applied_state(sidecar: SidecarProcess, model: str) -> int:
    """The routing state version of ``model``'s route in the sidecar's table in force (-1: none)."""
    table = json.loads(sidecar.admin("/config_dump")[2]).get("table") or {}
    route = (table.get("routes") or {}).get(model) or {}
    state = route.get("state_version")
    return -1 if state is None else state


@dataclass(frozen=True, slots=True)
class Delivery:
    at: float        # time.monotonic() on arrival
    headers: dict
    event: dict      # the parsed body


class SwitchableReceiver:
    """A webhook receiver on one fixed loopback port, in its own thread. ``down()`` closes
    the listening socket (connections are refused, as from a receiver that is not running);
    ``up()`` listens again on the same port. Every POST that arrives is stored and answered 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="switchable-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the webhook receiver did not start")
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._site: web.TCPSite | None = None
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.deliveries.append(Delivery(time.monotonic(), dict(request.headers), json.loads(body)))
        return web.Response(status=200)

    def _call(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def up(self) -> float:
        async def start() -> None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await self._site.start()
        self._call(start())
        return time.monotonic()

    def down(self) -> float:
        async def stop() -> None:
            if self._site is not None:
                await self._site.stop()  # no more connections accepted
                self._site = None
            for connection in self._runner.server.connections:
                connection.force_close()  # and none kept alive from before
        self._call(stop())
        return time.monotonic()

    def received(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def close(self) -> None:
        self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class SlowShadow:
    """A shadow model server that answers each request ``delay_s`` late (a V2 answer of one
    label), in its own thread. ``release()`` answers every request it is holding at once,
    so a test can empty the sidecar's mirror queue between phases without waiting."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.port = free_port()
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-shadow", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the slow shadow did not start")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.requests += 1
        released = self._released
        try:
            await asyncio.wait_for(released.wait(), self.delay_s)
        except TimeoutError:
            pass
        return web.json_response({"model_name": "tabular", "model_version": "shadow",
                                  "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}]})

    def release(self) -> None:
        """Answer every request held now; later ones are held ``delay_s`` again."""
        def swap() -> None:
            self._released.set()
            self._released = asyncio.Event()
        self._loop.call_soon_threadsafe(swap)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
