"""The sidecar's load reports to the control plane over Envoy's Load Reporting Service
(``envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats``).

One stream, as Envoy keeps it: the first request carries the xDS node (so the server knows
which sidecar speaks); the server answers with a ``LoadStatsResponse`` naming the clusters it
wants (or ``send_all_clusters``) and the interval; from then on the sidecar sends one
``LoadStatsRequest`` per interval with a ``ClusterStats`` for each wanted cluster that had
traffic, ``load_report_interval`` set to the time the counts really cover. A later response
replaces the clusters and the interval and restarts the timer. A report with no traffic is
sent all the same: it tells the server the sidecar is there and saw nothing.

Counts are taken from the ``LoadRecorder`` only to be written; a write that fails puts them
back, so the next stream's first report carries them. When the stream drops the client
reconnects with the xDS client's jittered backoff; a server that answers UNIMPLEMENTED (a
control plane without LRS) gets one line and is asked again only after a long pause. Nothing
here runs per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass

import grpc

from sidemesh import load_metrics as lm

from . import load_report as row
from .errors import ConfigError
from .instruments import LoadReportInstruments
from .load_report import LoadRecorder, LoadSnapshot
from .proto.core_pb2 import Node
from .proto.lrs_pb2 import LoadStatsRequest, LoadStatsResponse
from .reconnect import backoff_delay, raise_if_cancelled

__all__ = ["LoadReportConfig", "LoadReporter", "build_request", "METHOD"]

METHOD = "/envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats"
_CHANNEL_OPTIONS = (("grpc.keepalive_time_ms", 300_000), ("grpc.keepalive_timeout_ms", 20_000))
_LATENCY_NAMES = lm.bucket_names(lm.LATENCY)
_SHADOW_LATENCY_NAMES = lm.bucket_names(lm.SHADOW_LATENCY)


def _say(message: str) -> None:
    print(f"sidemesh sidecar: {message}", flush=True)


@dataclass(frozen=True, kw_only=True)
class LoadReportConfig:
    target: str  # host:port of the LRS server (the control plane's xDS port)
    backoff_base_s: float = 0.25
    backoff_max_s: float = 1.0  # as the xDS client: back within about a second of a restart
    unimplemented_backoff_s: float = 60.0  # the server has no LRS: ask again rarely
    default_interval_s: float = 10.0  # when a response names no interval
    min_interval_s: float = 0.05  # a zero interval must not become a busy loop
    final_report_timeout_s: float = 2.0  # on shutdown, the longest wait for the last report

    def __post_init__(self) -> None:
        host, sep, port = self.target.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError("target", f"expected host:port with a port 1-65535, got {self.target!r}")
        for name in ("backoff_base_s", "backoff_max_s", "unimplemented_backoff_s", "default_interval_s", "min_interval_s",
                     "final_report_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(name, f"expected a positive number of seconds, got {value!r}")
        if self.backoff_max_s < self.backoff_base_s:
            raise ConfigError("backoff_max_s", f"expected at least backoff_base_s ({self.backoff_base_s}), got {self.backoff_max_s!r}")


def _metric(stats, name: str, count: int, value: float) -> None:
    stats.load_metric_stats.add(metric_name=name, num_requests_finished_with_metric=count, total_metric_value=value)


def _buckets(stats, names: tuple[str, ...], counts: list, start: int) -> None:
    """Non-empty latency buckets only: a missing bucket holds nothing."""
    for i in range(row.BUCKETS):
        count = counts[start + i]
        if count:
            _metric(stats, names[i], count, counts[start + row.BUCKETS + i])


def build_request(snapshot: LoadSnapshot) -> LoadStatsRequest:
    """One report: a ClusterStats per cluster in ``snapshot`` (see sidemesh/load_metrics.py)."""
    request = LoadStatsRequest()
    nanos = max(0, int((snapshot.until - snapshot.since) * 1e9))
    for name in snapshot.clusters():
        cluster = request.cluster_stats.add(cluster_name=name)
        cluster.load_report_interval.FromNanoseconds(nanos)
        stats = cluster.upstream_locality_stats.add()
        entry = snapshot.entries.get(name)
        if entry is not None:
            ok, errors = entry[row.ENTRY_OK], entry[row.ENTRY_ERRORS]
            stats.total_successful_requests, stats.total_error_requests, stats.total_issued_requests = ok, errors, ok + errors
            _buckets(stats, _LATENCY_NAMES, entry, row.ENTRY_BUCKETS)
        shadow = snapshot.shadows.get(name)
        if shadow is not None:
            for metric, index in ((lm.SHADOW_ANSWERS, row.SHADOW_ANSWERS), (lm.SHADOW_ERRORS, row.SHADOW_ERRORS),
                                  (lm.SHADOW_MISMATCHES, row.SHADOW_MISMATCHES)):
                if shadow[index]:  # a count: each copy adds 1
                    _metric(stats, metric, shadow[index], float(shadow[index]))
            compared = shadow[row.SHADOW_COMPARED]
            if compared:
                _metric(stats, lm.SHADOW_COMPARED_ROWS, compared, float(shadow[row.SHADOW_ROWS]))
                _metric(stats, lm.SHADOW_AGREED_ROWS, compared, float(shadow[row.SHADOW_AGREED]))
            _buckets(stats, _SHADOW_LATENCY_NAMES, shadow, row.SHADOW_BUCKETS)
    return request


class LoadReporter:
    """``start()``, then ``await stop()``: keeps an LRS stream up and reports what
    ``recorder`` gathered. The plain attributes are read by metrics and /config_dump."""

    def __init__(self, config: LoadReportConfig, node: Node, recorder: LoadRecorder, instruments: LoadReportInstruments) -> None:
        self.config = config
        self._node = node
        self._recorder = recorder
        self._m = instruments
        self.connected = False
        self.interval_s: float | None = None  # what the server asked for
        self.clusters: frozenset[str] | None = None  # None: all (send_all_clusters)
        self.reconnects_total = 0
        self.last_error: str | None = None
        self._changed = asyncio.Event()  # a new response arrived
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        """Send what was gathered since the last report when the stream is up (bounded by
        ``final_report_timeout_s``), then close."""
        if self._task is None:
            return
        self._stopping.set()
        if self.connected:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), self.config.final_report_timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._task = None

    async def run(self) -> None:
        """Keep a stream up until stopped or cancelled; never raises anything else."""
        attempt = 0
        quiet = False  # an UNIMPLEMENTED server was reported once: say nothing more
        while not self._stopping.is_set():
            responded = False
            delay = None
            try:
                responded = await self._session()
                self.last_error = "the server ended the stream"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
                # A refusal that races the first write comes out as INTERNAL ("Internal error
                # from Core": grpc.aio replaces the status): the quick retry then hears it.
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    delay = self.config.unimplemented_backoff_s
                    if not quiet:
                        _say(f"the control plane at {self.config.target} does not take load reports (UNIMPLEMENTED: no "
                             f"LRS service); canary gates will not see this sidecar's traffic. Asking again every "
                             f"{delay:g} s")
                    quiet = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unexpected: keep the counts, say so, retry like any failure
                self.last_error = f"{type(exc).__name__}: {exc}"
                _say(f"load reports to {self.config.target} failed: {self.last_error}")
            finally:
                was_connected, self.connected = self.connected, False
            raise_if_cancelled()
            if self._stopping.is_set():
                return
            if responded:
                attempt, quiet = 0, False
            if delay is None:
                if was_connected:  # one line per outage, not one per retry
                    _say(f"load report stream to {self.config.target} lost ({self.last_error}); reconnecting, counts kept")
                delay = backoff_delay(attempt, self.config.backoff_base_s, self.config.backoff_max_s)
                attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            self.reconnects_total += 1

    async def _session(self) -> bool:
        """One stream; True once the server has answered on it."""
        async with grpc.aio.insecure_channel(self.config.target, options=_CHANNEL_OPTIONS) as channel:
            call = channel.stream_stream(METHOD, request_serializer=LoadStatsRequest.SerializeToString,
                                         response_deserializer=LoadStatsResponse.FromString)()
            try:
                first = LoadStatsRequest()
                first.node.CopyFrom(self._node)  # the node goes with the first request only
                await call.write(first)
                response = await call.read()
                if response is grpc.aio.EOF:
                    return False
                self._apply(response)
                self.connected = True
                _say(f"load reports to {self.config.target} every {self.interval_s:g} s "
                     f"({'all clusters' if self.clusters is None else ', '.join(sorted(self.clusters)) or 'no clusters'})")
                reader = asyncio.ensure_future(self._read(call))
                try:
                    await self._report(call, reader)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
                return True
            except asyncio.InvalidStateError:
                # A write met a stream that had just ended: its status says why.
                raise grpc.aio.AioRpcError(await call.code(), grpc.aio.Metadata(), grpc.aio.Metadata(), await call.details()) from None
            finally:
                call.cancel()

    async def _read(self, call) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            self._apply(response)
            self._changed.set()

    def _apply(self, response: LoadStatsResponse) -> None:
        interval = self.config.default_interval_s
        if response.HasField("load_reporting_interval"):
            interval = max(response.load_reporting_interval.ToNanoseconds() / 1e9, self.config.min_interval_s)
        self.interval_s = interval
        self.clusters = None if response.send_all_clusters else frozenset(response.clusters)

    async def _report(self, call, reader: asyncio.Future) -> None:
        """One report per interval until the stream ends (raising its error) or the
        reporter stops (after a last report). A new response restarts the timer."""
        loop = asyncio.get_running_loop()
        self._changed.clear()
        changed = asyncio.ensure_future(self._changed.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        mark = loop.time()
        try:
            while True:
                remaining = mark + self.interval_s - loop.time()
                if remaining > 0:
                    done, _ = await asyncio.wait((reader, changed, stopping), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                    if reader in done:
                        reader.result()  # the stream's error, if it failed
                        return
                    if stopping in done:
                        await self._send(call)
                        await call.done_writing()
                        # The server ends its side once it has read everything: only then is
                        # closing the channel sure not to discard the last report.
                        with contextlib.suppress(Exception):
                            await reader
                        return
                    if changed in done:
                        self._changed.clear()
                        changed = asyncio.ensure_future(self._changed.wait())
                        mark = loop.time()
                    continue
                await self._send(call)
                mark = loop.time()
        finally:
            changed.cancel()
            stopping.cancel()

    async def _send(self, call) -> None:
        snapshot, dropped = self._recorder.take().only(self.clusters)
        if dropped:
            self._m.dropped.inc(("not_requested",), dropped)
        try:
            await call.write(build_request(snapshot))
        except BaseException:
            self._recorder.restore(snapshot)
            raise
        self._m.reports_sent.inc(())
