"""The stats stream's messages (``StatsReport`` / ``InputStats`` / ``FeatureStats``): real
statistics summarized from arrays, fields set to the edges of their protobuf types, and KLL
sketch bytes that are valid, damaged where the library reads its layout, or random."""

from __future__ import annotations

import math
import struct

import datasketches
import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from drift.proto import stats_pb2 as pb
from drift.sketch import InputSketch

__all__ = ["MODELS", "VERSIONS", "feature_stats", "input_stats", "kll_bytes", "proto_edge_variants", "reports", "valid_input_stats"]

MODELS, VERSIONS, INPUTS = ["m"], ["1", "2"], ["x", "y"]
U64 = st.sampled_from([0, 1, 2, 99, 2**32, 2**53 + 1, 2**62, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
DOUBLES = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf]) | st.floats()
_DATATYPES = st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES", "UINT8"]) | st.sampled_from(["", "fp32", "BF16"])


def _serialized(k: int, values: list[float]) -> bytes:
    sketch = datasketches.kll_doubles_sketch(k)
    if values:
        sketch.update(np.asarray(values, dtype=np.float64))
    return sketch.serialize()


@st.composite
def kll_bytes(draw, damaged: bool | None = None) -> bytes:
    """A sketch the library serialized; unless ``damaged`` is False, sometimes damaged."""
    values = draw(st.sampled_from([0, 1, 5, 300, 3000]).map(lambda n: list(np.linspace(0, 1, n)))
                  | st.lists(st.floats(-1e6, 1e6), max_size=40))
    data = bytearray(_serialized(draw(st.sampled_from([8, 200, 1000])), values))
    if damaged is False or (damaged is None and draw(st.booleans())):
        return bytes(data)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["byte", "byte", "offset", "offset", "double", "cut", "insert", "append"]))
        # Most damage goes to the preamble, the header and the level offsets, where the layout is.
        at = draw(st.integers(0, min(len(data), 40)) | st.integers(0, len(data)))
        if action == "byte" and at < len(data):
            data[at] = draw(st.sampled_from([0, 1, 2, 4, 5, 7, 8, 15, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif action == "offset" and len(data) >= 24:  # one level offset (uint32 from byte 20) set to an edge
            level = draw(st.integers(0, max(0, min(data[18], (len(data) - 24) // 4))))
            struct.pack_into("<I", data, 20 + 4 * level, draw(st.sampled_from([0, 1, 199, 521, 4096, 2**31, 2**32 - 1])
                                                             | st.integers(0, 2**32 - 1)))
        elif action == "double" and at + 8 <= len(data):
            data[at:at + 8] = struct.pack("<d", draw(DOUBLES))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = bytes(draw(st.sampled_from([1, 4, 8])))
        else:
            data += draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


_CATEGORIES = st.dictionaries(st.text(max_size=4), U64, max_size=4) | st.just({str(i): 1 for i in range(1001)})


@st.composite
def feature_stats(draw) -> pb.FeatureStats:
    msg = pb.FeatureStats(index=draw(st.sampled_from([0, 1, 2, 2047, 2048, 2**32 - 1]) | st.integers(0, 2**32 - 1)),
                          count=draw(U64), missing=draw(U64), other=draw(U64), categorical=draw(st.booleans()),
                          mean=draw(DOUBLES), m2=draw(DOUBLES), min=draw(DOUBLES), max=draw(DOUBLES))
    if draw(st.booleans()):
        msg.kll = draw(kll_bytes() | st.binary(max_size=40))
    msg.categories.update(draw(_CATEGORIES))
    return msg


@st.composite
def input_stats(draw) -> pb.InputStats:
    """Every field free: what a broken or hostile sidecar could send."""
    msg = pb.InputStats(model=draw(st.sampled_from(MODELS + [""])), version=draw(st.sampled_from(VERSIONS + [""])),
                        input=draw(st.sampled_from(INPUTS)), datatype=draw(_DATATYPES), rows=draw(U64))
    msg.features.extend(draw(st.lists(feature_stats(), max_size=3)))
    msg.feature_names.extend(draw(st.lists(st.text(max_size=4), max_size=3) | st.just(["f"] * 2049)))
    return msg


@st.composite
def valid_input_stats(draw) -> pb.InputStats:
    """Statistics of a real array, as a sidecar's tap builds them."""
    datatype = draw(st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES"]))
    shape = (draw(st.integers(1, 30)), draw(st.integers(1, 3)))
    if datatype == "BYTES":
        array = np.array(draw(st.lists(st.binary(max_size=3), min_size=shape[0] * shape[1], max_size=shape[0] * shape[1])),
                         dtype=object).reshape(shape)
    else:
        dtype = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_}[datatype]
        # FP64 magnitudes past ~1e154 overflow the sum of squares (m2), which the detector then
        # refuses as non-finite: a known limit, kept out of the round trip.
        elements = st.floats(-1e150, 1e150) | st.sampled_from([math.nan, math.inf, -math.inf]) if datatype == "FP64" else None
        array = draw(hnp.arrays(dtype, shape, elements=elements))
    sketch = InputSketch.from_array(array, datatype)
    return sketch.to_proto(draw(st.sampled_from(MODELS)), draw(st.sampled_from(VERSIONS)), draw(st.sampled_from(INPUTS)))


@st.composite
def reports(draw) -> pb.StatsReport:
    report = pb.StatsReport(source=draw(st.sampled_from(["s1", "s2", ""]) | st.text(max_size=4)), sequence=draw(U64),
                            start_unix=draw(DOUBLES), end_unix=draw(DOUBLES), dropped_reports=draw(U64))
    report.inputs.extend(draw(st.lists(valid_input_stats() | valid_input_stats() | input_stats(), max_size=3)))
    return report


_PROTO_EDGES = {
    FieldDescriptor.TYPE_UINT64: [0, 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1],
    FieldDescriptor.TYPE_UINT32: [0, 1, 2047, 2048, 2**31, 2**32 - 1],
    FieldDescriptor.TYPE_DOUBLE: [0.0, -0.0, -1.0, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf],
    FieldDescriptor.TYPE_STRING: ["", "x", "\x00", "é", "x" * 300],
    FieldDescriptor.TYPE_BYTES: [b"", b"\x00", b"\xff" * 16],
    FieldDescriptor.TYPE_BOOL: [True, False],
}


def _scalar_fields(message, path: tuple = ()):
    for field in message.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.label == FieldDescriptor.LABEL_REPEATED and not field.message_type.GetOptions().map_entry:
                for i, item in enumerate(getattr(message, field.name)):
                    yield from _scalar_fields(item, path + ((field.name, i),))
        elif field.label != FieldDescriptor.LABEL_REPEATED:
            yield path, field


def proto_edge_variants(message):
    """Every singular scalar field of ``message`` and of the messages it repeats, set in turn
    to each edge of its protobuf type. Yields (a description of the change, message)."""
    data = message.SerializeToString()
    for path, field in _scalar_fields(message):
        for value in _PROTO_EDGES[field.type]:
            variant = type(message).FromString(data)
            target = variant
            for name, i in path:
                target = getattr(target, name)[i]
            setattr(target, field.name, value)
            where = ".".join(f"{name}[{i}]" for name, i in path)
            yield f"{where}.{field.name} = {value!r:.40}".lstrip("."), variant
