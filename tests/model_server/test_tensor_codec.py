"""Wire data to arrays and back: exact, strict, and naming the tensor on error."""

from __future__ import annotations

import numpy as np
import pytest

from model_server.datatypes import deserialize_bytes, serialize_bytes
from model_server.errors import InvalidInput
from model_server.tensor_codec import from_raw, from_values, to_raw


def test_bytes_records_round_trip_including_empty_and_binary_elements():
    items = [b"", b"\x00\xff", "é".encode()]
    blob = serialize_bytes(np.array(items, dtype=object))
    assert blob[:4] == b"\0\0\0\0"
    assert deserialize_bytes(blob, 3) == items


@pytest.mark.parametrize("blob,count,message", [
    (b"\x01\x00\x00", 1, "holds 0 BYTES elements, expected 1"),
    (b"\x01\x00\x00\x00ab", 1, "has 1 bytes left after 1 BYTES elements"),
])
def test_malformed_bytes_records_are_refused(blob, count, message):
    with pytest.raises(ValueError, match=message):
        deserialize_bytes(blob, count)


def test_uint64_values_past_int64_are_exact_in_json():
    top = 2**64 - 1
    array = from_values("x", "UINT64", (1, 2), [[top, 1]])
    assert array.dtype == np.uint64 and array.tolist() == [[top, 1]]
    with pytest.raises(InvalidInput, match="value 18446744073709551616 is out of range for UINT64"):
        from_values("x", "UINT64", (1, 2), [[top + 1, 1]])


def test_nested_and_flat_json_data_give_the_same_array():
    flat = from_values("x", "FP32", (2, 2), [1, 2, 3, 4])
    nested = from_values("x", "FP32", (2, 2), [[1, 2], [3, 4]])
    assert flat.dtype == np.float32 and np.array_equal(flat, nested)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT8", "UINT16", "INT64", "BOOL"])
def test_raw_round_trip_is_exact(datatype):
    dtype = {"BOOL": np.bool_}.get(datatype, np.dtype(datatype.lower().replace("fp", "float")))
    array = (np.arange(6) % 2 == 0) if datatype == "BOOL" else np.arange(6).astype(dtype)
    array = array.reshape(2, 3)
    back = from_raw("x", datatype, (2, 3), to_raw(datatype, array))
    assert back.dtype == array.dtype and np.array_equal(back, array)
