"""A fixed-rate (open-loop) HTTP/1.1 load generator on uvloop: a request every 1/rate s
on whichever keep-alive connection is idle, whatever the answers do, with each request's
latency timed from its write to the end of its response."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np

__all__ = ["open_loop"]


# --- fixed-rate open loop ------------------------------------------------------------


def _parse(buf: bytearray) -> tuple[int, int] | None:
    """(status, bytes used) once ``buf`` holds a whole response, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:stop if stop >= 0 else end])
        return (status, end + 4 + length) if len(buf) >= end + 4 + length else None
    last = buf.find(b"\r\n0\r\n\r\n", end)  # chunked
    return (status, last + 7) if last >= 0 else None


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, done) -> None:
        self.done = done
        self.buf = bytearray()
        self.transport = None
        self.sent_at = 0.0
        self.busy = False
        self.measured = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, request: bytes, measured: bool) -> None:
        self.busy, self.measured = True, measured
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        parsed = _parse(self.buf)
        if parsed is not None:
            latency = time.perf_counter() - self.sent_at
            del self.buf[:parsed[1]]
            self.busy = False
            self.done(self, parsed[0], latency)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.done(self, 0, 0.0)


async def open_loop(port: int, request: bytes, rate: float, warmup: float, seconds: float, connections: int,
                    on_measure) -> dict:
    """Sends a request every 1/rate s on whichever connection is idle (a new one if none is),
    so a slow answer never delays the next request. ``on_measure()`` runs when warm-up ends."""
    loop = asyncio.get_running_loop()
    idle: deque[_Conn] = deque()
    latencies: list[float] = []
    late: list[float] = []
    state = {"outstanding": 0, "opened": 0}
    drained = asyncio.Event()

    def done(conn: _Conn, status: int, latency: float) -> None:
        state["outstanding"] -= 1
        if conn.measured and status == 200:
            latencies.append(latency)
        if conn.transport is not None:
            idle.append(conn)
        if state["outstanding"] == 0:
            drained.set()

    async def connect() -> _Conn:
        state["opened"] += 1
        return (await loop.create_connection(lambda: _Conn(done), "127.0.0.1", port))[1]

    for _ in range(connections):
        idle.append(await connect())
    n_warm, n_measured = int(rate * warmup), int(rate * seconds)
    start = time.perf_counter() + 0.01
    for i in range(n_warm + n_measured):
        if i == n_warm:
            on_measure()
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while idle and idle[0].transport is None:
            idle.popleft()
        conn = idle.popleft() if idle else await connect()
        if i >= n_warm:
            late.append(time.perf_counter() - due)
        drained.clear()
        state["outstanding"] += 1
        conn.send(request, i >= n_warm)
    await asyncio.wait_for(drained.wait(), 10.0)
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    if not latencies:
        raise RuntimeError(f"no request to port {port} was answered with 200")
    ms = np.array(latencies) * 1000
    return {"requests": n_measured, "errors": n_measured - len(latencies),  # any answer but 200, or none
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "connections": state["opened"], "late_p99_ms": float(np.percentile(late, 99)) * 1000}
