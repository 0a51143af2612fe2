"""The model server's V2 codecs (REST JSON, the binary extension, gRPC messages, raw and
typed tensor data): any input decodes or is refused with ``InvalidInput`` and a message,
and valid tensors survive every encoding bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from model_server import grpc_codec, rest_codec
from model_server.errors import InvalidInput
from model_server.proto import grpc_service_pb2 as pb
from model_server.tensor_codec import check_header, from_raw, from_values
from model_server.tensors import InferOutput, InferResponse

from .budget import share
from .counts import ran
from .json_values import deeply_nested, edge_variants, encode, json_values
from .oracle import noted, parse_or_refuse
from .v2_inputs import DATATYPES, grpc_request, infer_messages, json_entry, tensors, v2_bodies, v2_documents

# Shapes go through ``check_header`` first, as in both front ends: the converters see only what it passes.
_SHAPES = st.lists(st.integers(-2, 5) | st.sampled_from([2**20, 2**40, 2**41, 2**62, 2**63 - 1]), max_size=4)


def _rest(body: bytes, length: str | None):
    return parse_or_refuse(lambda: rest_codec.decode_request("m", "1", body, length), InvalidInput)


@given(v2_bodies())
def test_any_rest_body_decodes_or_is_refused_as_invalid_input(case):
    ran("rest_codec.decode_request: any body")
    _rest(*case)


@share(20)
@given(v2_documents())
def test_every_field_of_a_request_set_to_every_edge_value_decodes_or_is_refused(doc):
    for change, variant in edge_variants(doc):
        ran("rest_codec.decode_request: edge sweep")
        with noted(change):
            _rest(encode(variant), None)


@given(deeply_nested())
def test_deeply_nested_json_is_refused_as_invalid_input(body):
    ran("rest_codec.decode_request: nesting")
    assert _rest(body, None) is None


@given(st.lists(tensors(), min_size=1, max_size=3), st.lists(st.booleans(), min_size=3, max_size=3))
def test_json_and_binary_tensors_in_one_request_decode_to_the_same_arrays(inputs, binary):
    ran("rest_codec.decode_request: round trip")
    entries, blobs = [], []
    for tensor, as_binary in zip(inputs, binary):
        if as_binary:
            blob = tensor.raw()
            entries.append({"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape,
                            "parameters": {"binary_data_size": len(blob)}})
            blobs.append(blob)
        else:
            entries.append(json_entry(tensor, nested=len(blobs) % 2 == 0))
    header = json.dumps({"inputs": entries}).encode()
    request = rest_codec.decode_request("m", "1", header + b"".join(blobs), str(len(header)) if blobs else None)
    assert [(i.name, i.datatype, list(i.shape)) for i in request.inputs] == [(t.name, t.datatype, t.shape) for t in inputs]
    assert all(t.equals(i.data) for t, i in zip(inputs, request.inputs))


@given(st.lists(tensors(finite=False), min_size=1, max_size=3), st.data())
def test_responses_encode_to_json_and_binary_that_read_back_the_same(outputs, data):
    ran("rest_codec.encode_response: round trip")
    binary = [data.draw(st.booleans()) or (t.datatype != "BYTES" and not np.isfinite(t.array.astype(float)).all())
              for t in outputs]
    response = InferResponse("m", "1", None, [InferOutput(t.name, t.datatype, t.array, b) for t, b in zip(outputs, binary)])
    body, json_length = rest_codec.encode_response(response)
    doc = json.loads(body[:json_length] if json_length else body)
    offset = json_length or len(body)
    for tensor, entry in zip(outputs, doc["outputs"]):
        shape = tuple(entry["shape"])
        if "data" in entry:
            array = from_values(entry["name"], entry["datatype"], shape, entry["data"])
        else:
            size = entry["parameters"]["binary_data_size"]
            array = from_raw(entry["name"], entry["datatype"], shape, body[offset:offset + size])
            offset += size
        assert entry["name"] == tensor.name and tensor.equals(array)
    assert offset == len(body)


@given(infer_messages())
def test_any_infer_message_decodes_or_is_refused_as_invalid_input(message):
    ran("grpc_codec.decode_request: any message")
    parse_or_refuse(lambda: grpc_codec.decode_request(message, "m", "1"), InvalidInput)


@given(st.binary(max_size=512) | infer_messages().map(lambda m: m.SerializeToString()[:-1]))
def test_any_bytes_parse_as_a_message_or_fail_to_parse(data):
    ran("grpc_codec.decode_request: any bytes")
    try:
        message = pb.ModelInferRequest.FromString(data)
    except DecodeError:
        return
    parse_or_refuse(lambda: grpc_codec.decode_request(message, "m", "1"), InvalidInput)


@given(st.lists(tensors(finite=False), min_size=1, max_size=3), st.booleans())
def test_grpc_raw_and_typed_contents_decode_to_the_same_arrays(inputs, raw):
    ran("grpc_codec.decode_request: round trip")
    raw = raw or any(t.datatype == "FP16" for t in inputs)
    message = pb.ModelInferRequest.FromString(grpc_request(inputs, raw).SerializeToString())
    request = grpc_codec.decode_request(message, "m", "1")
    assert all(t.equals(i.data) for t, i in zip(inputs, request.inputs))


@given(json_values(), json_values() | st.sampled_from(DATATYPES), json_values() | _SHAPES)
def test_any_tensor_header_checks_out_or_is_refused(name, datatype, shape):
    ran("tensor_codec.check_header")
    parse_or_refuse(lambda: check_header(name, datatype, shape), InvalidInput)


@given(st.sampled_from(DATATYPES), _SHAPES, json_values(20))
def test_any_element_list_converts_or_is_refused(datatype, dims, data):
    ran("tensor_codec.from_values")
    parse_or_refuse(lambda: from_values("x", datatype, check_header("x", datatype, dims)[2], data), InvalidInput)


@given(st.sampled_from(DATATYPES), _SHAPES, st.binary(max_size=128))
def test_any_raw_bytes_convert_or_are_refused(datatype, dims, data):
    ran("tensor_codec.from_raw")
    parse_or_refuse(lambda: from_raw("x", datatype, check_header("x", datatype, dims)[2], data), InvalidInput)


# --- regressions found by the properties above -------------------------------------------

def test_an_empty_tensor_whose_other_dimensions_overflow_numpy_is_refused_naming_the_input():
    body = json.dumps({"inputs": [{"name": "x", "datatype": "UINT16", "shape": [0, 2**62], "data": []}]}).encode()
    with pytest.raises(InvalidInput, match=r"input 'x': shape \[0, 4611686018427387904\] has dimensions multiplying past 2\*\*40"):
        rest_codec.decode_request("m", "1", body, None)


def test_raw_bytes_claiming_more_elements_than_the_buffer_can_hold_are_refused_before_allocating():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="BYTES", shape=[2**40])
    message.raw_input_contents.append(b"")
    with pytest.raises(InvalidInput, match=r"input 'x': raw BYTES data holds 0 BYTES elements, expected 1099511627776"):
        grpc_codec.decode_request(message, "m", "1")
