"""V2 datatypes: names, numpy dtypes, ONNX type strings, and the BYTES wire format.

The V2 protocol names tensor element types (``FP32``, ``BYTES`` ...); ONNX Runtime reports
them as ``tensor(float)`` and takes numpy arrays. BYTES travel on the wire as a 4-byte
little-endian length followed by the bytes, element after element.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = [
    "V2_TO_NUMPY",
    "ONNX_TO_V2",
    "GRPC_CONTENTS_FIELD",
    "numpy_dtype",
    "v2_datatype_of",
    "serialize_bytes",
    "deserialize_bytes",
]

# Little-endian explicitly: the wire format is little-endian whatever the host is.
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

# ONNX Runtime's type strings for the element types it can feed from numpy. BF16 has no
# numpy dtype, so ONNX Runtime's Python API cannot take it; models using it are refused
# at load with a clear error.
ONNX_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# The gRPC typed-contents field of each datatype (``InferTensorContents``). FP16 has none in
# the protocol: it travels raw only.
GRPC_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_NUMPY_TO_V2 = {dt: name for name, dt in V2_TO_NUMPY.items() if name != "BYTES"}
_LEN = struct.Struct("<I")


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype for a V2 datatype name; ``KeyError`` for an unknown name."""
    return V2_TO_NUMPY[datatype]


def v2_datatype_of(array: np.ndarray) -> str:
    """The V2 datatype name of an array ONNX Runtime returned."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    return _NUMPY_TO_V2[array.dtype]


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    return bytes(item)  # numpy bytes_/memoryview


def serialize_bytes(array: np.ndarray) -> bytes:
    """Row-major BYTES elements as length-prefixed records."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = _as_bytes(item)
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(buffer: bytes | memoryview, count: int) -> list[bytes]:
    """Parse exactly ``count`` length-prefixed records; ``ValueError`` when the buffer
    is truncated, holds more or fewer records, or has trailing bytes."""
    view = memoryview(buffer)
    out: list[bytes] = []  # grown as records are read: ``count`` comes from a shape and may claim billions
    offset = 0
    end = len(view)
    for i in range(count):
        if offset + 4 > end:
            raise ValueError(f"holds {i} BYTES elements, expected {count}")
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise ValueError(f"element {i} claims {length} bytes but only {end - offset} remain")
        out.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != end:
        raise ValueError(f"has {end - offset} bytes left after {count} BYTES elements")
    return out
