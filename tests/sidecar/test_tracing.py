"""Tracing: sampling decisions, span links and kinds, W3C traceparent in and out, and a
real OTLP/gRPC export to an in-process collector."""

from __future__ import annotations

import math
import queue
import socket
import subprocess
import sys
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sidecar.errors import ConfigError
from sidecar.tracing import (
    INBOUND_SPAN, MIRROR_SPAN, UPSTREAM_SPAN, Tracer, TracingConfig, parse_traceparent,
)

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
SAMPLED = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NOT_SAMPLED = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
HEADERS = [(b"host", b"sidecar"), (b"content-type", b"application/json")]


def make_tracer(ratio: float) -> tuple[Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracer(TracingConfig(sample_ratio=ratio, model="iris", version="v1"), exporter), exporter


def spans_by_name(exporter: InMemorySpanExporter) -> dict:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_sampled_request_records_linked_spans():
    tracer, exporter = make_tracer(1.0)
    inbound = tracer.start_inbound(HEADERS, b"POST", b"/v2/models/iris/infer?x=1", "iris")
    assert inbound is not None
    upstream, upstream_tp = inbound.upstream("v1", "10.0.0.7:8000")
    mirror, mirror_tp = inbound.mirror("v2", "[::1]:8001")
    upstream.end(200)
    inbound.end(200, "v1")
    mirror.end(200)  # the mirror finishes after the request was answered
    spans = spans_by_name(exporter)
    assert set(spans) == {INBOUND_SPAN, UPSTREAM_SPAN, MIRROR_SPAN}
    server, client, shadow = spans[INBOUND_SPAN], spans[UPSTREAM_SPAN], spans[MIRROR_SPAN]

    assert server.kind is SpanKind.SERVER and server.parent is None
    assert client.kind is SpanKind.CLIENT and shadow.kind is SpanKind.CLIENT
    assert client.parent.span_id == server.context.span_id
    assert shadow.parent.span_id == server.context.span_id
    assert {s.context.trace_id for s in spans.values()} == {server.context.trace_id}

    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["url.path"] == "/v2/models/iris/infer"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["sidemesh.model"] == "iris"
    assert server.attributes["sidemesh.version"] == "v1"
    assert client.attributes["server.address"] == "10.0.0.7" and client.attributes["server.port"] == 8000
    assert client.attributes["sidemesh.version"] == "v1"
    assert shadow.attributes["server.address"] == "::1" and shadow.attributes["server.port"] == 8001
    assert shadow.attributes["sidemesh.shadow_version"] == "v2"
    assert server.resource.attributes["service.name"] == "sidemesh-sidecar"
    assert server.resource.attributes["sidemesh.sidecar.model"] == "iris"
    assert all(s.status.status_code is StatusCode.UNSET for s in spans.values())

    for span, value in ((client, upstream_tp), (shadow, mirror_tp)):
        parsed = parse_traceparent(value)
        assert parsed is not None and value.startswith(b"00-")
        assert parsed[:2] == (span.context.trace_id, span.context.span_id)
        assert parsed[2] & 1


def test_sampled_traceparent_continues_the_trace():
    tracer, exporter = make_tracer(0.0)  # the incoming flag decides, not the ratio
    headers = HEADERS + [(b"traceparent", SAMPLED), (b"tracestate", b"vendor=abc")]
    inbound = tracer.start_inbound(headers, b"POST", b"/v2/models/iris/infer", "iris")
    assert inbound is not None
    client, value = inbound.upstream("v1", "127.0.0.1:8000")
    client.end(200)
    inbound.end(200, "v1")
    spans = spans_by_name(exporter)
    server = spans[INBOUND_SPAN]
    assert server.context.trace_id == TRACE_ID
    assert server.parent.span_id == SPAN_ID and server.parent.is_remote
    assert server.context.trace_state.get("vendor") == "abc"
    assert value.startswith(b"00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert parse_traceparent(value)[1] == spans[UPSTREAM_SPAN].context.span_id


def test_unsampled_traceparent_is_not_traced():
    tracer, exporter = make_tracer(1.0)
    assert tracer.start_inbound(HEADERS + [(b"traceparent", NOT_SAMPLED)], b"POST", b"/", "iris") is None
    assert exporter.get_finished_spans() == ()


def test_ratio_zero_without_traceparent_is_not_traced():
    tracer, exporter = make_tracer(0.0)
    assert all(tracer.start_inbound(HEADERS, b"POST", b"/", None) is None for _ in range(1000))
    assert exporter.get_finished_spans() == ()


def test_ratio_samples_within_five_sigma():
    n, p = 4000, 0.25
    tracer, exporter = make_tracer(p)
    for _ in range(n):
        span = tracer.start_inbound(HEADERS, b"POST", b"/", "iris")
        if span is not None:
            span.end(200, "v1")
    sampled = len(exporter.get_finished_spans())
    assert abs(sampled - n * p) <= 5 * math.sqrt(n * p * (1 - p))


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
MALFORMED = [
    b"",
    b"garbage",
    f"00-{TRACE}-{PARENT}".encode(),  # no flags
    f"00-{TRACE.upper()}-{PARENT}-01".encode(),  # upper-case hex
    f"00-{'0' * 32}-{PARENT}-01".encode(),  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero parent id
    f"ff-{TRACE}-{PARENT}-01".encode(),  # forbidden version
    f"00-{TRACE}-{PARENT}-01-extra".encode(),  # version 00 has exactly four fields
    f"01-{TRACE}-{PARENT}-01extra".encode(),  # a later version's extra fields follow a '-'
    f"00_{TRACE}_{PARENT}_01".encode(),
    f"00-{TRACE[:-1]}g-{PARENT}-01".encode(),
    f"00-{TRACE}0-{PARENT}-01".encode(),  # trace id too long
]


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_traceparent_is_treated_as_absent(value):
    assert parse_traceparent(value) is None
    headers = HEADERS + [(b"traceparent", value)]
    off, _ = make_tracer(0.0)
    assert off.start_inbound(headers, b"POST", b"/", "iris") is None  # the ratio decides
    on, exporter = make_tracer(1.0)
    on.start_inbound(headers, b"POST", b"/", "iris").end(200, "v1")
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and span.context.trace_id != TRACE_ID  # a new trace


def test_two_traceparents_are_treated_as_absent():
    tracer, exporter = make_tracer(1.0)
    headers = HEADERS + [(b"traceparent", SAMPLED), (b"traceparent", SAMPLED)]
    tracer.start_inbound(headers, b"POST", b"/", "iris").end(200, "v1")
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_later_versions_are_read_for_their_first_four_fields():
    for value in (f"01-{TRACE}-{PARENT}-01".encode(), f"cc-{TRACE}-{PARENT}-09-what-ever".encode()):
        parsed = parse_traceparent(value)
        assert parsed is not None and parsed[:2] == (TRACE_ID, SPAN_ID)
    assert parse_traceparent(b" " + SAMPLED + b"\t") == (TRACE_ID, SPAN_ID, 1)


def test_errors_set_error_status():
    tracer, exporter = make_tracer(1.0)
    inbound = tracer.start_inbound(HEADERS, b"POST", b"/", "iris")
    client, _ = inbound.upstream("v1", "10.0.0.7:8000")
    client.end(None, "timeout")
    mirror, _ = inbound.mirror("v2", "10.0.0.8:8000")
    mirror.end(404)
    inbound.end(504, None)
    spans = spans_by_name(exporter)
    assert spans[UPSTREAM_SPAN].status.status_code is StatusCode.ERROR
    assert spans[UPSTREAM_SPAN].status.description == "timeout"
    assert spans[UPSTREAM_SPAN].attributes["error.type"] == "timeout"
    assert spans[MIRROR_SPAN].status.status_code is StatusCode.ERROR  # client spans: 4xx too
    assert spans[INBOUND_SPAN].status.status_code is StatusCode.ERROR
    assert spans[INBOUND_SPAN].attributes["error.type"] == "504"
    assert "sidemesh.version" not in spans[INBOUND_SPAN].attributes

    inbound = tracer.start_inbound(HEADERS, b"POST", b"/", "iris")
    client, _ = inbound.upstream("v1", "10.0.0.7:8000")
    client.end(502, '{"error": "' + "x" * 5000 + '"}')  # free text stays out of error.type
    span = exporter.get_finished_spans()[-1]
    assert span.attributes["error.type"] == "502" and len(span.status.description) <= 512
    client, _ = inbound.upstream("v1", "10.0.0.7:8000")
    client.end(None, "y" * 100)
    assert exporter.get_finished_spans()[-1].attributes["error.type"] == "_OTHER"
    inbound.end(404, "v1")
    assert exporter.get_finished_spans()[-1].status.status_code is StatusCode.UNSET  # server spans: 5xx only


def test_tracing_off_is_a_no_op_and_imports_no_sdk():
    tracer = Tracer(TracingConfig(sample_ratio=1.0))
    assert not tracer.enabled
    assert tracer.start_inbound(HEADERS + [(b"traceparent", SAMPLED)], b"POST", b"/", "iris") is None
    tracer.shutdown()
    code = (
        "import sys; from sidecar.tracing import Tracer, TracingConfig\n"
        "t = Tracer(TracingConfig(sample_ratio=1.0))\n"
        "assert t.start_inbound([], b'GET', b'/', None) is None and not t.enabled\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_shutdown_stops_tracing():
    tracer, exporter = make_tracer(1.0)
    inbound = tracer.start_inbound(HEADERS, b"POST", b"/", "iris")
    assert tracer.enabled
    tracer.shutdown()
    assert not tracer.enabled
    assert tracer.start_inbound(HEADERS, b"POST", b"/", "iris") is None
    inbound.end(200, "v1")  # a request still in flight ends quietly
    tracer.shutdown()  # twice is fine


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_ratio_names_the_flag(ratio):
    with pytest.raises(ConfigError) as info:
        TracingConfig(sample_ratio=ratio)
    assert info.value.where == "--trace-sample"


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4317", "http://collector", "grpc://collector:4317", "http://:4317", "http://h:99999"])
def test_bad_endpoint_is_refused(endpoint):
    with pytest.raises(ConfigError) as info:
        TracingConfig(otlp_endpoint=endpoint)
    assert info.value.where == "--otlp-endpoint"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: queue.Queue = queue.Queue()

    def Export(self, request, context):  # noqa: N802 - the gRPC method's name
        self.requests.put(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector():
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(grace=None).wait(5)


def test_otlp_export_reaches_a_collector(collector):
    servicer, port = collector
    tracer = Tracer(TracingConfig(sample_ratio=1.0, otlp_endpoint=f"http://127.0.0.1:{port}", service_name="sidecar-test"))
    inbound = tracer.start_inbound(HEADERS + [(b"traceparent", SAMPLED)], b"POST", b"/v2/models/iris/infer", "iris")
    client, _ = inbound.upstream("v1", "127.0.0.1:8000")
    client.end(200)
    mirror, _ = inbound.mirror("v2", "127.0.0.1:8001")
    inbound.end(200, "v1")
    mirror.end(200)
    tracer.shutdown(timeout_s=20)

    names, services, trace_ids = set(), set(), set()
    while len(names) < 3:
        request = servicer.requests.get(timeout=20)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    names.add(span.name)
                    trace_ids.add(span.trace_id)
    assert names == {INBOUND_SPAN, UPSTREAM_SPAN, MIRROR_SPAN}
    assert services == {"sidecar-test"}
    assert trace_ids == {TRACE_ID.to_bytes(16, "big")}


def test_shutdown_is_bounded_when_the_collector_is_down():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tracer = Tracer(TracingConfig(sample_ratio=1.0, otlp_endpoint=f"http://127.0.0.1:{port}"))
    tracer.start_inbound(HEADERS, b"POST", b"/", "iris").end(200, "v1")
    started = time.monotonic()
    tracer.shutdown(timeout_s=0.5)
    # Without the bound the exporter would retry for its 10 s timeout.
    assert time.monotonic() - started < 3
