"""Every bad input gets a clear error (the field and what was expected) and the server
keeps serving. REST through raw HTTP, gRPC through our own stubs, so nothing client-side
tidies the request first."""

from __future__ import annotations

import http.client
import json
import struct

import grpc
import numpy as np
import pytest

from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.servers import ModelServerProcess


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(server.host, server.http_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def features(shape=(1, 8), datatype="FP32", data=None, name="features") -> dict:
    count = int(np.prod(shape))
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": data if data is not None else [0.5] * count}


def doc(*inputs, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


TABULAR = "/v2/models/tabular/infer"
BAD_JSON = [
    ("malformed JSON", TABULAR, b'{"inputs": [', "request body is not valid JSON"),
    ("body not an object", TABULAR, b"[1, 2]", "request body must be a JSON object"),
    ("no inputs", TABULAR, b"{}", "'inputs' must be a non-empty list"),
    ("input not an object", TABULAR, doc(5), "inputs[0] must be an object"),
    ("unknown datatype", TABULAR, doc(features(datatype="FP33")), "datatype 'FP33' is not a V2 datatype"),
    ("negative dimension", TABULAR, doc(features(shape=(-1, 8), data=[0.0] * 8)), "shape must be a list of non-negative integers"),
    ("wrong shape", TABULAR, doc(features(shape=(1, 7))), "input 'features': shape [1, 7] does not match the model's [-1, 8]"),
    ("wrong datatype", TABULAR, doc(features(datatype="FP64")), "input 'features': datatype FP64 does not match the model's FP32"),
    ("too few elements", TABULAR, doc(features(data=[0.0] * 7)), "input 'features': 7 elements given, shape [1, 8] needs 8"),
    ("unknown input", TABULAR, doc(features(name="feats")), "unknown input 'feats' for model 'tabular'; expected: features"),
    ("input twice", TABULAR, doc(features(), features()), "input 'features' is given more than once"),
    ("strings for FP32", TABULAR, doc(features(data=["a"] * 8)), "input 'features': FP32 data must be numbers, got strings"),
    ("ragged nesting", TABULAR, doc(features(shape=(2, 8), data=[[0.0] * 8, [0.0] * 7])), "input 'features': 'data' is not a regular array"),
    ("data missing", TABULAR, doc({"name": "features", "shape": [1, 8], "datatype": "FP32"}), "needs 'data', or 'parameters.binary_data_size'"),
    ("unknown output", TABULAR, doc(features(), outputs=[{"name": "nope"}]), "unknown output 'nope' requested; model 'tabular' has: probabilities, label"),
    ("id not a string", TABULAR, doc(features(), id=7), "'id' must be a string"),
    ("batch over the limit", TABULAR, doc(features(shape=(65, 8))), "batch of 65 rows is over this model's max_batch_size of 64"),
    ("float for INT32", "/v2/models/echo_int32/infer", doc(features(shape=(1, 3), datatype="INT32", data=[1, 2.5, 3], name="x")), "input 'x': INT32 data must be integers, got floating-point numbers"),
    ("INT8 overflow", "/v2/models/echo_int8/infer", doc(features(shape=(1, 3), datatype="INT8", data=[1, 300, 3], name="x")), "input 'x': value 300 is out of range for INT8"),
    ("numbers for BOOL", "/v2/models/echo_bool/infer", doc(features(shape=(1, 3), datatype="BOOL", data=[1, 0, 1], name="x")), "input 'x': BOOL data must be true/false values"),
    ("a string as BYTES data", "/v2/models/echo_bytes/infer", doc(features(shape=(3,), datatype="BYTES", data="abc", name="x")), "input 'x': 'data' must be a list of values, got str"),
    ("a number as data", TABULAR, doc(features(data=5)), "input 'features': 'data' must be a list of values, got int"),
    ("numbers for BYTES", "/v2/models/echo_bytes/infer", doc(features(shape=(1, 3), datatype="BYTES", data=[1, 2, 3], name="x")), "input 'x': BYTES data must be strings, got int"),
]


@pytest.mark.parametrize("path,body,message", [c[1:] for c in BAD_JSON], ids=[c[0] for c in BAD_JSON])
def test_rest_rejects_bad_json_requests_with_400_naming_the_field(server, path, body, message):
    status, answer = post(server, path, body)
    assert status == 400
    assert message in answer["error"]


def binary_request(json_doc: dict, blob: bytes, header_length: int | None = None) -> tuple[bytes, dict]:
    head = json.dumps(json_doc).encode()
    length = len(head) if header_length is None else header_length
    return head + blob, {"Inference-Header-Content-Length": str(length), "Content-Type": "application/octet-stream"}


def _binary_input(size: int, shape=(1, 8), datatype="FP32", name="features") -> dict:
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "parameters": {"binary_data_size": size}}]}


BAD_BINARY = [
    ("size disagrees with shape", TABULAR, _binary_input(12), b"\0" * 12, None, "input 'features': raw data is 12 bytes, shape [1, 8] of FP32 needs 32"),
    ("size past the end", TABULAR, _binary_input(64), b"\0" * 32, None, "binary_data_size 64 runs past the end of the body"),
    ("bytes left over", TABULAR, _binary_input(32), b"\0" * 40, None, "body has 8 bytes beyond the JSON header"),
    ("header length past the body", TABULAR, _binary_input(32), b"\0" * 32, 10_000, "Inference-Header-Content-Length is 10000 but the body is"),
    ("header length not a number", TABULAR, _binary_input(32), b"\0" * 32, "x", "Inference-Header-Content-Length must be an integer"),
    ("BYTES record truncated", "/v2/models/echo_bytes/infer", _binary_input(9, (1, 3), "BYTES", "x"), struct.pack("<I", 10) + b"abcde", None, "element 0 claims 10 bytes but only 5 remain"),
    ("BYTES not UTF-8", "/v2/models/echo_bytes/infer", _binary_input(15, (1, 3), "BYTES", "x"), b"".join(struct.pack("<I", 1) + c for c in (b"a", b"\xff", b"c")), None, "input 'x': BYTES element 1 is not UTF-8 text"),
]


@pytest.mark.parametrize("path,json_doc,blob,length,message", [c[1:] for c in BAD_BINARY], ids=[c[0] for c in BAD_BINARY])
def test_rest_rejects_bad_binary_requests_with_400(server, path, json_doc, blob, length, message):
    body, headers = binary_request(json_doc, blob, length if isinstance(length, int) or length is None else None)
    if isinstance(length, str):
        headers["Inference-Header-Content-Length"] = length
    status, answer = post(server, path, body, headers)
    assert status == 400
    assert message in answer["error"]


@pytest.mark.parametrize(
    "method,path,status,message",
    [
        ("POST", "/v2/models/nope/infer", 404, "unknown model 'nope'; this server has:"),
        ("POST", "/v2/models/tabular/versions/9/infer", 404, "model 'tabular' has no version '9'; it has: 1, 2, 3"),
        ("GET", "/v2/models/nope", 404, "unknown model 'nope'"),
        ("GET", "/v2/models/tabular/versions/9/ready", 404, "no version '9'"),
        ("GET", "/v2/nothing/here", 404, "Not Found: GET /v2/nothing/here"),
        ("GET", "/v2/models/tabular/infer", 405, "Method Not Allowed"),
    ],
)
def test_unknown_models_and_routes_get_json_errors(server, method, path, status, message):
    conn = http.client.HTTPConnection(server.host, server.http_port, timeout=30)
    conn.request(method, path, body=doc(features()) if method == "POST" else None)
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    assert response.status == status
    assert message in answer["error"]


def test_the_server_still_serves_after_every_bad_request(server):
    for case in BAD_JSON:
        post(server, case[1], case[2])
    status, answer = post(server, TABULAR, doc(features(shape=(2, 8))))
    assert status == 200
    assert answer["outputs"][1]["shape"] == [2]


# --- gRPC -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.grpc)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def grpc_request(model="tabular", shape=(1, 8), datatype="FP32", name="features", fp32=None, raw=None, outputs=()):
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if raw is not None:
        request.raw_input_contents.extend(raw)
    elif fp32 is not None:
        tensor.contents.fp32_contents.extend(fp32)
    for out in outputs:
        request.outputs.add(name=out)
    return request


BAD_GRPC = [
    ("unknown model", grpc_request(model="nope", fp32=[0.0] * 8), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    ("wrong shape", grpc_request(shape=(1, 7), fp32=[0.0] * 7), grpc.StatusCode.INVALID_ARGUMENT, "shape [1, 7] does not match the model's [-1, 8]"),
    ("wrong datatype", grpc_request(datatype="FP64", raw=[b"\0" * 64]), grpc.StatusCode.INVALID_ARGUMENT, "datatype FP64 does not match the model's FP32"),
    ("too few elements", grpc_request(fp32=[0.0] * 5), grpc.StatusCode.INVALID_ARGUMENT, "5 elements given, shape [1, 8] needs 8"),
    ("raw size wrong", grpc_request(raw=[b"\0" * 31]), grpc.StatusCode.INVALID_ARGUMENT, "raw data is 31 bytes, shape [1, 8] of FP32 needs 32"),
    ("raw count wrong", grpc_request(raw=[b"\0" * 32, b"\0" * 4]), grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents has 2 entries for 1 inputs"),
    ("unknown input", grpc_request(name="feats", fp32=[0.0] * 8), grpc.StatusCode.INVALID_ARGUMENT, "unknown input 'feats'"),
    ("unknown output", grpc_request(fp32=[0.0] * 8, outputs=["nope"]), grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'nope' requested"),
    ("FP16 without raw", grpc_request(model="echo_fp16", name="x", shape=(1, 3), datatype="FP16"), grpc.StatusCode.INVALID_ARGUMENT, "FP16 has no typed contents field; send it in raw_input_contents"),
    ("unknown datatype", grpc_request(datatype="FLOAT", fp32=[0.0] * 8), grpc.StatusCode.INVALID_ARGUMENT, "datatype 'FLOAT' is not a V2 datatype"),
]


@pytest.mark.parametrize("request_,code,message", [c[1:] for c in BAD_GRPC], ids=[c[0] for c in BAD_GRPC])
def test_grpc_rejects_bad_requests_with_matching_status(stub, request_, code, message):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request_, timeout=30)
    assert caught.value.code() == code
    assert message in caught.value.details()


def test_grpc_still_serves_after_bad_requests(stub):
    for case in BAD_GRPC:
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(case[1], timeout=30)
    answer = stub.ModelInfer(grpc_request(fp32=[0.25] * 8), timeout=30)
    assert [o.name for o in answer.outputs] == ["probabilities", "label"]
    assert np.frombuffer(answer.raw_output_contents[1], "<i8").shape == (1,)


# --- limits -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(repo):
    with ModelServerProcess(repo, ["--max-body-bytes", "4096"]) as proc:
        yield proc


def test_rest_body_over_the_limit_gets_413_and_the_server_goes_on(small_server):
    body = doc(features(shape=(60, 8), data=[0.123456789] * 480))
    assert len(body) > 4096
    status, answer = post(small_server, TABULAR, body)
    assert status == 413
    assert "over the server's limit of 4096 bytes" in answer["error"]
    status, _ = post(small_server, TABULAR, doc(features()))
    assert status == 200


def test_grpc_message_over_the_limit_is_resource_exhausted(small_server):
    with grpc.insecure_channel(small_server.grpc) as channel:
        stub_ = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub_.ModelInfer(grpc_request(shape=(256, 8), raw=[b"\0" * 8192]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub_.ModelInfer(grpc_request(fp32=[0.0] * 8), timeout=30).model_version == "3"
