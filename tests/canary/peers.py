"""Real peers the canary tests add to the other suites': a model server stand-in that fails
or slows a candidate on purpose, a model that disagrees with the baseline on every row,
paced load, and a webhook receiver that keeps the raw bodies (to check signatures).

``FaultyModel`` sits between a candidate's real sidecar and a real model server: it
forwards every request and answers what the model server answered, ``delay_s`` late, and
answers a 500 (V2 error JSON) instead for an exact ``error_share`` of requests, spread
evenly (never ``--eject-after`` in a row) so the share the gates see is the share asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import itertools
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Self

import aiohttp
import numpy as np
import onnx
from aiohttp import web
from onnx import numpy_helper

from model_server.examples import tabular_data, tabular_model
from tests.control_plane.peers import free_port
from tests.faults.load import Answer, post
from tests.faults.peers import Delivery, SwitchableReceiver

__all__ = ["FaultyModel", "Traffic", "WebhookReceiver", "bodies", "disagreeing_model", "signature", "v2_tensors",
           "write_model"]

ROWS_PER_REQUEST = 4


def v2_tensors(rows: np.ndarray) -> dict:
    """A V2 JSON request body (as a dict) holding ``rows`` [n, 8] as the tabular model's input."""
    return {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}


def bodies(seed: int = 31, requests: int = 500, rows: int = ROWS_PER_REQUEST, shift: float = 0.0) -> list[bytes]:
    """``requests`` V2 bodies of ``rows`` rows each, drawn like the tabular model's training
    data (``shift`` added to every feature), so a detector holding v1's training data as the
    reference judges them clean."""
    x, _ = tabular_data(seed, requests * rows)
    x = x + np.float32(shift)
    return [json.dumps(v2_tensors(chunk)).encode() for chunk in np.split(x, requests)]


def disagreeing_model() -> onnx.ModelProto:
    """Tabular v1 with its output classes rotated (class c scores what c+1 did): the same
    inputs, outputs and shapes, and a different predicted label on every row."""
    model = tabular_model(1)
    for init in model.graph.initializer:
        if init.name in ("w2", "b2"):
            rotated = np.roll(numpy_helper.to_array(init), -1, axis=-1)
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(rotated), init.name))
    onnx.checker.check_model(model)
    return model


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Sidemesh-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class FaultyModel:
    """A forwarding stand-in for a model server, in its own thread and event loop."""

    def __init__(self, upstream: str, error_share: float = 0.0, delay_s: float = 0.0) -> None:
        if not 0 <= error_share < 0.8 or delay_s < 0:
            raise ValueError("FaultyModel: expected 0 <= error_share < 0.8 (never 5 errors in a row) and delay_s >= 0")
        self.upstream, self.error_share, self.delay_s = upstream, error_share, delay_s
        self.requests = 0  # infer requests received
        self.errors = 0  # of which answered 500 on purpose
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faulty-model", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the faulty model stand-in did not start")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _fails(self, n: int) -> bool:
        """Request ``n`` (from 0) fails when it crosses the next whole error: exact, evenly spread."""
        return int((n + 1) * self.error_share) > int(n * self.error_share)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        started = self._loop.time()
        infer = request.method == "POST" and request.path.endswith("/infer")
        n = self.requests  # one event loop: no lock needed
        self.requests += infer
        if infer and self._fails(n):
            self.errors += 1
            answer = web.json_response({"error": f"injected failure {self.errors} of the faulty candidate"}, status=500)
        else:
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
            async with self._session.request(request.method, f"http://{self.upstream}{request.path_qs}", data=body,
                                             headers=headers) as response:
                answer = web.Response(body=await response.read(), status=response.status,
                                      content_type=response.content_type)
        if self.delay_s:
            await asyncio.sleep(max(0.0, started + self.delay_s - self._loop.time()))
        return answer

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)

        async def start() -> None:
            self._session = aiohttp.ClientSession()
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class Traffic:
    """Paced V2 infer requests to one sidecar: ``rate`` per second in all, from ``threads``
    threads on keep-alive connections (a slow answer delays only its own thread), each body
    of ``bodies`` in turn, until ``stop()``, ``max_requests`` or ``max_seconds``. Every
    answer is kept as a ``tests.faults.load.Answer`` (status 0: no answer)."""

    def __init__(self, port: int, body_list: list[bytes], model: str = "tabular", rate: float = 100.0, threads: int = 8,
                 max_requests: int = 6000, max_seconds: float = 60.0, timeout_s: float = 10.0,
                 headers: dict | None = None) -> None:
        if rate <= 0 or threads < 1 or max_requests < 1 or max_seconds <= 0 or not body_list:
            raise ValueError("Traffic: expected rate > 0, threads >= 1, max_requests >= 1, max_seconds > 0 and bodies")
        self.port, self.path, self.rate, self.timeout_s = port, f"/v2/models/{model}/infer", rate, timeout_s
        self.bodies, self.max_requests, self.max_seconds = body_list, max_requests, max_seconds
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.answers: list[Answer] = []
        self._slots = itertools.count()  # request i is due at start + i / rate
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"traffic-{i}", daemon=True) for i in range(threads)]

    def start(self) -> Traffic:
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> list[Answer]:
        self._stop.set()
        for t in self._threads:
            if t.ident is not None:
                t.join(self.timeout_s + 5)
        return self.answers

    def done(self) -> bool:
        """Stopped, or its request or time bound reached."""
        return self._stop.is_set() or not any(t.is_alive() for t in self._threads)

    def counts(self) -> Counter:
        """Answers so far by (answering version, HTTP status); version "" when none was named."""
        with self._lock:
            return Counter((a.version, a.status) for a in self.answers)

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        """Wait until at least ``n`` answers are in (bounded)."""
        deadline = time.monotonic() + timeout
        while len(self.answers) < n:
            if time.monotonic() > deadline or self.done():
                raise AssertionError(f"traffic: {len(self.answers)} of {n} answers after {timeout:.0f} s")
            time.sleep(0.01)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            while not self._stop.is_set():
                slot = next(self._slots)
                due = self._started + slot / self.rate
                if slot >= self.max_requests or due - self._started >= self.max_seconds:
                    return
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                body = self.bodies[slot % len(self.bodies)]
                answer, conn = post(conn, self.port, self.path, body, self.headers, self.timeout_s)
                with self._lock:
                    self.answers.append(answer)
        finally:
            if conn is not None:
                conn.close()


class WebhookReceiver(SwitchableReceiver):
    """``SwitchableReceiver`` (``down()``/``up()`` on one port) that also keeps each raw body,
    so a test can check the HMAC signature over the exact bytes sent."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        super().__init__()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.deliveries.append(Delivery(time.monotonic(), {k.lower(): v for k, v in request.headers.items()},
                                            json.loads(body)))
            self.raw.append(body)
        return web.Response(status=200)

    def events(self, kind: str = "canary") -> list[dict]:
        """The bodies received so far whose ``kind`` is ``kind``, in arrival order."""
        return [d.event for d in self.received() if d.event.get("kind") == kind]

    def signed_with(self, secret: bytes) -> bool:
        """Every delivery so far carries the right ``X-Sidemesh-Signature``."""
        with self._lock:
            pairs = list(zip(self.deliveries, self.raw))
        return bool(pairs) and all(d.headers.get("x-sidemesh-signature") == signature(secret, raw) for d, raw in pairs)


def write_model(repo: Path, model: str, version: str, proto: onnx.ModelProto) -> None:
    path = repo / model / version / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
