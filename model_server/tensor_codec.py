"""Turning wire data into typed, shaped numpy arrays and back, for both front ends.

Two input forms exist in V2: element lists (JSON ``data``, gRPC typed ``contents``) and raw
little-endian bytes (the REST binary extension, gRPC ``raw_input_contents``). Both are
checked strictly: an integer tensor never silently truncates a float, a value never wraps
around, and the element count must match the shape. Errors name the tensor.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .datatypes import V2_TO_NUMPY, deserialize_bytes, serialize_bytes
from .errors import InvalidInput

__all__ = ["check_header", "from_values", "from_raw", "to_raw", "element_count", "MAX_ELEMENTS"]

MAX_ELEMENTS = 2**40  # per tensor, counting dimensions other than 0; far past any body limit


def check_header(name: Any, datatype: Any, shape: Any) -> tuple[str, str, tuple[int, ...]]:
    """Validate the name, datatype and shape of one input tensor."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("every input needs a non-empty string 'name'")
    if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
        raise InvalidInput(f"input {name!r}: datatype {datatype!r} is not a V2 datatype; expected one of {', '.join(V2_TO_NUMPY)}")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    # numpy cannot even describe an empty array whose other dimensions multiply past its index range.
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise InvalidInput(f"input {name!r}: shape {list(shape)} has dimensions multiplying past 2**40 elements")
    return name, datatype, tuple(int(d) for d in shape)


def element_count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _text(name: str, index: int, item: bytes) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"input {name!r}: BYTES element {index} is not UTF-8 text; ONNX Runtime string tensors hold text only"
        ) from None


def _strings_array(name: str, items: list) -> np.ndarray:
    """BYTES elements as an object array of ``str``: ONNX Runtime's Python API reads
    ``bytes`` objects as their repr, so raw bytes are decoded here, strictly."""
    array = np.empty(len(items), dtype=object)
    array[:] = [item if isinstance(item, str) else _text(name, i, item) for i, item in enumerate(items)]
    return array


def _flatten_strings(name: str, data: Sequence) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if isinstance(item, (str, bytes)):
                out.append(item)
            else:
                raise InvalidInput(f"input {name!r}: BYTES data must be strings, got {type(item).__name__}")
        else:
            stack.pop()
    return out


def from_values(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """An element list (flat or nested) as an array of ``shape``."""
    count = element_count(shape)
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__len__"):
        raise InvalidInput(f"input {name!r}: 'data' must be a list of values, got {type(data).__name__}")
    if datatype == "BYTES":
        flat = _flatten_strings(name, data)
        if len(flat) != count:
            raise InvalidInput(f"input {name!r}: {len(flat)} elements given, shape {list(shape)} needs {count}")
        return _strings_array(name, flat).reshape(shape)
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"input {name!r}: 'data' is not a regular array of numbers ({exc})") from None
    dtype = V2_TO_NUMPY[datatype]
    if raw.size != count:
        raise InvalidInput(f"input {name!r}: {raw.size} elements given, shape {list(shape)} needs {count}")
    if dtype.kind in "iu" and raw.dtype.kind in "fO":
        raw = _exact_integers(name, datatype, data, raw.shape)
    if raw.size:
        _check_kind(name, datatype, dtype, raw)
    return raw.astype(dtype, copy=False).reshape(shape)


def _exact_integers(name: str, datatype: str, data: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Integers past int64 (UINT64's top half) make numpy fall back to float64 or object;
    convert them exactly from the original values instead, still refusing real floats."""
    values = np.array(data, dtype=object).reshape(-1).tolist()
    if not all(type(v) is int for v in values):
        what = "floating-point numbers" if any(type(v) is float for v in values) else "non-integer values"
        raise InvalidInput(f"input {name!r}: {datatype} data must be integers, got {what}")
    info = np.iinfo(V2_TO_NUMPY[datatype])
    low, high = min(values, default=0), max(values, default=0)
    if low < info.min or high > info.max:
        raise InvalidInput(f"input {name!r}: value {low if low < info.min else high} is out of range for {datatype} [{info.min}, {info.max}]")
    return np.array(values, dtype=V2_TO_NUMPY[datatype]).reshape(shape)


def _check_kind(name: str, datatype: str, dtype: np.dtype, raw: np.ndarray) -> None:
    kind = raw.dtype.kind
    if dtype.kind == "b":
        if kind != "b":
            raise InvalidInput(f"input {name!r}: BOOL data must be true/false values")
    elif dtype.kind in "iu":
        if kind not in "iu":
            raise InvalidInput(f"input {name!r}: {datatype} data must be integers, got {_what(raw)}")
        info = np.iinfo(dtype)
        low, high = raw.min(), raw.max()
        if low < info.min or high > info.max:
            raise InvalidInput(f"input {name!r}: value {low if low < info.min else high} is out of range for {datatype} [{info.min}, {info.max}]")
    elif kind not in "iuf":
        raise InvalidInput(f"input {name!r}: {datatype} data must be numbers, got {_what(raw)}")


def _what(raw: np.ndarray) -> str:
    return {"f": "floating-point numbers", "b": "booleans", "U": "strings"}.get(raw.dtype.kind, "mixed values")


def from_raw(name: str, datatype: str, shape: tuple[int, ...], buffer: bytes | memoryview) -> np.ndarray:
    """Raw little-endian bytes (BYTES as length-prefixed records) as an array of ``shape``."""
    count = element_count(shape)
    if datatype == "BYTES":
        try:
            items = deserialize_bytes(buffer, count)
        except ValueError as exc:
            raise InvalidInput(f"input {name!r}: raw BYTES data {exc}") from None
        return _strings_array(name, items).reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input {name!r}: raw data is {len(buffer)} bytes, shape {list(shape)} of {datatype} needs {expected}"
        )
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


def to_raw(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        return serialize_bytes(array)
    return np.ascontiguousarray(array, dtype=V2_TO_NUMPY[datatype]).tobytes()
