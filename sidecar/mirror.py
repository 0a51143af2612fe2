"""Shadow copies and answer comparison, entirely off the request path.

The request path only appends a finished exchange (request and primary answer) to a
bounded queue, after the primary answer is on its way to the client. A fixed number of
workers send the copies to the shadow version and compare the answers: agreement of the
predicted label, largest absolute and relative differences, latency delta and shadow
errors, labelled (model, primary version, shadow version), and the same outcomes on the
shadow's cluster in the load reports (``load_report``), which canary gates read. When the
queue is full (a slow or dead shadow) copies are dropped and counted; the primary never
waits for a shadow.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable

from .errors import CompareError, UpstreamError
from .http1 import HOP_BY_HOP
from .instruments import Instruments
from .outlier import OutlierDetector
from .router import HOP_HEADER, PIN_HEADER, SHADOW_HEADER
from .table import Cluster, Endpoint, MirrorTarget
from .upstream import UpstreamPool, encode_request

__all__ = ["MirrorConfig", "MirrorJob", "Mirror", "ShadowAnswer", "shadow_target"]

# An untraced copy keeps the client's traceparent (W3C lets a proxy pass it on); a traced
# one gets the mirror span's instead.
_SKIP = HOP_BY_HOP | {HOP_HEADER, PIN_HEADER, SHADOW_HEADER}
_SKIP_TRACED = _SKIP | {b"traceparent"}


@dataclass(frozen=True)
class MirrorConfig:
    workers: int = 16  # shadow calls in flight at most
    queue_size: int = 256  # exchanges waiting at most
    queue_bytes: int = 64 << 20  # request and answer bytes waiting at most
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("workers", "queue_size", "queue_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s: expected a positive number of seconds, got {self.timeout_s}")


def shadow_target(target: bytes, shadow_version: str) -> bytes:
    """A path that names the primary's version (``/v2/models/M/versions/V/infer``) names
    the shadow's in the copy."""
    marker = b"/versions/"
    at = target.find(marker)
    if at < 0 or not target.startswith(b"/v2/models/"):
        return target
    start = at + len(marker)
    end = min((i for i in (target.find(b"/", start), target.find(b"?", start)) if i >= 0), default=len(target))
    return target[:start] + shadow_version.encode() + target[end:]


class MirrorJob:
    """One finished exchange to replay against a shadow. ``kind`` is "rest" or "grpc"
    (``target`` is then the gRPC method path)."""

    __slots__ = ("model", "version", "shadow", "cluster", "compare", "timeout_s", "kind", "method", "target", "headers",
                 "body", "primary_status", "primary_headers", "primary_body", "primary_elapsed", "span", "size")

    def __init__(self, model: str, version: str, shadow: MirrorTarget, cluster: Cluster | None, compare: bool, timeout_s: float,
                 kind: str, method: bytes, target: bytes, headers: list, body: bytes,
                 primary_status: int, primary_headers: list, primary_body: bytes, primary_elapsed: float, span=None) -> None:
        self.model, self.version, self.shadow, self.cluster, self.compare = model, version, shadow, cluster, compare
        self.timeout_s, self.kind, self.method, self.target, self.headers, self.body = timeout_s, kind, method, target, headers, body
        self.primary_status, self.primary_headers, self.primary_body = primary_status, primary_headers, primary_body
        self.primary_elapsed, self.span = primary_elapsed, span
        self.size = len(body) + len(primary_body)


@dataclass(frozen=True, slots=True)
class ShadowAnswer:
    ok: bool
    status: int  # HTTP status, or the gRPC status code for gRPC
    headers: list
    body: bytes
    elapsed: float
    error: str | None = None


# Sends a gRPC job to one endpoint; provided by the gRPC proxy.
GrpcSender = Callable[[MirrorJob, Endpoint, float, bytes | None], Awaitable[ShadowAnswer]]


class Mirror:
    def __init__(self, config: MirrorConfig, pool: UpstreamPool, outliers: OutlierDetector, instruments: Instruments,
                 tracer=None) -> None:
        self.config = config
        self._pool = pool
        self._outliers = outliers
        self._m = instruments
        self._tracer = tracer
        self.grpc_sender: GrpcSender | None = None
        self._queue: deque[MirrorJob] = deque()
        self._bytes = 0
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self._compare = None  # the comparison module, imported on first use (numpy)
        self._compare_import: asyncio.Future | None = None
        self.submitted = 0
        self.completed = 0

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(self.config.workers)]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def submit(self, job: MirrorJob) -> None:
        """Called on the request path: O(1), never blocks, never raises."""
        labels = (job.model, job.version, job.shadow.version)
        if job.size > self.config.queue_bytes:
            self._m.mirror.inc(labels + ("dropped_too_large",))
            return
        if len(self._queue) >= self.config.queue_size or self._bytes + job.size > self.config.queue_bytes:
            self._m.mirror.inc(labels + ("dropped_queue_full",))
            return
        self._queue.append(job)
        self._bytes += job.size
        self.submitted += 1
        if self._wakeup is not None:
            self._idle.clear()
            self._wakeup.set()

    async def wait_idle(self) -> None:
        """Until every copy submitted so far has been replayed and compared."""
        await self._idle.wait()

    def pending(self) -> int:
        """Copies queued or being replayed and compared."""
        return self.submitted - self.completed

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            job = self._queue.popleft()
            self._bytes -= job.size
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must never stop the workers
                self._m.mirror.inc((job.model, job.version, job.shadow.version, "internal_error"))
                print(f"sidemesh sidecar: mirror worker error: {type(exc).__name__}: {exc}", flush=True)
            self.completed += 1
            if self.completed == self.submitted:
                self._idle.set()

    async def _run(self, job: MirrorJob) -> None:
        labels = (job.model, job.version, job.shadow.version)
        # No panic mode for copies: while every shadow endpoint is ejected, a copy counts as a
        # shadow error without a connection attempt (with a dead shadow, an attempt per copy
        # doubled the sidecar's CPU per request and raised the primary's p99; tests/faults).
        load = self._m.load
        endpoint = self._outliers.pick(job.cluster, panic=False) if job.cluster is not None else None
        if endpoint is None:
            self._m.mirror.inc(labels + ("shadow_error",))
            if load is not None:
                load.shadow_error(job.shadow.cluster)
            return
        if job.compare and self._compare_import is None:
            # numpy and the V2 messages take ~0.2 s to import: imported on the event loop when
            # the first shadow answer arrives, they stalled every primary request in flight.
            # A thread imports them while the first copy is out.
            self._compare_import = asyncio.get_running_loop().run_in_executor(None, importlib.import_module, f"{__package__}.compare")
        span = traceparent = None
        if job.span is not None:
            span, traceparent = job.span.mirror(job.shadow.version, f"{endpoint.host}:{endpoint.port}")
        answer = await self._send(job, endpoint, traceparent)
        self._outliers.record(job.cluster, endpoint, failed=not answer.ok and (answer.status >= 500 or answer.status == 0))
        if span is not None:
            span.end(answer.status if job.kind == "rest" else None, answer.error)
        if not answer.ok:
            self._m.mirror.inc(labels + ("shadow_error",))
            if load is not None:
                load.shadow_error(job.shadow.cluster)
            return
        if not self._primary_ok(job):
            self._m.mirror.inc(labels + ("primary_error",))
            return
        self._m.mirror.inc(labels + ("ok",))
        self._m.latency_delta.observe(labels, answer.elapsed - job.primary_elapsed)
        if load is not None:
            load.shadow_answer(job.shadow.cluster, answer.elapsed)
        if job.compare:
            if self._compare is None:
                self._compare = await self._compare_import
            self._record_comparison(job, answer, labels, load)

    @staticmethod
    def _primary_ok(job: MirrorJob) -> bool:
        return job.primary_status == (0 if job.kind == "grpc" else 200)

    async def _send(self, job: MirrorJob, endpoint: Endpoint, traceparent: bytes | None) -> ShadowAnswer:
        timeout = min(job.timeout_s, self.config.timeout_s)
        if job.kind == "grpc":
            if self.grpc_sender is None or endpoint.grpc_port is None:
                return ShadowAnswer(False, 0, [], b"", 0.0, "the shadow has no gRPC port")
            return await self.grpc_sender(job, endpoint, timeout, traceparent)
        extra = [(HOP_HEADER, job.shadow.version.encode()), (SHADOW_HEADER, b"1")]
        skip = _SKIP
        if traceparent is not None:
            extra.append((b"traceparent", traceparent))
            skip = _SKIP_TRACED
        data = encode_request(job.method, shadow_target(job.target, job.shadow.version), job.headers, extra, job.body, skip)
        started = time.perf_counter()
        try:
            response = await self._pool.request(endpoint.host, endpoint.port, data, timeout, job.cluster.connect_timeout_s)
        except UpstreamError as exc:
            return ShadowAnswer(False, 0, [], b"", time.perf_counter() - started, str(exc))
        ok = response.status == 200
        return ShadowAnswer(ok, response.status, response.headers, response.body, response.elapsed,
                            None if ok else f"shadow answered {response.status}")

    def _record_comparison(self, job: MirrorJob, answer: ShadowAnswer, labels: tuple, load) -> None:
        c = self._compare
        cluster = job.shadow.cluster
        try:
            if job.kind == "grpc":
                primary, shadow = c.decode_grpc(job.primary_body), c.decode_grpc(answer.body)
            else:
                primary, shadow = c.decode_rest(job.primary_headers, job.primary_body), c.decode_rest(answer.headers, answer.body)
            result = c.compare(primary, shadow)
        except CompareError:
            self._m.mismatches.inc(labels)
            if load is not None:
                load.shadow_mismatch(cluster)
            return
        if result.mismatch is not None:
            self._m.mismatches.inc(labels)
            if load is not None:
                load.shadow_mismatch(cluster)
        if result.rows:
            self._m.compared_rows.inc(labels, result.rows)
            self._m.agreed_rows.inc(labels, result.agreed_rows)
            if load is not None:
                load.shadow_rows(cluster, result.rows, result.agreed_rows)
        if not math.isnan(result.max_abs):
            self._m.max_abs.observe(labels, result.max_abs)
        if not math.isnan(result.max_rel):
            self._m.max_rel.observe(labels, result.max_rel)
