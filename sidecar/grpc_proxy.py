"""The gRPC request path: V2 ``inference.GRPCInferenceService`` calls proxied as bytes.

grpcio hands every call to one generic handler with no deserializer, so messages stay
bytes end to end. Routing needs the model name and version: they are fields 1 and 2 of
every model-scoped V2 request, and protobuf writes fields in number order, so a scan of
the first bytes finds them without decoding the message (the statistics tap decodes a
sampled ``ModelInfer`` later, off the path). The answer carries the
``x-sidemesh-version`` initial metadata. Failures map to gRPC codes with a message that
says why; metrics record the HTTP status equivalent (as gRPC-Gateway maps them) so one
error-ratio query covers both protocols.
"""

from __future__ import annotations

import time

import grpc

from .budget import RetryBudget, RetryGate
from .config import SidecarConfig
from .forward import DEFAULT_TIMEOUT_S
from .instruments import Instruments
from .mirror import Mirror, MirrorJob, ShadowAnswer
from .outlier import OutlierDetector
from .router import HOP_HEADER, SHADOW_HEADER, VERSION_HEADER, RouteRefused, Router
from .table import Endpoint

__all__ = ["GrpcProxy", "scan_model_fields", "with_version", "HTTP_EQUIVALENT"]

_SERVICE = "/inference.GRPCInferenceService/"
_INFER = _SERVICE + "ModelInfer"
_SERVER_SCOPED = {_SERVICE + "ServerLive", _SERVICE + "ServerReady", _SERVICE + "ServerMetadata"}
_DROP_METADATA = {"traceparent", HOP_HEADER.decode(), SHADOW_HEADER.decode()}

C = grpc.StatusCode
HTTP_EQUIVALENT = {
    C.OK: "200", C.CANCELLED: "499", C.UNKNOWN: "500", C.INVALID_ARGUMENT: "400", C.DEADLINE_EXCEEDED: "504",
    C.NOT_FOUND: "404", C.ALREADY_EXISTS: "409", C.PERMISSION_DENIED: "403", C.RESOURCE_EXHAUSTED: "429",
    C.FAILED_PRECONDITION: "400", C.ABORTED: "409", C.OUT_OF_RANGE: "400", C.UNIMPLEMENTED: "501",
    C.INTERNAL: "500", C.UNAVAILABLE: "503", C.DATA_LOSS: "500", C.UNAUTHENTICATED: "401",
}
_SERVER_ERRORS = frozenset(code for code, http in HTTP_EQUIVALENT.items() if int(http) >= 500)  # what load reports count as errors


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def scan_model_fields(message: bytes) -> tuple[str | None, str | None]:
    """Fields 1 (model name) and 2 (version) of a V2 request, read from the wire format."""
    name = version = None
    pos = 0
    try:
        while pos < len(message):
            tag, pos = _varint(message, pos)
            number, wire = tag >> 3, tag & 7
            if number > 2 and name is not None:
                break
            if wire == 2:
                length, pos = _varint(message, pos)
                if number in (1, 2):
                    value = message[pos:pos + length].decode("utf-8")
                    if number == 1:
                        name = value
                    else:
                        version = value
                pos += length
            elif wire == 0:
                _, pos = _varint(message, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                break
    except (ValueError, UnicodeDecodeError):
        return None, None
    return name, version or None


def with_version(message: bytes, version: bytes) -> bytes:
    """Set field 2 by appending it: for a scalar field the last value on the wire wins."""
    length, out = len(version), bytearray(b"\x12")
    while length >= 0x80:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return message + bytes(out) + version


class GrpcProxy:
    def __init__(self, config: SidecarConfig, router: Router, outliers: OutlierDetector, budget: RetryBudget,
                 mirror: Mirror, instruments: Instruments, in_flight, tracer=None, tap=None) -> None:
        self.config = config
        self.router = router
        self.outliers = outliers
        self.budget = budget
        self.mirror = mirror
        self.m = instruments
        self._total_in_flight = in_flight
        self.in_flight = 0
        self._channels: dict[tuple[str, int], grpc.aio.Channel] = {}
        self._server: grpc.aio.Server | None = None
        self._options = [("grpc.max_receive_message_length", config.max_body_bytes),
                         ("grpc.max_send_message_length", config.max_body_bytes)]
        self.tracer = tracer if tracer is not None and tracer.enabled else None
        self.tap = tap  # tap.StatsTap, with --drift
        mirror.grpc_sender = self._send_shadow

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = grpc.aio.server(options=self._options)
        self._server.add_generic_rpc_handlers((self,))
        bound = self._server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {host}:{port}")
        await self._server.start()
        return host, bound

    async def drain(self, timeout_s: float) -> bool:
        if self._server is not None:
            await self._server.stop(timeout_s)
        return True

    async def stop(self, grace_s: float = 0.0) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    # --- grpc.GenericRpcHandler --------------------------------------------------------

    def service(self, details):
        method = details.method

        async def call(request: bytes, context) -> bytes:
            return await self._call(method, request, context)

        return grpc.unary_unary_rpc_method_handler(call)

    def _channel(self, host: str, port: int) -> grpc.aio.Channel:
        channel = self._channels.get((host, port))
        if channel is None:
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            channel = self._channels[(host, port)] = grpc.aio.insecure_channel(target, options=self._options)
        return channel

    async def _call(self, method: str, request: bytes, context) -> bytes:
        received = time.perf_counter()
        router = self.router
        if self._total_in_flight() >= self.config.max_concurrent:
            self.m.refused("overload")
            await context.abort(C.UNAVAILABLE, f"the sidecar is at its limit of {self.config.max_concurrent} requests in flight; retry shortly")
        if router.table is None:
            self.m.refused("not_ready")
            await context.abort(C.UNAVAILABLE, "the sidecar has no routing configuration yet (waiting for the control plane)")
        metadata = [(k, v) for k, v in context.invocation_metadata() if not k.startswith(":")]
        model, path_version = (None, None) if method in _SERVER_SCOPED else scan_model_fields(request)
        label = router.label(model)

        def header(name: bytes):
            key = name.decode()
            for k, v in metadata:
                if k == key:
                    return v.encode() if isinstance(v, str) else v
            return None

        try:
            decision = router.decide(model, path_version, header)
        except RouteRefused as exc:
            self._record(label, router.version, C.NOT_FOUND if exc.status == 404 else C.INVALID_ARGUMENT, received)
            await context.abort(C.NOT_FOUND if exc.status == 404 else C.INVALID_ARGUMENT, str(exc))
        version = decision.version
        original = request
        if decision.local:
            if self.config.upstream_grpc is None:
                self._record(label, version, C.UNAVAILABLE, received, decision.entry if method == _INFER else None)
                await context.abort(C.UNAVAILABLE, "this sidecar has no local gRPC upstream (--upstream-grpc)")
            if model == router.model and path_version is None and method not in _SERVER_SCOPED:
                request = with_version(request, version.encode())
            targets = None
        else:
            if decision.cluster is None or not decision.cluster.endpoints:
                self._record(label, version, C.UNAVAILABLE, received, decision.entry if method == _INFER else None)
                await context.abort(C.UNAVAILABLE, f"version {version!r} of model {label!r} has no endpoint: no sidecar of that version is connected")
            targets = decision.cluster
            metadata += [(k.decode(), v.decode()) for k, v in decision.headers]
        span = client_span = None
        forwarded = metadata
        if self.tracer is not None:
            span = self.tracer.start_inbound([(k.encode(), v.encode()) for k, v in metadata if isinstance(v, str)],
                                             b"POST", method.encode(), model)
        if span is not None:
            client_span, traceparent = span.upstream(version, "local" if targets is None else version)
            forwarded = [(k, v) for k, v in metadata if k != "traceparent"] + [("traceparent", traceparent.decode())]
        self.in_flight += 1
        try:
            code, response, error, elapsed = await self._forward(method, request, forwarded, decision, label, targets)
        finally:
            self.in_flight -= 1
        if span is not None:
            status = int(HTTP_EQUIVALENT.get(code, "500"))
            client_span.end(status, error)
            span.end(status, version, error)
        await context.send_initial_metadata(((VERSION_HEADER.decode(), version),))
        self._record(label, version, code, received, decision.entry if method == _INFER else None)
        route = decision.route
        if route is not None and route.mirrors and method == _INFER:
            for shadow in router.mirrors(route):
                self.mirror.submit(MirrorJob(
                    label, version, shadow, router.table.clusters.get(shadow.cluster), route.compare, route.timeout_s,
                    "grpc", b"POST", method.encode(), metadata, original, 0 if code == C.OK else 1, [], response or b"", elapsed, span,
                ))
        if code != C.OK:
            await context.abort(code, error)
        if self.tap is not None and decision.local and method == _INFER and model == router.model:
            self.tap.offer(original, None)
        return response

    async def _forward(self, method: str, request: bytes, metadata: list, decision, label: str, cluster):
        route = decision.route
        timeout = route.timeout_s if route is not None else DEFAULT_TIMEOUT_S
        retry = route.retry if route is not None else None
        deadline = time.monotonic() + timeout
        endpoint: Endpoint | None = None
        gate = RetryGate(self.budget, retry.retries if retry is not None else 0, self._total_in_flight)
        where = "local" if cluster is None else "remote"
        labels = (label, decision.version)
        try:
            while True:
                if cluster is None:
                    host, port = self.config.upstream_grpc
                else:
                    endpoint = self.outliers.pick(cluster, avoid=endpoint)
                    if endpoint.grpc_port is None:
                        return C.UNAVAILABLE, None, f"the sidecar at {endpoint.host}:{endpoint.port} announced no gRPC port", 0.0
                    host, port = endpoint.host, endpoint.grpc_port
                started = time.perf_counter()
                call = self._channel(host, port).unary_unary(method)(request, metadata=metadata, timeout=max(deadline - time.monotonic(), 0.001))
                try:
                    response = await call
                except grpc.aio.AioRpcError as exc:
                    code, error, response = exc.code(), exc.details() or exc.code().name, None
                else:
                    code, error = C.OK, None
                elapsed = time.perf_counter() - started
                self.m.upstream_duration.observe(labels + (where,), elapsed)
                if endpoint is not None:
                    self.outliers.record(cluster, endpoint, failed=code in (C.UNAVAILABLE, C.INTERNAL, C.UNKNOWN))
                reason = self._retryable(code, retry)
                if reason is None or time.monotonic() >= deadline or not gate.allow():
                    if gate.refused:
                        self.m.retries_refused.inc(labels)
                    return code, response, error, elapsed
                self.m.retries.inc(labels + (reason,))
        finally:
            gate.close()

    @staticmethod
    def _retryable(code: grpc.StatusCode, retry) -> str | None:
        if retry is None or code == C.OK:
            return None
        on = retry.on
        if code == C.UNAVAILABLE:
            for condition in ("connect-failure", "reset", "refused-stream", "gateway-error", "5xx"):
                if condition in on:
                    return condition
        if code in (C.INTERNAL, C.UNKNOWN, C.DATA_LOSS) and "5xx" in on:
            return "5xx"
        if code == C.DEADLINE_EXCEEDED and ("5xx" in on or "gateway-error" in on):
            return "gateway-error"
        return None

    def _record(self, label: str, version: str, code: grpc.StatusCode, received: float, entry: str | None = None) -> None:
        seconds = time.perf_counter() - received
        self.m.answered(label, version, HTTP_EQUIVALENT.get(code, "500"), seconds)
        if entry is not None and (load := self.m.load) is not None:
            load.entry(entry, code in _SERVER_ERRORS or code not in HTTP_EQUIVALENT, seconds)

    async def _send_shadow(self, job: MirrorJob, endpoint: Endpoint, timeout: float, traceparent: bytes | None) -> ShadowAnswer:
        drop = _DROP_METADATA if traceparent is not None else _DROP_METADATA - {"traceparent"}
        metadata = [(k, v) for k, v in job.headers if k not in drop and k != VERSION_HEADER.decode()]
        metadata += [(HOP_HEADER.decode(), job.shadow.version), (SHADOW_HEADER.decode(), "1")]
        if traceparent is not None:
            metadata.append(("traceparent", traceparent.decode()))
        started = time.perf_counter()
        try:
            body = await self._channel(endpoint.host, endpoint.grpc_port).unary_unary(job.target.decode())(
                with_version(job.body, job.shadow.version.encode()), metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return ShadowAnswer(False, exc.code().value[0], [], b"", time.perf_counter() - started, exc.details())
        return ShadowAnswer(True, 0, [], body, time.perf_counter() - started)
