"""The input-statistics tap: sampled request bodies become per-feature sketches, off the
request path.

The request path calls ``offer`` once per infer request this sidecar served locally with
a 200 for its own model. ``offer`` only decides (the route's ``stats_sample`` share,
capped by ``--stats-sample``; the CPU budget) and appends the body bytes to a pending list
bounded in count and bytes; whatever it refuses is counted by reason, never waited for.

A worker task on the event loop wakes every ``tick_s`` (sooner when much is pending),
decodes pending bodies with the model server's own codecs in bounded batches (yielding
between batches so a burst never stalls the loop for long), groups the arrays per input
(concatenating rows of the same trailing shape) and updates one ``InputSketch`` per input
with each group at once. It charges
its thread CPU time to a one-second window; while the window is over ``cpu_budget`` (a
share of one core), ``offer`` refuses with reason ``cpu_budget`` and the worker waits.

``take`` hands the accumulated sketches over as ``InputStats`` messages and starts afresh;
a reporter task does that every ``interval_s`` and gives them to ``sink`` (the stats
stream client), so the memory held here is the pending bytes plus one window of sketches.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from drift.proto import stats_pb2
from drift.sketch import InputSketch
from model_server import grpc_codec, rest_codec
from model_server.proto import grpc_service_pb2 as v2

from .instruments import StatsInstruments
from .router import Router

__all__ = ["TapConfig", "StatsTap", "Sink"]

_HEADER_LENGTH = rest_codec.HEADER_LENGTH.lower().encode()

# Receives one window's statistics: (inputs, start_unix, end_unix).
Sink = Callable[[list[stats_pb2.InputStats], float, float], None]


@dataclass(frozen=True)
class TapConfig:
    sample: float = 1.0  # share of eligible requests tapped at most (the route's share is capped by it)
    cpu_budget: float = 0.01  # share of one core the worker may spend, per second
    interval_s: float = 5.0  # how often a window of statistics goes to the sink
    max_pending: int = 1024  # bodies waiting to be decoded at most
    max_pending_bytes: int = 16 << 20
    batch: int = 32  # bodies decoded between two yields to the event loop at most
    batch_bytes: int = 1 << 20  # and body bytes (a larger body is decoded alone)
    tick_s: float = 0.05  # the worker's wake-up period when little is pending

    def __post_init__(self) -> None:
        if not 0 <= self.sample <= 1:
            raise ValueError(f"sample: expected a share between 0 and 1, got {self.sample!r}")
        if not 0 <= self.cpu_budget <= 1:
            raise ValueError(f"cpu_budget: expected a share of one core between 0 and 1, got {self.cpu_budget!r}")
        for name in ("interval_s", "tick_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, got {getattr(self, name)!r}")
        for name in ("max_pending", "max_pending_bytes", "batch", "batch_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")


class StatsTap:
    """``start()`` on the running loop, ``offer(...)`` per request, ``await stop()`` at the end
    (it decodes what is pending and hands a last window to the sink)."""

    def __init__(self, config: TapConfig, router: Router, instruments: StatsInstruments, sink: Sink | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.config = config
        self.model, self.version = router.model, router.version
        self._router = router
        self._m = self.instruments = instruments
        self._sink = sink
        self._rand = rand
        self._pending: deque[tuple[bytes, list | None]] = deque()
        self.pending_bytes = 0
        self._max_pending, self._max_bytes = config.max_pending, config.max_pending_bytes
        self._table = self._share = None
        self._set_share()
        self._wake_at = max(1, min(config.batch, config.max_pending // 2))
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        # The CPU budget: seconds spent in this one-second window and the one before.
        self.over_budget = config.cpu_budget <= 0
        self._window_start = time.monotonic()
        self._spent = self._previous = 0.0
        # One window of statistics.
        self._sketches: dict[str, InputSketch] = {}  # by input name
        self._start_unix = self._end_unix = 0.0
        self._mv = (self.model, self.version)
        self._skip = {r: self._mv + (r,) for r in ("sample", "cpu_budget", "queue_full", "too_large", "undecodable")}

    # --- the request path --------------------------------------------------------------

    def offer(self, body: bytes, headers: list | None) -> None:
        """One infer request served here with a 200. ``headers``: the REST request's (the
        binary extension's header length is read from them later), None for a gRPC
        ``ModelInferRequest``. O(1), never blocks, never raises."""
        if self._router.table is not self._table:
            self._set_share()
        if self._share < 1.0 and self._rand() >= self._share:
            self._m.skipped.inc(self._skip["sample"])
            return
        if self.over_budget:
            self._m.skipped.inc(self._skip["cpu_budget"])
            return
        size = len(body)
        pending = self._pending
        if len(pending) >= self._max_pending or self.pending_bytes + size > self._max_bytes:
            self._m.skipped.inc(self._skip["too_large" if size > self._max_bytes else "queue_full"])
            return
        pending.append((body, headers))
        self.pending_bytes += size
        if len(pending) >= self._wake_at and self._wake is not None:
            self._wake.set()

    def _set_share(self) -> None:
        """The share for the routing table in force: the route's ``stats_sample`` (the
        control plane's knob) capped by ``--stats-sample``; computed once per table."""
        table = self._table = self._router.table
        route = table.routes.get(self.model) if table is not None else None
        self._share = self.config.sample if route is None else min(route.stats_sample, self.config.sample)

    def pending(self) -> int:
        """Bodies waiting to be decoded."""
        return len(self._pending)

    # --- the worker --------------------------------------------------------------------

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._work()), asyncio.ensure_future(self._report())]

    async def stop(self) -> None:
        """Stop the tasks, decode what is pending and hand the last window to the sink."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.process()
        self.flush()

    async def _work(self) -> None:
        while True:
            self._wake.clear()
            if not self._pending or self.over_budget:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.tick_s):
                        await self._wake.wait()
            self._charge(0.0)  # rolls the budget window over while idle
            if self._pending and not self.over_budget:
                self.process(self.config.batch, self.config.batch_bytes)
                await asyncio.sleep(0)  # let requests run between batches

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)
            self.flush()

    def process(self, limit: int | None = None, limit_bytes: int | None = None) -> int:
        """Decode pending bodies into the sketches, up to ``limit`` bodies and ``limit_bytes``
        (at least one; everything when None); returns how many were taken. Undecodable
        bodies are counted, never raised."""
        started = time.thread_time()
        try:
            return self._process(limit, limit_bytes)
        except Exception as exc:  # a bug here must never stop the worker
            print(f"sidemesh sidecar: stats tap error: {type(exc).__name__}: {exc}", flush=True)
            return 0
        finally:
            self._charge(time.thread_time() - started)

    def _process(self, limit: int | None, limit_bytes: int | None) -> int:
        pending = self._pending
        n = len(pending) if limit is None else min(limit, len(pending))
        budget = limit_bytes if limit_bytes is not None else self.pending_bytes
        if n == 0:
            return 0
        groups: dict[tuple, list[np.ndarray]] = {}
        taken = decoded = 0
        while taken < n and (taken == 0 or len(pending[0][0]) <= budget):
            body, headers = pending.popleft()
            taken += 1
            budget -= len(body)
            self.pending_bytes -= len(body)
            inputs = self._decode(body, headers)
            if inputs is None:
                continue
            decoded += 1
            for item in inputs:
                data = item.data if item.data.ndim else item.data.reshape(1)
                groups.setdefault((item.name, item.datatype, data.shape[1:], data.dtype), []).append(data)
        if decoded:
            now = time.time()
            if not self._sketches:
                self._start_unix = now
            self._end_unix = now
        for (name, datatype, _, _), arrays in groups.items():
            sketch = self._sketches.get(name)
            if sketch is None:
                sketch = self._sketches[name] = InputSketch(datatype)
            elif sketch.datatype != datatype:
                # One datatype per input and window (the model server refuses any other
                # than the model's, so this only guards against another upstream).
                decoded -= len(arrays)
                continue
            sketch.update(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))
        if decoded < taken:
            self._m.skipped.inc(self._skip["undecodable"], taken - decoded)
        if decoded:
            self._m.sampled.inc(self._mv, decoded)
        return taken

    def _decode(self, body: bytes, headers: list | None):
        try:
            if headers is None:
                return grpc_codec.decode_request(v2.ModelInferRequest.FromString(body), self.model, self.version).inputs
            length = None
            for key, value in headers:
                if key == _HEADER_LENGTH:
                    length = value.decode("latin-1")
                    break
            return rest_codec.decode_request(self.model, self.version, body, length).inputs
        except Exception:  # InvalidInput, DecodeError, anything a hostile body provokes
            return None

    def _charge(self, seconds: float) -> None:
        """Add worker time to the budget window and re-decide whether ``offer`` may accept:
        the time spent in the last second (this window plus the part of the previous one
        that still falls inside it) against the budget."""
        if seconds:
            self._m.tap_seconds.inc((), seconds)
        now = time.monotonic()
        age = now - self._window_start
        if age >= 1.0:
            self._previous = self._spent if age < 2.0 else 0.0
            self._spent, self._window_start, age = 0.0, now, 0.0
        self._spent += seconds
        self.over_budget = self._spent + self._previous * (1.0 - age) >= self.config.cpu_budget

    # --- windows -----------------------------------------------------------------------

    def take(self) -> tuple[list[stats_pb2.InputStats], float, float]:
        """The window's statistics as ``InputStats`` (model, version, input), and its first and
        last unix time; the next window starts empty."""
        started = time.thread_time()
        sketches, self._sketches = self._sketches, {}
        inputs = [s.to_proto(self.model, self.version, name) for name, s in sketches.items()]
        self._charge(time.thread_time() - started)
        return inputs, self._start_unix, self._end_unix

    def flush(self) -> None:
        """Hand the window to the sink, when it holds anything."""
        if not self._sketches or self._sink is None:
            return
        try:
            self._sink(*self.take())
        except Exception as exc:  # the sink is the stats client: never let it stop the tap
            print(f"sidemesh sidecar: stats report error: {type(exc).__name__}: {exc}", flush=True)
