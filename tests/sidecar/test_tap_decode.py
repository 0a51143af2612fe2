"""The tap's lean decoders: every V2 body form becomes the arrays the client sent, grouped
per input and row shape across a batch; what cannot be read is counted, a body whose
inputs do not all decode contributes nothing, and ragged element lists still count."""

from __future__ import annotations

import json

import numpy as np

from model_server.proto import grpc_service_pb2 as v2
from sidecar.tap_decode import Batch


def _json(*tensors) -> bytes:
    return json.dumps({"inputs": [{"name": n, "datatype": d, "shape": s, "data": data} for n, d, s, data in tensors]}).encode()


def _groups(batch: Batch) -> dict:
    return {(name, datatype): (array, bodies) for name, datatype, array, bodies in batch.groups()}


def test_flat_and_nested_json_of_one_shape_become_one_array_in_order():
    batch = Batch()
    assert batch.add_rest(_json(("x", "FP32", [1, 3], [1, 2, 3])), None)
    assert batch.add_rest(_json(("x", "FP32", [1, 3], [[4, 5, 6]])), None)
    assert batch.add_rest(_json(("x", "FP32", [2, 3], [7, 8, 9, 10, 11, 12])), None)
    (array, bodies), = _groups(batch).values()
    assert array.dtype == np.float32 and bodies == 3
    np.testing.assert_array_equal(array, np.arange(1, 13, dtype=np.float32).reshape(4, 3))


def test_integer_bool_and_bytes_inputs_keep_their_types():
    batch = Batch()
    assert batch.add_rest(_json(("ids", "INT64", [2], [2**40, -1]), ("flag", "BOOL", [2, 1], [[True], [False]]),
                                ("city", "BYTES", [2], ["Oslo", "Lima"])), None)
    groups = _groups(batch)
    assert groups[("ids", "INT64")][0].tolist() == [2**40, -1] and groups[("ids", "INT64")][0].dtype == np.int64
    assert groups[("flag", "BOOL")][0].tolist() == [[True], [False]]
    assert groups[("city", "BYTES")][0].tolist() == ["Oslo", "Lima"]


def test_the_binary_extension_reads_each_input_at_its_offset():
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([[1, 2]], dtype=np.int32)
    header = json.dumps({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": a.nbytes}},
        {"name": "b", "datatype": "INT32", "shape": [1, 2], "parameters": {"binary_data_size": b.nbytes}}]}).encode()
    batch = Batch()
    assert batch.add_rest(header + a.tobytes() + b.tobytes(), str(len(header)).encode())
    groups = _groups(batch)
    np.testing.assert_array_equal(groups[("a", "FP32")][0], a)
    np.testing.assert_array_equal(groups[("b", "INT32")][0], b)


def test_grpc_raw_and_typed_contents_decode_alike():
    x = np.array([[0.5, -1.5]], dtype=np.float32)
    raw = v2.ModelInferRequest(model_name="m")
    raw.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    raw.raw_input_contents.append(x.tobytes())
    typed = v2.ModelInferRequest(model_name="m")
    typed.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([0.5, -1.5])
    batch = Batch()
    assert batch.add_grpc(raw.SerializeToString()) and batch.add_grpc(typed.SerializeToString())
    (array, bodies), = _groups(batch).values()
    np.testing.assert_array_equal(array, np.vstack([x, x]))
    assert bodies == 2


def test_unreadable_bodies_are_counted_and_a_body_counts_whole_or_not_at_all():
    batch = Batch()
    assert not batch.add_rest(b"{not json", None)
    assert not batch.add_rest(_json(("x", "FP32", [1, 2], [1, 2])), b"9999")  # header length past the body
    assert not batch.add_rest(b'{"inputs": [{"name": "x"}]}', None)
    # The first input is fine, the second's binary data runs past the body: nothing is kept.
    header = json.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1.0]},
                                    {"name": "b", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}]}).encode()
    assert not batch.add_rest(header + b"\0" * 8, str(len(header)).encode())
    assert not batch.add_grpc(b"\xff\x00garbage")
    assert batch.undecodable == 5 and _groups(batch) == {}


def test_ragged_lists_fall_back_to_one_by_one_and_count_only_the_bad_ones():
    batch = Batch()
    assert batch.add_rest(_json(("x", "FP32", [1, 2], [1, 2])), None)
    assert batch.add_rest(_json(("x", "FP32", [1, 2], [[3, 4]])), None)
    assert batch.add_rest(_json(("x", "FP32", [1, 2], ["a", "b"])), None)  # the model server would refuse it
    (array, bodies), = _groups(batch).values()
    np.testing.assert_array_equal(array, [[1, 2], [3, 4]])
    assert bodies == 2 and batch.undecodable == 1
