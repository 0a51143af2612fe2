"""Real peers for drift tests: the detector as a process, a stats stream client, a webhook
receiver.

``DriftProcess`` runs ``sidemesh drift`` on free loopback ports and waits for its "ready"
line. ``StatsStream`` is a synchronous gRPC client of the stats stream that sends reports
and returns their acks. ``Receiver`` is an aiohttp server in its own thread that records
every POST (and can be told to fail), so a test can wait for an alert to arrive.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from aiohttp import web

from drift.proto import stats_pb2 as pb
from drift.sketch import InputSketch
from tests.control_plane.peers import free_port

__all__ = ["DriftProcess", "StatsStream", "Receiver", "report_of"]


def report_of(source: str, sequence: int, model: str, version: str, data: np.ndarray, input_name: str = "features",
              datatype: str = "FP32", dropped: int = 0) -> pb.StatsReport:
    """A report summarizing ``data`` [rows, features], as a sidecar would send it."""
    sketch = InputSketch.from_array(data, datatype)
    report = pb.StatsReport(source=source, sequence=sequence, start_unix=1.0, end_unix=2.0, dropped_reports=dropped)
    report.inputs.append(sketch.to_proto(model, version, input_name))
    return report


@dataclass
class DriftProcess:
    state: Path
    args: list = field(default_factory=list)
    port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)

    def start(self) -> "DriftProcess":
        argv = [sys.executable, "-m", "sidemesh", "drift", "--state", str(self.state), "--port", str(self.port),
                "--stats-port", str(self.stats_port), *map(str, self.args)]
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []
        for line in self.popen.stdout:
            self.lines.append(line)
            if ": ready;" in line:
                break
        else:
            raise AssertionError(f"drift detector exited ({self.popen.wait()}):\n{''.join(self.lines)}")
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: bytes | dict | None = None,
            content_type: str = "application/json") -> tuple[int, dict]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as response:
            return response.read().decode()

    def stop(self, kill: bool = False) -> int:
        if self.popen.poll() is None:
            if kill:
                self.popen.kill()
            else:
                self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        code = self.popen.wait()
        self.popen.stdout.close()
        return code


class StatsStream:
    """One bidirectional stats stream; ``send`` returns the ack of each report sent."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._out: queue.Queue = queue.Queue()
        call = self.channel.stream_stream("/sidemesh.drift.v1.StatsService/Report",
                                          request_serializer=lambda b: b, response_deserializer=pb.ReportAck.FromString)
        self._acks = call(iter(self._out.get, None))

    def send(self, *reports: pb.StatsReport | bytes) -> list[pb.ReportAck]:
        for report in reports:
            self._out.put(report if isinstance(report, bytes) else report.SerializeToString())
        return [next(self._acks) for _ in reports]

    def close(self) -> None:
        self._out.put(None)
        try:
            for _ in self._acks:
                pass
        except grpc.RpcError:
            pass
        self.channel.close()

    def __enter__(self) -> "StatsStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Receiver:
    """An aiohttp webhook receiver in a thread: records (headers, body) of every POST.

    ``fail_next(n, status)`` answers the next n requests with ``status``; ``get(timeout)``
    waits for the next delivery that was answered 200.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.received: queue.Queue = queue.Queue()
        self.attempts = 0
        self._fail: list[int] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def fail_next(self, n: int, status: int = 503) -> None:
        self._fail.extend([status] * n)

    def get(self, timeout: float = 30.0) -> tuple[dict, bytes]:
        return self.received.get(timeout=timeout)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if self._fail:
            return web.Response(status=self._fail.pop(0))
        self.received.put(({k.lower(): v for k, v in request.headers.items()}, body))
        return web.Response(status=200)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
