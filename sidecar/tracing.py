"""OpenTelemetry tracing for the proxy: a SERVER span per sampled inbound request, a
CLIENT span for the upstream call and one for the mirror copy, W3C ``traceparent``
propagated.

Built for a hot path of ~50-100 µs a request: the sampling decision is made here, before
the SDK is touched, so a request that is not sampled costs one scan of its header pairs
and, without a ``traceparent``, one ``random()``. With tracing off (no exporter, no OTLP
endpoint) the SDK is never imported and ``start_inbound`` returns None at once.

How the proxy uses it:

* ``span = tracer.start_inbound(request.headers, method, target, model)``; None means the
  request is not traced: forward ``traceparent`` and ``tracestate`` unchanged (W3C lets a
  proxy that does not participate pass them on).
* Otherwise ``client, traceparent = span.upstream(version, "host:port")`` and forward the
  request with its ``traceparent`` replaced by the returned value (``tracestate`` as
  received); ``client.end(status, error)`` when the answer is in; the same with
  ``span.mirror(...)`` for the shadow copy; ``span.end(status, version)`` last. A mirror
  span may end after the inbound span did: spans are independent once started.
* ``tracer.shutdown()`` on exit flushes what is queued.
"""

from __future__ import annotations

import math
import random
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sidecar.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "TracingConfig", "Tracer", "InboundSpan", "ClientSpan", "parse_traceparent",
    "TRACEPARENT", "TRACESTATE", "INBOUND_SPAN", "UPSTREAM_SPAN", "MIRROR_SPAN",
]

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"

# Fixed span names: cheap, and easy to query; the request's details are attributes.
INBOUND_SPAN = "sidemesh.inbound"
UPSTREAM_SPAN = "sidemesh.upstream"
MIRROR_SPAN = "sidemesh.mirror"

# version-traceid-parentid-flags, lower-case hex only (W3C Trace Context, section 3.2).
_TRACEPARENT_RE = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parse_traceparent(value: bytes) -> tuple[int, int, int] | None:
    """``(trace_id, parent_span_id, flags)`` from a ``traceparent`` value, or None when it
    is invalid, which callers treat as absent. A version above 00 may append fields after
    a ``-``; only the first four are read, as the spec asks of older parsers."""
    value = value.strip(b" \t")
    match = _TRACEPARENT_RE.match(value)
    if match is None:
        return None
    version = match[1]
    if version == b"ff" or (len(value) != 55 and (version == b"00" or value[55:56] != b"-")):
        return None
    trace_id = int(match[2], 16)
    span_id = int(match[3], 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(match[4], 16)


@dataclass(frozen=True)
class TracingConfig:
    """``sample_ratio`` applies to requests that arrive without a valid ``traceparent``;
    those with one follow its sampled flag. ``model`` and ``version`` are the backend this
    sidecar fronts, recorded on the resource as ``sidemesh.sidecar.*`` (distinct from the
    spans' ``sidemesh.version``, the version that answered, because some backends merge
    resource and span attributes into one namespace)."""

    sample_ratio: float = 0.01
    otlp_endpoint: str | None = None  # OTLP/gRPC, e.g. http://127.0.0.1:4317
    service_name: str = "sidemesh-sidecar"
    model: str | None = None
    version: str | None = None

    def __post_init__(self) -> None:
        ratio = self.sample_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0.0 <= ratio <= 1.0:
            raise ConfigError("--trace-sample", f"must be a number from 0 to 1, got {ratio!r}")
        if self.otlp_endpoint is not None:
            _check_endpoint(self.otlp_endpoint)
        if not self.service_name:
            raise ConfigError("--trace-service-name", "must not be empty")


def _check_endpoint(endpoint: str) -> None:
    """Without a scheme the exporter misreads ``host:port``, and without a port gRPC would
    dial 443, so both are required."""
    example = "e.g. http://127.0.0.1:4317"
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("--otlp-endpoint", f"{endpoint!r} is not a URL ({exc}); {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("--otlp-endpoint", f"{endpoint!r} needs http:// or https:// and a host; {example}")
    if port is None:
        raise ConfigError("--otlp-endpoint", f"{endpoint!r} needs a port; {example}")


class _Otel:
    """The SDK pieces spans need, imported only once tracing is on."""

    __slots__ = ("tracer", "server", "client", "error", "in_context", "parent_context")

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.status import Status, StatusCode

        def error(description: str | None) -> Status:
            return Status(StatusCode.ERROR, description)

        def parent_context(trace_id: int, span_id: int, flags: int, states: list[str]) -> Any:
            state = trace.TraceState.from_header(states) if states else None
            parent = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags), trace_state=state)
            return trace.set_span_in_context(trace.NonRecordingSpan(parent))

        self.tracer = tracer
        self.server = trace.SpanKind.SERVER
        self.client = trace.SpanKind.CLIENT
        self.error = error
        self.in_context = trace.set_span_in_context
        self.parent_context = parent_context


class Tracer:
    """Owns an SDK ``TracerProvider`` (never the global one). An injected ``exporter``
    (tests) gets a ``SimpleSpanProcessor`` so spans are exported as they end; the OTLP
    exporter a ``BatchSpanProcessor`` so export runs on its own thread, off the request
    path. An injected exporter wins over ``otlp_endpoint``."""

    def __init__(self, config: TracingConfig, exporter: SpanExporter | None = None) -> None:
        self.config = config
        self._ratio = config.sample_ratio
        self._random = random.random
        self._otel: _Otel | None = None
        self._provider: Any = None
        self._exporter: Any = None
        if exporter is None and config.otlp_endpoint is None:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint)
            processor: Any = BatchSpanProcessor(exporter)
        else:
            processor = SimpleSpanProcessor(exporter)
        attributes = {"service.name": config.service_name}
        if config.model is not None:
            attributes["sidemesh.sidecar.model"] = config.model
        if config.version is not None:
            attributes["sidemesh.sidecar.version"] = config.version
        # ALWAYS_ON: start_inbound has already decided; the SDK need not decide again.
        # No atexit hook: shutdown() is called on exit and bounds how long it may take.
        provider = TracerProvider(resource=Resource.create(attributes), sampler=ALWAYS_ON, shutdown_on_exit=False)
        provider.add_span_processor(processor)
        self._provider = provider
        self._exporter = exporter
        self._otel = _Otel(provider.get_tracer("sidemesh.sidecar"))

    @property
    def enabled(self) -> bool:
        return self._otel is not None

    def start_inbound(self, headers: list[tuple[bytes, bytes]], method: bytes, target: bytes, model: str | None) -> InboundSpan | None:
        """The SERVER span for a request, or None when it is not sampled. A valid incoming
        ``traceparent`` decides (parent-based); otherwise ``sample_ratio`` does. Two
        ``traceparent`` headers make the value invalid, as a combined header would be."""
        otel = self._otel
        if otel is None:
            return None
        value = None
        count = 0
        for name, header in headers:
            if name == b"traceparent":
                value = header
                count += 1
        parent = parse_traceparent(value) if count == 1 else None
        if parent is not None:
            if not parent[2] & 1:
                return None
            states = [header.decode("latin-1") for name, header in headers if name == b"tracestate"]
            context = otel.parent_context(parent[0], parent[1], parent[2], states)
        elif self._random() < self._ratio:
            context = None
        else:
            return None
        method_name = method.decode("latin-1")
        attributes: dict[str, Any] = {
            "http.request.method": method_name,
            "url.path": target.partition(b"?")[0].decode("latin-1"),
        }
        if model is not None:
            attributes["sidemesh.model"] = model
        span = otel.tracer.start_span(INBOUND_SPAN, context=context, kind=otel.server, attributes=attributes)
        return InboundSpan(otel, span, method_name, model)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush queued spans and stop. The exporter retries an unreachable collector for
        up to its timeout per batch, so the flush runs on a helper thread and, past
        ``timeout_s``, the exporter is shut down, which aborts its retries (and drops
        what was left)."""
        provider, self._provider, self._otel = self._provider, None, None
        if provider is None:
            return
        worker = threading.Thread(target=provider.shutdown, name="sidemesh-trace-shutdown", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            self._exporter.shutdown()
            worker.join(1.0)  # the aborted retry returns at once; let the flush finish


class InboundSpan:
    """A sampled request's SERVER span; its CLIENT children carry the trace onward."""

    __slots__ = ("_otel", "_span", "_context", "_method", "_model")

    def __init__(self, otel: _Otel, span: Any, method: str, model: str | None) -> None:
        self._otel = otel
        self._span = span
        self._context: Any = None
        self._method = method
        self._model = model

    @property
    def span(self) -> Any:
        """The SDK span, for its context (trace id in logs) or extra attributes."""
        return self._span

    def upstream(self, version: str, address: str) -> tuple[ClientSpan, bytes]:
        """The CLIENT span for the call to ``version`` at ``address`` (``host:port``) and
        the ``traceparent`` value to forward with it."""
        return self._client(UPSTREAM_SPAN, "sidemesh.version", version, address)

    def mirror(self, shadow_version: str, address: str) -> tuple[ClientSpan, bytes]:
        """As ``upstream``, for the shadow copy; it may end after this span has ended."""
        return self._client(MIRROR_SPAN, "sidemesh.shadow_version", shadow_version, address)

    def _client(self, name: str, key: str, version: str, address: str) -> tuple[ClientSpan, bytes]:
        otel = self._otel
        if self._context is None:
            self._context = otel.in_context(self._span)
        attributes: dict[str, Any] = {"http.request.method": self._method, key: version}
        if self._model is not None:
            attributes["sidemesh.model"] = self._model
        host, colon, port = address.rpartition(":")
        if colon and port.isdigit():
            attributes["server.address"] = host.strip("[]")
            attributes["server.port"] = int(port)
        else:
            attributes["server.address"] = address
        span = otel.tracer.start_span(name, context=self._context, kind=otel.client, attributes=attributes)
        context = span.get_span_context()
        traceparent = b"00-%032x-%016x-%02x" % (context.trace_id, context.span_id, context.trace_flags)
        return ClientSpan(otel, span), traceparent

    def end(self, status_code: int | None, version_answered: str | None, error: str | None = None) -> None:
        """``error``, or a 5xx answer, marks the span ERROR (a 4xx is the caller's fault,
        per the HTTP conventions for server spans)."""
        _end(self._otel, self._span, status_code, error, 500, version_answered)


class ClientSpan:
    """An upstream or mirror call's CLIENT span."""

    __slots__ = ("_otel", "_span")

    def __init__(self, otel: _Otel, span: Any) -> None:
        self._otel = otel
        self._span = span

    @property
    def span(self) -> Any:
        return self._span

    def end(self, status_code: int | None = None, error: str | None = None) -> None:
        """``error`` (why the call failed; a short kind such as ``timeout`` also becomes
        ``error.type``), or a status of 400 and above, marks the span ERROR."""
        _end(self._otel, self._span, status_code, error, 400)


_MAX_ERROR_TYPE = 64
_MAX_DESCRIPTION = 512


def _end(otel: _Otel, span: Any, status_code: int | None, error: str | None, error_from: int, version: str | None = None) -> None:
    attributes: dict[str, Any] = {}  # set at once: each set_attribute takes the span's lock
    if status_code is not None:
        attributes["http.response.status_code"] = status_code
    if version is not None:
        attributes["sidemesh.version"] = version
    failed_status = status_code is not None and status_code >= error_from
    if error is not None or failed_status:
        # error.type must stay low-cardinality: the status code, a short kind, or _OTHER
        # when the caller passed free text (e.g. an error body); the text itself, capped,
        # goes to the status description.
        if failed_status:
            attributes["error.type"] = str(status_code)
        else:
            attributes["error.type"] = error if len(error) <= _MAX_ERROR_TYPE else "_OTHER"
        span.set_status(otel.error(None if error is None else error[:_MAX_DESCRIPTION]))
    if attributes:
        span.set_attributes(attributes)
    span.end()
