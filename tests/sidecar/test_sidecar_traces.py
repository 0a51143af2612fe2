"""Spans from a running sidecar (in-process, with the in-memory exporter): the inbound
request, the upstream call and the mirror copy, and the traceparent each upstream sees."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sidecar.config import SidecarConfig
from sidecar.router import HOP_HEADER
from sidecar.server import Sidecar
from sidecar.table import Cluster, Endpoint, MirrorTarget, ModelRoute, RoutingTable, Target
from sidecar.tracing import INBOUND_SPAN, MIRROR_SPAN, UPSTREAM_SPAN, parse_traceparent
from tests.control_plane.peers import free_port
from tests.sidecar.peers import INFER_BODY, ScriptedUpstream, http_call

CLIENT_TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


def _table(shadow: ScriptedUpstream) -> RoutingTable:
    route = ModelRoute("m", (Target("1", "m|1", 1),), mirrors=(MirrorTarget("3", "m|3", 1_000_000),))
    clusters = {"m|1": Cluster("m|1"), "m|3": Cluster("m|3", (Endpoint("127.0.0.1", shadow.port),))}
    return RoutingTable({"m": route}, clusters, {}, source="static")


def _run(scenario, sample: float):
    local, shadow = ScriptedUpstream("1"), ScriptedUpstream("3")
    exporter = InMemorySpanExporter()
    config = SidecarConfig(model="m", version="1", upstream=("127.0.0.1", local.port), listen=("127.0.0.1", free_port()),
                           admin=("127.0.0.1", free_port()), trace_sample=sample)

    async def main():
        async with Sidecar(config, span_exporter=exporter) as sidecar:
            sidecar.apply(_table(shadow))
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, scenario, sidecar.http_address[1])
            await sidecar.mirror.wait_idle()
            return result

    try:
        result = asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        local.close()
        shadow.close()
    return result, exporter.get_finished_spans(), local, shadow


def test_a_sampled_request_makes_inbound_upstream_and_mirror_spans_with_the_traceparent_forwarded():
    def scenario(port):
        return http_call(port, "POST", "/v2/models/m/infer", INFER_BODY, {"traceparent": CLIENT_TRACE.decode()})

    (status, _, _), spans, local, shadow = _run(scenario, sample=0.0)
    assert status == 200
    by_name = {s.name: s for s in spans}
    inbound, upstream, mirror = by_name[INBOUND_SPAN], by_name[UPSTREAM_SPAN], by_name[MIRROR_SPAN]
    trace_id = parse_traceparent(CLIENT_TRACE)[0]
    assert {s.context.trace_id for s in spans} == {trace_id}
    assert inbound.parent.span_id == parse_traceparent(CLIENT_TRACE)[1]  # continues the client's trace
    assert upstream.parent.span_id == inbound.context.span_id and mirror.parent.span_id == inbound.context.span_id
    sent = parse_traceparent(local.headers[-1]["traceparent"].encode())
    assert sent[:2] == (trace_id, upstream.context.span_id)
    copied = parse_traceparent(shadow.headers[-1]["traceparent"].encode())
    assert copied[:2] == (trace_id, mirror.context.span_id)
    assert shadow.headers[-1][HOP_HEADER.decode()] == "3" and inbound.attributes["http.response.status_code"] == 200


def test_an_unsampled_request_makes_no_span_and_passes_the_traceparent_on_unchanged():
    def scenario(port):
        return http_call(port, "POST", "/v2/models/m/infer", INFER_BODY, {"traceparent": UNSAMPLED.decode()})

    (status, _, _), spans, local, shadow = _run(scenario, sample=1.0)
    assert status == 200 and spans == ()
    assert local.headers[-1]["traceparent"] == UNSAMPLED.decode()
    assert shadow.headers[-1]["traceparent"] == UNSAMPLED.decode()


def test_the_sampling_ratio_applies_to_requests_without_a_traceparent():
    def scenario(port):
        return [http_call(port, "POST", "/v2/models/m/infer", INFER_BODY)[0] for _ in range(20)]

    statuses, spans, _, _ = _run(scenario, sample=1.0)
    assert statuses == [200] * 20
    assert sum(s.name == INBOUND_SPAN for s in spans) == 20
    _, none, _, _ = _run(scenario, sample=0.0)
    assert none == ()

