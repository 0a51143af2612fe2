"""The model server over the network (REST and gRPC, the session's real server process):
every infer body or message, valid, mutated or garbage, is answered with a 2xx or a 4xx in
the documented shape (gRPC: a status other than INTERNAL/UNKNOWN with a message), valid
requests echo their tensors back, and the server stays healthy and logs no traceback."""

from __future__ import annotations

import json
from urllib.parse import quote

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from model_server.tensor_codec import from_raw, from_values
from tests.model_server.models import ECHO_TYPES

from .budget import network
from .counts import ran
from .json_values import deeply_nested, encode, mutated
from .net import CALLER_CODES, MODELS, Session, check_answer, new_lines
from .v2_inputs import grpc_request, infer_messages, json_entry, tensors, v2_bodies

_ROWS_OF_3 = st.integers(0, 4).map(lambda n: [n, 3])


@st.composite
def echo_requests(draw):
    """(model, tensor, body, header length, valid): a request for an echo model (input ``x``
    [-1, 3] of its datatype), as JSON or binary, mutated or not."""
    datatype = draw(st.sampled_from(sorted(ECHO_TYPES)))
    tensor = draw(tensors(datatypes=[datatype], name="x", shapes=_ROWS_OF_3, finite=True))
    model = f"echo_{datatype.lower()}"
    if draw(st.booleans()):
        blob = tensor.raw()
        header = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": tensor.shape,
                                         "parameters": {"binary_data_size": len(blob)}}],
                             "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
        return model, tensor, header + blob, str(len(header)), True
    doc = {"inputs": [json_entry(tensor, nested=draw(st.booleans()))], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    if draw(st.booleans()):
        return model, tensor, encode(draw(mutated(st.just(doc)))), None, False
    return model, tensor, encode(doc), None, True


def _echoed(tensor, headers: dict, body: bytes) -> bool:
    length = int(headers.get("inference-header-content-length", len(body)))
    (out,) = [o for o in json.loads(body[:length])["outputs"] if o["name"] == "y"]
    shape = tuple(out["shape"])
    data = (from_raw("y", out["datatype"], shape, body[length:]) if "parameters" in out
            else from_values("y", out["datatype"], shape, out["data"]))
    return tensor.equals(data)


@pytest.fixture(scope="module")
def rest(server):
    session = Session(server.host, server.http_port)
    since = len(server.lines)
    yield session
    status, _, body = session.request("GET", "/v2/health/ready")
    session.close()
    assert status == 200, body
    assert "Traceback" not in new_lines(server.lines, since), new_lines(server.lines, since)


_REST_CASES = st.one_of(
    echo_requests(),
    st.tuples(st.sampled_from(MODELS) | st.text(max_size=6), v2_bodies()).map(lambda t: (t[0], None, t[1][0], t[1][1], False)),
    st.tuples(st.sampled_from(MODELS), deeply_nested(max_depth=5000)).map(lambda t: (t[0], None, t[1], None, False)),
)


@network(60)
@given(_REST_CASES)
def test_any_rest_infer_body_gets_a_2xx_or_a_4xx_error(rest, case):
    ran("model server REST: POST /v2/models/*/infer")
    model, tensor, body, length, valid = case
    headers = {"Content-Type": "application/json"}
    if length is not None and length.isascii() and length.isprintable():
        # Only valid HTTP field values: aiohttp's own parser answers others with a plain-text 400
        # before the app sees them (the sidecar's parser, fuzzed with raw bytes, guards this server).
        headers["Inference-Header-Content-Length"] = length
    status, got, data = rest.request("POST", f"/v2/models/{quote(model, safe='')}/infer", body, headers)
    check_answer(status, got, data, f"POST {model}")
    if valid:
        assert status == 200 and _echoed(tensor, got, data), data[:300]


@pytest.fixture(scope="module")
def channel(server):
    since = len(server.lines)
    with grpc.insecure_channel(server.grpc) as channel:
        yield channel
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
    assert "Traceback" not in new_lines(server.lines, since), new_lines(server.lines, since)


def _call(call, request, what: str):
    try:
        return call(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in CALLER_CODES and exc.details(), f"{what}: {exc.code()} {exc.details()!r}"
        return None


@network(40)
@given(st.one_of(
    infer_messages().map(lambda m: (m, None)),
    st.sampled_from(sorted(ECHO_TYPES)).flatmap(lambda dt: st.tuples(
        tensors(datatypes=[dt], name="x", shapes=_ROWS_OF_3, finite=False), st.booleans())).map(
        lambda tr: (grpc_request([tr[0]], raw=tr[1] or tr[0].datatype == "FP16", model=f"echo_{tr[0].datatype.lower()}"), tr[0])),
), st.sampled_from(MODELS) | st.none())
def test_any_grpc_infer_message_gets_ok_or_a_caller_error_status(channel, case, model):
    ran("model server gRPC: ModelInfer message")
    message, tensor = case
    if tensor is None and model is not None:
        message.model_name = model
    response = _call(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer, message, "ModelInfer")
    if tensor is not None:
        assert response is not None
        (i,) = [i for i, o in enumerate(response.outputs) if o.name == "y"]
        out = response.outputs[i]
        assert tensor.equals(from_raw("y", out.datatype, tuple(out.shape), response.raw_output_contents[i]))


@network(20)
@given(st.binary(max_size=200) | infer_messages().map(lambda m: m.SerializeToString()).flatmap(
    lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda cut: b[:cut] + b"\xff")))
def test_any_bytes_sent_as_a_model_infer_request_get_a_caller_error_status(channel, data):
    ran("model server gRPC: ModelInfer bytes")
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    _call(call, data, "ModelInfer bytes")


# --- regressions found by the properties above -------------------------------------------

def test_bytes_that_are_not_a_model_infer_request_get_invalid_argument_and_no_traceback(server, channel):
    since = len(server.lines)
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(b"\xff\x00garbage", timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("the request is not an inference.ModelInferRequest message")
    assert "Traceback" not in new_lines(server.lines, since)
