"""The stats stream to the drift detector: ``StatsService.Report``, one long-lived
bidirectional gRPC stream (``drift/proto/stats.proto`` is the contract).

``submit`` turns one window of statistics into a ``StatsReport`` (split per input when it
would pass ``max_report_bytes``), numbers it and queues it serialized, so the queue's bound
is exact bytes. The queue is bounded by ``queue_bytes``: when a new report does not fit,
the oldest are dropped and counted, and the count travels in every later report
(``dropped_reports``). Reports are sent in order and stay queued until the detector
acknowledges them: an ack removes one (an ack with an error counts it as rejected, and
it is not sent again). When the stream breaks, the client reconnects with exponential
backoff and full jitter and sends every unacknowledged report again; the detector ignores
a (source, sequence) it has already applied.

Nothing here runs per request, and nothing raises into the sidecar: a detector that is
away costs queued bytes up to the bound and a counter, never a slower answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from dataclasses import dataclass

import grpc

from drift.proto import stats_pb2 as pb

from .instruments import StatsInstruments
from .reconnect import backoff_delay, raise_if_cancelled

__all__ = ["StatsClientConfig", "StatsClient", "METHOD", "MAX_REPORT_BYTES"]

METHOD = "/sidemesh.drift.v1.StatsService/Report"
MAX_REPORT_BYTES = 16 << 20  # larger windows are split per input
_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 300_000),  # notice a half-open connection within minutes
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_send_message_length", -1),
)


@dataclass(frozen=True, kw_only=True)
class StatsClientConfig:
    target: str  # host:port of the drift detector's stats stream
    source: str  # unique per sidecar process: node id plus a start nonce
    queue_bytes: int = 16 << 20
    max_report_bytes: int = MAX_REPORT_BYTES
    backoff_base_s: float = 0.25
    backoff_max_s: float = 10.0
    stop_grace_s: float = 2.0  # how long ``stop`` waits for acks of what is queued

    def __post_init__(self) -> None:
        if not self.target or not self.source:
            raise ValueError("target and source must not be empty")
        for name in ("queue_bytes", "max_report_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        for name in ("backoff_base_s", "backoff_max_s", "stop_grace_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a number of seconds >= 0, got {value!r}")


class StatsClient:
    """``start()`` on the running loop, ``submit(...)`` per window, ``await stop()`` at the end.
    The plain attributes are read by the sidecar's gauges."""

    def __init__(self, config: StatsClientConfig, instruments: StatsInstruments) -> None:
        self.config = config
        self._m = instruments
        self._queue: collections.OrderedDict[int, bytes] = collections.OrderedDict()  # sequence -> serialized report
        self.queue_bytes = 0
        self.sequence = 0  # the last one given out
        self.dropped = 0
        self.acks = 0  # acknowledgements received, errors included
        self.connected = False
        self.last_error: str | None = None
        self._more: asyncio.Event | None = None
        self._empty: asyncio.Event | None = None
        self._away: asyncio.Event | None = None  # set while waiting to reconnect
        self._task: asyncio.Task | None = None

    # --- the queue ---------------------------------------------------------------------

    def submit(self, inputs: list[pb.InputStats], start_unix: float, end_unix: float) -> None:
        """Queue one window's statistics as one report, or one per group of inputs that fits
        ``max_report_bytes``. Never blocks; drops the oldest reports when full."""
        for group in self._split(inputs):
            self.sequence += 1
            report = pb.StatsReport(source=self.config.source, sequence=self.sequence, start_unix=start_unix,
                                    end_unix=end_unix, inputs=group, dropped_reports=self.dropped)
            self._enqueue(self.sequence, report.SerializeToString())

    def _split(self, inputs: list[pb.InputStats]) -> list[list[pb.InputStats]]:
        limit = self.config.max_report_bytes - 1024  # room for the report's own fields
        groups: list[list[pb.InputStats]] = [[]]
        size = 0
        for item in inputs:
            n = item.ByteSize() + 8
            if groups[-1] and size + n > limit:
                groups.append([])
                size = 0
            groups[-1].append(item)
            size += n
        return groups

    def _enqueue(self, sequence: int, data: bytes) -> None:
        queue = self._queue
        if len(data) > self.config.queue_bytes:
            self._drop(1)
            return
        while queue and self.queue_bytes + len(data) > self.config.queue_bytes:
            _, old = queue.popitem(last=False)
            self.queue_bytes -= len(old)
            self._drop(1)
        queue[sequence] = data
        self.queue_bytes += len(data)
        if self._more is not None:
            self._empty.clear()
            self._more.set()

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._m.reports_dropped.inc((), n)

    def _ack(self, ack: pb.ReportAck) -> None:
        data = self._queue.pop(ack.sequence, None)
        if data is None:  # dropped meanwhile, or acknowledged twice
            return
        self.queue_bytes -= len(data)
        self.acks += 1
        if ack.error:
            self._m.reports_rejected.inc(())
            print(f"sidemesh sidecar: the drift detector refused statistics report {ack.sequence}: {ack.error}", flush=True)
        else:
            self._m.reports_acked.inc(())
        if not self._queue:
            self._empty.set()

    def pending(self) -> list[int]:
        """Sequences queued and not yet acknowledged, oldest first."""
        return list(self._queue)

    async def wait_empty(self) -> None:
        """Until every queued report is acknowledged (or dropped)."""
        await self._empty.wait()

    # --- the stream --------------------------------------------------------------------

    def start(self) -> None:
        self._more = asyncio.Event()
        self._empty = asyncio.Event()
        self._away = asyncio.Event()
        if self._queue:
            self._more.set()
        else:
            self._empty.set()
        self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        """Give queued reports up to ``stop_grace_s`` to be acknowledged, unless the detector
        is known to be away (the client is waiting to reconnect), then close."""
        if self._task is None:
            return
        if self._queue and not self._away.is_set() and self.config.stop_grace_s > 0:
            waits = [asyncio.ensure_future(self._empty.wait()), asyncio.ensure_future(self._away.wait())]
            try:
                await asyncio.wait(waits, timeout=self.config.stop_grace_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def run(self) -> None:
        """Keep a stream up until cancelled; never raises anything else."""
        attempt = 0
        while True:
            acks = self.acks
            started = time.monotonic()
            try:
                await self._session()
                self.last_error = "the drift detector ended the stream"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unexpected: keep the reports, say so, and retry like any failure
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                was_connected, self.connected = self.connected, False
            raise_if_cancelled()
            if self.acks != acks or time.monotonic() - started > self.config.backoff_max_s:
                attempt = 0
            if was_connected or attempt == 0:  # one line per outage, not one per retry
                print(f"sidemesh sidecar: stats stream to {self.config.target} {'lost' if was_connected else 'unavailable'} "
                      f"({self.last_error}); reconnecting, {len(self._queue)} reports kept", flush=True)
            delay = backoff_delay(attempt, self.config.backoff_base_s, self.config.backoff_max_s)
            attempt += 1
            self._away.set()
            try:
                await asyncio.sleep(delay)
            finally:
                self._away.clear()

    async def _session(self) -> None:
        async with grpc.aio.insecure_channel(self.config.target, options=_CHANNEL_OPTIONS) as channel:
            # Reports are queued serialized (their size is what the queue bounds): no request serializer.
            call = channel.stream_stream(METHOD, request_serializer=None, response_deserializer=pb.ReportAck.FromString)()
            writer = asyncio.ensure_future(self._write(call))
            reader = asyncio.ensure_future(self._read(call))
            try:
                await asyncio.wait((writer, reader), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (writer, reader):
                    task.cancel()
                results = await asyncio.gather(writer, reader, return_exceptions=True)
                call.cancel()
            for result in results:
                if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                    raise result

    async def _write(self, call) -> None:
        """Send every queued report in order, each once per stream; the ones queued before
        this stream began are the unacknowledged ones, sent again."""
        await call.wait_for_connection()
        self.connected = True
        print(f"sidemesh sidecar: stats stream to {self.config.target} is up", flush=True)
        sent = 0
        while True:
            self._more.clear()
            for sequence in [s for s in self._queue if s > sent]:
                data = self._queue.get(sequence)
                if data is None:  # acknowledged or dropped while an earlier write waited
                    continue
                await call.write(data)
                sent = sequence
                self._m.reports_sent.inc(())
            await self._more.wait()

    async def _read(self, call) -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                return
            self._ack(ack)
