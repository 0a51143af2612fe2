"""Real peers for sidecar tests: the sidecar as a process, and a scriptable upstream.

``SidecarProcess`` runs ``sidemesh sidecar`` on free loopback ports and waits for its
"ready" line (an event, bounded in time). ``ScriptedUpstream`` is an aiohttp server in its
own thread whose answers a test scripts: a status for the next N requests, a delay, or a
dropped connection; it counts what it receives.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.control_plane.peers import free_port

__all__ = ["SidecarProcess", "ScriptedUpstream", "http_call", "scrape"]

INFER_BODY = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}).encode()


def http_call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
              timeout: float = 30.0) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def scrape(port: int) -> dict[tuple, float]:
    """Every sample on a /metrics page: (name, sorted label pairs) -> value."""
    _, _, body = http_call(port, "GET", "/metrics")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@dataclass
class SidecarProcess:
    model: str
    version: str
    upstream: str  # host:port of the local model server's REST
    upstream_grpc: str | None = None
    control_plane: str | None = None  # host:port of xDS
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    lines: list[str] = field(default_factory=list)

    def start(self, wait_ready: bool = True) -> "SidecarProcess":
        cmd = [sys.executable, "-m", "sidemesh", "sidecar", "--model", self.model, "--version", self.version,
               "--upstream", f"http://{self.upstream}", "--listen", f"127.0.0.1:{self.port}",
               "--admin", f"127.0.0.1:{self.admin_port}", *self.extra_args]
        if self.upstream_grpc:
            cmd += ["--upstream-grpc", self.upstream_grpc, "--grpc-listen", f"127.0.0.1:{self.grpc_port}"]
        if self.control_plane:
            cmd += ["--control-plane", self.control_plane]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pumped = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        self.wait_for(re.compile(r"REST on http://"))
        if wait_ready:
            self.wait_for(re.compile(r": ready: routing from"))
        return self

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)
        self._pumped.set()

    def wait_for(self, pattern: re.Pattern, timeout: float = 30.0) -> re.Match:
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"sidecar did not print {pattern.pattern!r}; output:\n{''.join(self.lines)}") from None
            if line is None:
                raise AssertionError(f"sidecar exited ({self.proc.wait()}); output:\n{''.join(self.lines)}")
            if match := pattern.search(line):
                return match

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30.0):
        return http_call(self.port, method, path, body, headers, timeout)

    def infer(self, model: str | None = None, headers: dict | None = None, body: bytes = INFER_BODY):
        return self.call("POST", f"/v2/models/{model or self.model}/infer", body, {"Content-Type": "application/json", **(headers or {})})

    def admin(self, path: str) -> tuple[int, dict, bytes]:
        return http_call(self.admin_port, "GET", path)

    def metrics(self) -> dict:
        return scrape(self.admin_port)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit()

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the process to end on its own (killing it after ``timeout``)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        code = self.proc.wait()
        self._pumped.wait(10)
        self.proc.stdout.close()
        return code

    def __enter__(self) -> "SidecarProcess":
        return self if hasattr(self, "proc") else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ScriptedUpstream:
    """An aiohttp server answering V2-looking JSON; ``script`` sets what comes next."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests = 0
        self.statuses: list[int] = []  # answered with these, in order, before answering 200
        self.delay_s = 0.0
        self.drop_next = 0  # close the connection without answering, this many times
        self.headers: list[dict] = []
        self.body_sizes: list[int] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.port = free_port()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("scripted upstream did not start")

    def script(self, statuses: list[int] | None = None, delay_s: float = 0.0, drop_next: int = 0) -> None:
        with self._lock:
            self.statuses = list(statuses or [])
            self.delay_s = delay_s
            self.drop_next = drop_next

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self.requests += 1
            self.body_sizes.append(len(body))
            self.headers.append(dict(request.headers))
            status = self.statuses.pop(0) if self.statuses else 200
            delay = self.delay_s
            drop = self.drop_next > 0
            if drop:
                self.drop_next -= 1
        if drop:
            request.transport.close()
            raise ConnectionResetError("scripted drop")
        if delay:
            await asyncio.sleep(delay)
        body = {"model_name": "m", "model_version": self.name,
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]}
        if status != 200:
            body = {"error": f"scripted {status} from {self.name}"}
        return web.json_response(body, status=status)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=256 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        async def stop():
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
