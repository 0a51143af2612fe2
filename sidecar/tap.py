"""The input-statistics tap: sampled request bodies become per-feature sketches, off the
request path.

The request path calls ``offer`` once per infer request this sidecar served locally with
a 200 for its own model. ``offer`` only decides (the route's ``stats_sample`` share,
capped by ``--stats-sample``; the CPU budget) and appends the body bytes to a pending list
bounded in count and bytes; whatever it refuses is counted by reason, never waited for.

The worker is a loop callback that ``offer`` schedules: a tick after the first body
arrives, at once when a full batch waits. Each run decodes one bounded batch (so a burst
never stalls the loop for long) with the lean decoders of ``tap_decode``. Decoded arrays
are staged until ``stage_rows`` rows are held, then folded into one ``InputSketch`` per
input at once. The worker pays its thread CPU time from a token bucket that refills at
``cpu_budget`` (a share of one core); while the bucket is empty, ``offer`` refuses with
reason ``cpu_budget`` and the worker waits.

``take`` hands the accumulated sketches over as ``InputStats`` messages and starts afresh;
a reporter task does that every ``interval_s`` (a window under ``min_report_values`` waits
up to ``hold_intervals``) and gives them to ``sink`` (the stats stream client), so the
memory held here is the pending bytes plus one window of sketches.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from drift.proto import stats_pb2
from drift.sketch import InputSketch
from model_server import rest_codec

from .instruments import StatsInstruments
from .router import Router
from .tap_decode import Batch

__all__ = ["TapConfig", "StatsTap", "Sink"]

_HEADER_LENGTH = rest_codec.HEADER_LENGTH.lower().encode()
_GRPC = 0  # in place of a header length: the body is a serialized ModelInferRequest

# Receives one window's statistics: (inputs, start_unix, end_unix).
Sink = Callable[[list[stats_pb2.InputStats], float, float], None]


@dataclass(frozen=True)
class TapConfig:
    sample: float = 1.0  # share of eligible requests tapped at most (the route's share is capped by it)
    cpu_budget: float = 0.004  # share of one core the worker may spend, per second (decode, sketches, reports)
    interval_s: float = 5.0  # how often a window of statistics goes to the sink
    min_report_values: int = 32_000  # a smaller window (e.g. 1,000 rows x 32 features) waits ...
    hold_intervals: int = 6  # ... for up to this many intervals before it is sent anyway
    max_pending: int = 1024  # bodies waiting to be decoded at most
    max_pending_bytes: int = 16 << 20
    batch: int = 32  # bodies decoded between two yields to the event loop at most
    batch_bytes: int = 1 << 20  # and body bytes (a larger body is decoded alone)
    tick_s: float = 0.05  # how long the worker waits for a batch to gather
    stage_rows: int = 256  # decoded rows held before a sketch update (take() folds in the rest)

    def __post_init__(self) -> None:
        if not 0 <= self.sample <= 1:
            raise ValueError(f"sample: expected a share between 0 and 1, got {self.sample!r}")
        if not 0 <= self.cpu_budget <= 1:
            raise ValueError(f"cpu_budget: expected a share of one core between 0 and 1, got {self.cpu_budget!r}")
        for name in ("interval_s", "tick_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number of seconds, got {getattr(self, name)!r}")
        for name in ("max_pending", "max_pending_bytes", "batch", "batch_bytes", "stage_rows", "min_report_values", "hold_intervals"):
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
        self._pending: deque[bytes] = deque()  # bodies waiting to be decoded
        self._lengths: deque = deque()  # and for each: _GRPC, or the JSON header length (None: all JSON)
        self.pending_bytes = 0
        self._max_pending, self._max_bytes = config.max_pending, config.max_pending_bytes
        self._table = self._share = None
        self._set_share()
        self._wake_at = max(1, min(config.batch, config.max_pending // 2))
        self._tick = config.tick_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.Handle | None = None  # the worker's next run, when one is due
        self._tasks: list[asyncio.Task] = []
        # The CPU budget: a token bucket of worker seconds.
        self.over_budget = config.cpu_budget <= 0
        self._tokens = config.cpu_budget  # seconds of worker time it may spend now
        self._refilled_at = time.monotonic()
        # One window of statistics.
        self._sketches: dict[str, InputSketch] = {}  # by input name
        self._staged: dict[tuple, list[np.ndarray]] = {}  # decoded, not yet in the sketches
        self._staged_rows = 0
        self._values = 0  # feature values in this window
        self._datatypes: dict[str, str] = {}  # by input name, for this window
        self._start_unix = self._end_unix = 0.0
        self._mv = (self.model, self.version)
        self._skip = {r: self._mv + (r,) for r in ("sample", "cpu_budget", "queue_full", "too_large", "undecodable")}

    # --- the request path --------------------------------------------------------------

    def offer(self, body: bytes, headers: list | None) -> None:
        """One infer request served here with a 200. ``headers``: the REST request's (for the
        binary extension's header length), None for a gRPC ``ModelInferRequest``. O(1) in
        the body, never blocks, never raises."""
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
        # Kept: the body and the binary extension's header length, both bytes. Not the headers
        # list nor a tuple: objects the garbage collector tracks, kept alive across its young
        # collections, would be promoted and scanned again and again (that cost the sidecar
        # more than the header scan here does).
        length = _GRPC
        if headers is not None:
            length = None
            for key, value in headers:
                if key == _HEADER_LENGTH:
                    length = value
                    break
        pending.append(body)
        self._lengths.append(length)
        self.pending_bytes += size
        n = len(pending)
        if self._loop is not None:
            if n == 1 and self._handle is None:
                # The first body: let a batch gather for at most one tick.
                self._handle = self._loop.call_later(self._tick, self._run)
            elif n == self._wake_at:
                if self._handle is not None:
                    self._handle.cancel()
                self._handle = self._loop.call_soon(self._run)

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
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.ensure_future(self._report())]

    async def stop(self) -> None:
        """Stop the worker, decode what is pending and hand the last window to the sink."""
        self._loop = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.process()
        self.flush()

    def _run(self) -> None:
        """The worker: one bounded batch per run, scheduled as a plain loop callback (no task,
        no timeout objects: its own cost per batch is a timer handle). Runs again at once
        while a full batch is waiting, after a tick while fewer are or while over budget."""
        self._handle = None
        self._charge(0.0)  # refills the budget
        if not self.over_budget:
            self.process(self.config.batch, self.config.batch_bytes)
        if self._loop is not None and self._handle is None and self._pending:
            now = len(self._pending) >= self._wake_at and not self.over_budget
            self._handle = self._loop.call_soon(self._run) if now else self._loop.call_later(self._tick, self._run)

    async def _report(self) -> None:
        """Send a window every interval, but let a quiet sidecar's window grow for up to
        ``hold_intervals``: the detector's cost is mostly per report, so fewer, larger reports
        from lightly loaded sidecars let one detector serve many more of them."""
        config, held = self.config, 0
        while True:
            await asyncio.sleep(config.interval_s)
            held += 1
            if self._values >= config.min_report_values or held >= config.hold_intervals:
                self.flush()
                held = 0

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
        batch = Batch()
        taken = 0
        lengths = self._lengths
        while taken < n and (taken == 0 or len(pending[0]) <= budget):
            body, length = pending.popleft(), lengths.popleft()
            taken += 1
            budget -= len(body)
            self.pending_bytes -= len(body)
            if length is _GRPC:
                batch.add_grpc(body)
            else:
                batch.add_rest(body, length)
        staged, datatypes = self._staged, self._datatypes
        refused = 0
        for name, datatype, array, bodies in batch.groups():
            if datatypes.setdefault(name, datatype) != datatype:
                # One datatype per input and window (the model server refuses any other
                # than the model's, so this only guards against another upstream).
                refused += bodies
                continue
            staged.setdefault((name, array.shape[1:], array.dtype), []).append(array)
            self._staged_rows += array.shape[0]
            self._values += array.size
        refused = min(taken, batch.undecodable + refused)
        decoded = taken - refused
        if decoded > 0:
            now = time.time()
            if not self._start_unix:
                self._start_unix = now
            self._end_unix = now
            self._m.sampled.inc(self._mv, decoded)
        if refused:
            self._m.skipped.inc(self._skip["undecodable"], refused)
        if self._staged_rows >= self.config.stage_rows:
            self._update_sketches()
        return taken

    def _update_sketches(self) -> None:
        """Fold the staged arrays into the sketches, one update per input: a sketch update
        has a fixed cost per feature, so fewer, larger updates cost less per row."""
        staged, self._staged, self._staged_rows = self._staged, {}, 0
        for (name, _, _), arrays in staged.items():
            sketch = self._sketches.get(name)
            if sketch is None:
                sketch = self._sketches[name] = InputSketch(self._datatypes[name])
            sketch.update(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))

    def _charge(self, seconds: float) -> None:
        """Spend worker time from a token bucket that refills at ``cpu_budget`` seconds per
        second, holding at most one second's worth, and re-decide whether ``offer`` may
        accept: over a long run the worker spends exactly its budget (a sliding window with
        a hard cut would overshoot while the last batch is decoded, then stay shut for most of
        the next second)."""
        if seconds:
            self._m.tap_seconds.inc((), seconds)
        now = time.monotonic()
        budget = self.config.cpu_budget
        self._tokens = min(budget, self._tokens + (now - self._refilled_at) * budget) - seconds
        self._refilled_at = now
        self.over_budget = self._tokens <= 0.0
        if self.over_budget and self._handle is None and self._loop is not None:
            # Whoever emptied the bucket (a batch, or building a report), the worker must come
            # back to refill it: offers are refused meanwhile and would never wake it.
            self._handle = self._loop.call_later(self._tick, self._run)

    # --- windows -----------------------------------------------------------------------

    def take(self) -> tuple[list[stats_pb2.InputStats], float, float]:
        """The window's statistics as ``InputStats`` (model, version, input), and its first and
        last unix time; the next window starts empty."""
        started = time.thread_time()
        self._update_sketches()
        sketches, self._sketches, self._datatypes, self._values = self._sketches, {}, {}, 0
        inputs = [s.to_proto(self.model, self.version, name) for name, s in sketches.items()]
        self._charge(time.thread_time() - started)
        window = inputs, self._start_unix, self._end_unix
        self._start_unix = self._end_unix = 0.0
        return window

    def flush(self) -> None:
        """Hand the window to the sink, when it holds anything."""
        if not (self._sketches or self._staged) or self._sink is None:
            return
        window = self.take()
        started = time.thread_time()  # the sink's serializing counts against the budget too
        try:
            self._sink(*window)
        except Exception as exc:  # the sink is the stats client: never let it stop the tap
            print(f"sidemesh sidecar: stats report error: {type(exc).__name__}: {exc}", flush=True)
        finally:
            self._charge(time.thread_time() - started)
