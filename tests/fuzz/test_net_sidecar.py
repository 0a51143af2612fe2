"""The sidecar over the network (a real ``sidemesh sidecar`` in front of the session's model
server): pipelined requests with fuzzed targets, headers, framing and V2 bodies each get an
answer in order, damaged or arbitrary byte streams get at most a V2 error before the close,
gRPC bytes pass through to a caller-error status, and nothing is ever a 5xx."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.sidecar.peers import SidecarProcess

from .budget import network
from .counts import ran
from .http_inputs import HttpRequest, damaged, requests, segments, serialize
from .net import CALLER_CODES, MODELS, check_answer, new_lines, parse_responses, raw_exchange
from .v2_inputs import infer_messages, v2_bodies

_PATHS = st.sampled_from(["/v2/models/echo_fp32/infer", "/v2/models/tabular/infer", "/v2/models/tabular/versions/2/infer",
                          "/v2/health/ready", "/v2", "/v2/models/echo_bytes", "/metrics"]) | st.sampled_from(MODELS).map(
    lambda m: f"/v2/models/{m}/infer")


@pytest.fixture(scope="module")
def sidecar(server):
    proc = SidecarProcess("tabular", "1", server.http, upstream_grpc=server.grpc).start()
    try:
        yield proc
        status, _, body = proc.admin("/healthz/ready")
        assert status == 200, body
    finally:
        code = proc.stop()
    assert code == 0 and "Traceback" not in new_lines(proc.lines, 0), new_lines(proc.lines, 0)


@st.composite
def v2_requests(draw) -> HttpRequest:
    """A well-formed request to a V2 path with a V2 body of any kind."""
    request = draw(requests())
    body, length = draw(v2_bodies())
    headers = (*request.headers, *((("Inference-Header-Content-Length", length),) if length and length.isascii() and
                                   length.strip().isdigit() else ()))
    if draw(st.integers(0, 3)):  # mostly with the Host header HTTP/1.1 requires
        headers = (("Host", "127.0.0.1"), *headers)
    return HttpRequest(draw(st.sampled_from(["POST", "POST", "GET", "PUT"])), draw(_PATHS), headers, body,
                       None if request.chunks is None else tuple(n for n in (len(body),) if n))


@network(40)
@given(st.lists(v2_requests(), min_size=1, max_size=3).flatmap(lambda reqs: st.tuples(
    st.just(reqs), segments(b"".join(map(serialize, reqs)) + b"GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n"))))
def test_pipelined_requests_each_get_an_answer_in_order_and_none_is_a_5xx(sidecar, case):
    ran("sidecar REST: pipelined requests")
    sent, pieces = case
    answers = parse_responses(raw_exchange(sidecar.port, pieces, half_close=False))
    assert len(answers) == len(sent) + 1, [s for s, _, _ in answers]
    for (status, headers, body), request in zip(answers, sent):
        check_answer(status, headers, body, f"{request.method} {request.target}")


@network(40)
@given(st.one_of(
    st.lists(v2_requests(), min_size=1, max_size=2).flatmap(lambda reqs: damaged(b"".join(map(serialize, reqs)))),
    st.binary(max_size=200),
).flatmap(segments))
def test_damaged_or_arbitrary_streams_get_at_most_v2_errors_and_never_a_5xx(sidecar, pieces):
    ran("sidecar REST: damaged streams")
    for status, headers, body in parse_responses(raw_exchange(sidecar.port, pieces, half_close=True)):
        check_answer(status, headers, body, "damaged stream")


@pytest.fixture(scope="module")
def sidecar_channel(sidecar):
    with grpc.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        yield channel


@network(20)
@given(st.binary(max_size=120) | infer_messages().map(lambda m: m.SerializeToString()), st.sampled_from(MODELS))
def test_grpc_bytes_through_the_sidecar_get_ok_or_a_caller_error_status(sidecar_channel, data, model):
    ran("sidecar gRPC: ModelInfer bytes")
    call = sidecar_channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    try:
        call(data, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in CALLER_CODES and exc.details(), f"{exc.code()} {exc.details()!r}"


# --- regressions found by the properties above -------------------------------------------

def test_a_request_without_a_host_header_gets_a_v2_error_from_the_sidecar(sidecar):
    (status, headers, body), = parse_responses(raw_exchange(
        sidecar.port, [b"POST /v2/models/tabular/infer HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"], False))
    check_answer(status, headers, body)
    assert status == 400 and b"no Host header" in body
