"""The statistics tap's lean decoder (``sidecar.tap_decode.Batch``): it sees bodies the model
server already answered, but must never raise on any body (a raise would lose the whole
batch of good ones): a body is decoded whole or counted as undecodable, ``groups()`` never
raises, and valid V2 bodies (JSON, binary, gRPC) come back as the arrays they hold."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sidecar.tap_decode import Batch

from .counts import ran
from .oracle import parse_or_refuse
from .v2_inputs import grpc_request, infer_messages, json_entry, tensors, v2_bodies

_BODIES = st.one_of(
    v2_bodies().map(lambda case: ("rest", case[0], None if case[1] is None else case[1].encode())),
    infer_messages().map(lambda m: ("grpc", m.SerializeToString(), None)),
    st.binary(max_size=200).map(lambda b: ("grpc", b, None)),
)


def _add(batch: Batch, kind: str, body: bytes, length: bytes | None) -> bool:
    return batch.add_grpc(body) if kind == "grpc" else batch.add_rest(body, length)


def _groups(batch: Batch) -> list:
    groups = parse_or_refuse(lambda: list(batch.groups()), ())  # no error type is allowed out
    for name, datatype, array, bodies in groups:
        assert isinstance(name, str) and isinstance(datatype, str) and array.ndim >= 1 and bodies >= 1
    return groups


@given(st.lists(_BODIES, min_size=1, max_size=6))
def test_any_bodies_decode_whole_or_count_as_undecodable_and_never_raise(bodies):
    ran("sidecar.tap_decode.Batch: any bodies")
    batch = Batch()
    added = [parse_or_refuse(lambda b=body: _add(batch, *b), ()) for body in bodies]
    assert all(isinstance(ok, bool) for ok in added)
    _groups(batch)


# Bodies that share an input name, datatype and shape land in one group, converted together;
# their elements mix numbers with junk so that the group's conversion falls back to one by one.
_ELEMENTS = st.floats() | st.integers(-(2**70), 2**70) | st.booleans() | st.none() | st.text(max_size=2) | st.just([1.0])
_SHARED_INPUT = st.fixed_dictionaries({
    "name": st.just("x"), "datatype": st.sampled_from(["FP32", "INT8", "BOOL"]),
    "shape": st.sampled_from([[], [1], [2], [1, 2], [2, 1]]),
}).flatmap(lambda head: st.lists(_ELEMENTS, min_size=1, max_size=2).map(lambda data: {**head, "data": data}))


@given(st.lists(_SHARED_INPUT.map(lambda item: json.dumps({"inputs": [item]}).encode()), min_size=2, max_size=5))
def test_bodies_sharing_an_input_decode_whole_or_count_as_undecodable(bodies):
    ran("sidecar.tap_decode.Batch: shared inputs")
    batch = Batch()
    accepted = sum(batch.add_rest(body, None) for body in bodies)
    groups = _groups(batch)
    assert sum(n for *_, n in groups) + batch.undecodable == len(bodies), (accepted, groups, batch.undecodable)


@given(st.lists(st.lists(tensors(max_side=3, name="x").filter(lambda t: t.datatype != "BYTES" and t.array.ndim >= 1),
                         min_size=1, max_size=1), min_size=1, max_size=4),
       st.sampled_from(["json", "binary", "grpc"]))
def test_valid_bodies_come_back_as_the_arrays_they_hold(bodies, form):
    ran("sidecar.tap_decode.Batch: round trip")
    batch = Batch()
    for (tensor,) in bodies:
        if form == "grpc":
            assert batch.add_grpc(grpc_request([tensor], raw=tensor.datatype == "FP16").SerializeToString())
        elif form == "json":
            assert batch.add_rest(json.dumps({"inputs": [json_entry(tensor, nested=True)]}).encode(), None)
        else:
            blob = tensor.raw()
            header = json.dumps({"inputs": [{"name": "x", "datatype": tensor.datatype, "shape": tensor.shape,
                                             "parameters": {"binary_data_size": len(blob)}}]}).encode()
            assert batch.add_rest(header + blob, str(len(header)).encode())
    got = {(datatype, array.shape[1:], array.dtype): (array, n) for _, datatype, array, n in _groups(batch)}
    for key in {(t.datatype, t.array.shape[1:], t.array.dtype) for (t,) in bodies}:
        rows = [t.array for (t,) in bodies if (t.datatype, t.array.shape[1:], t.array.dtype) == key]
        array, n = got.pop(key)
        assert n == len(rows) and array.tobytes() == np.concatenate(rows).tobytes()
    assert not got and batch.undecodable == 0


# --- regressions found by the properties above -------------------------------------------

def _body(name, data, shape=()) -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(shape), "data": data}]}).encode()


def test_a_scalar_input_whose_group_has_a_bad_body_keeps_the_good_ones():
    batch = Batch()
    assert batch.add_rest(_body("x", [1.0]), None) and batch.add_rest(_body("x", ["a"]), None)
    (name, _, array, bodies), = _groups(batch)
    assert (name, array.tolist(), bodies, batch.undecodable) == ("x", [1.0], 1, 1)


def test_a_body_whose_input_name_is_not_a_string_is_undecodable_not_raised():
    batch = Batch()
    assert not batch.add_rest(_body(["x"], [1.0]), None) and not batch.add_rest(_body(None, [1.0]), None)
    assert batch.undecodable == 2 and _groups(batch) == []
