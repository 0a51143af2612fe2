"""V2 (Open Inference Protocol) inputs: valid tensors with their JSON, binary-extension and
gRPC encodings written here independently of the product's encoders, and arbitrary
``ModelInferRequest`` messages whose every field may be wrong."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model_server.datatypes import V2_TO_NUMPY
from model_server.proto import grpc_service_pb2 as pb

from .json_values import EDGE_SCALARS, encode, json_values, mutated

__all__ = ["CONTENTS_FIELD", "DATATYPES", "Tensor", "grpc_request", "infer_messages", "tensors", "v2_bodies", "v2_documents"]

DATATYPES = tuple(V2_TO_NUMPY)
# The typed contents field of each datatype (FP16 has none: raw only), from the V2 spec.
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
                  "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
                  "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
_JUNK_DATATYPES = st.sampled_from(["", "fp32", "FP33", "BF16", "STRING", "FP32 ", "INT128"]) | st.text(max_size=6)


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    array: np.ndarray  # BYTES: an object array of str

    @property
    def shape(self) -> list[int]:
        return list(self.array.shape)

    def json_data(self, nested: bool) -> list:
        """The element list (JSON has no NaN: only finite tensors go through JSON)."""
        return self.array.tolist() if nested and self.array.ndim else self.array.reshape(-1).tolist()

    def raw(self) -> bytes:
        """Little-endian bytes; BYTES as 4-byte little-endian lengths, each followed by its UTF-8."""
        if self.datatype == "BYTES":
            items = [s.encode() for s in self.array.reshape(-1)]
            return b"".join(struct.pack("<I", len(b)) + b for b in items)
        return self.array.astype(V2_TO_NUMPY[self.datatype].newbyteorder("<")).tobytes()

    def equals(self, other: np.ndarray) -> bool:
        if other.shape != self.array.shape:
            return False
        if self.datatype == "BYTES":
            return other.reshape(-1).tolist() == self.array.reshape(-1).tolist()
        return other.dtype == V2_TO_NUMPY[self.datatype] and other.tobytes() == self.raw()  # bit-exact, NaN included


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)


@st.composite
def tensors(draw, datatypes=DATATYPES, finite: bool = True, name=None, max_side: int = 4, shapes=None) -> Tensor:
    datatype = draw(st.sampled_from(datatypes))
    shape = tuple(draw(shapes if shapes is not None else st.lists(st.integers(0, max_side), max_size=3)))
    if datatype == "BYTES":
        items = draw(st.lists(st.text(max_size=5), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        array = np.empty(len(items), dtype=object)
        array[:] = items
        array = array.reshape(shape)
    else:
        dtype = V2_TO_NUMPY[datatype]
        elements = hnp.from_dtype(dtype, allow_nan=not finite, allow_infinity=not finite) if dtype.kind == "f" else None
        array = draw(hnp.arrays(dtype, shape, elements=elements))
    return Tensor(name if name is not None else draw(NAMES), datatype, array)


def json_entry(tensor: Tensor, nested: bool) -> dict:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape, "data": tensor.json_data(nested)}


@st.composite
def v2_documents(draw) -> dict:
    """A valid V2 JSON request document (finite tensors, element lists)."""
    inputs = draw(st.lists(tensors(), min_size=1, max_size=3))
    doc: dict = {"inputs": [json_entry(t, draw(st.booleans())) for t in inputs]}
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": draw(st.booleans())}} for n in draw(st.lists(NAMES, max_size=2))]
    if draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": draw(st.booleans())}
    return doc


@st.composite
def v2_bodies(draw) -> tuple[bytes, str | None]:
    """(body, Inference-Header-Content-Length) for infer requests of every kind: valid JSON,
    valid binary, mutated documents, mutated binary headers, arbitrary JSON and bytes."""
    kind = draw(st.sampled_from(["mutated", "mutated", "binary", "json", "bytes"]))
    if kind == "mutated":
        return encode(draw(mutated(v2_documents()))), None
    if kind == "json":
        return encode(draw(json_values())), None
    if kind == "bytes":
        return draw(st.binary(max_size=256)), draw(st.none() | st.integers(-5, 300).map(str) | st.text(max_size=4))
    # The binary extension with its sizes, offsets and header length perturbed.
    inputs = draw(st.lists(tensors(finite=False), min_size=1, max_size=3))
    blobs = [t.raw() for t in inputs]
    entries = [{"name": t.name, "datatype": t.datatype, "shape": t.shape, "parameters": {"binary_data_size": len(b)}}
               for t, b in zip(inputs, blobs)]
    if draw(st.booleans()):
        i = draw(st.integers(0, len(entries) - 1))
        entries[i]["parameters"]["binary_data_size"] = draw(EDGE_SCALARS | st.integers(-3, 3).map(lambda d: len(blobs[i]) + d))
    header = json.dumps({"inputs": entries}).encode()
    body = header + b"".join(blobs) + draw(st.sampled_from([b"", b"\0", b"extra"]))
    length = len(header) + draw(st.sampled_from([0, 0, 0, -1, 1, -len(header), 10**6]))
    return body, draw(st.sampled_from([str(length), str(length), f" {length}", f"{length}.0", "0x10", ""]))


_PARAMETER = st.one_of(
    st.booleans().map(lambda v: pb.InferParameter(bool_param=v)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: pb.InferParameter(int64_param=v)),
    st.text(max_size=6).map(lambda v: pb.InferParameter(string_param=v)),
)
_CONTENTS = {
    "bool_contents": st.booleans(), "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1), "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1), "fp32_contents": st.floats(width=32), "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=6),
}
_DIM = st.integers(-3, 6) | st.integers(-(2**63), 2**63 - 1) | st.sampled_from([2**20, 2**40, 2**41, 2**62, 2**63 - 1])


@st.composite
def infer_messages(draw) -> pb.ModelInferRequest:
    """A ``ModelInferRequest`` whose every field may be wrong."""
    message = pb.ModelInferRequest(model_name=draw(st.text(max_size=6)), id=draw(st.text(max_size=6)))
    for _ in range(draw(st.integers(0, 3))):
        tensor = message.inputs.add(name=draw(st.text(max_size=4)), datatype=draw(st.sampled_from(DATATYPES) | _JUNK_DATATYPES),
                                    shape=draw(st.lists(_DIM, max_size=4)))
        for field in draw(st.lists(st.sampled_from(sorted(_CONTENTS)), max_size=2, unique=True)):
            getattr(tensor.contents, field).extend(draw(st.lists(_CONTENTS[field], max_size=8)))
    message.raw_input_contents.extend(draw(st.lists(st.binary(max_size=48), max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        out = message.outputs.add(name=draw(st.text(max_size=4)))
        for key in draw(st.lists(st.sampled_from(["classification", "binary_data", "x"]), max_size=2, unique=True)):
            out.parameters[key].CopyFrom(draw(_PARAMETER))
    return message


def grpc_request(inputs: list[Tensor], raw: bool, model: str = "m") -> pb.ModelInferRequest:
    """Valid tensors as a ``ModelInferRequest``, raw or typed (FP16 always needs raw)."""
    message = pb.ModelInferRequest(model_name=model)
    for t in inputs:
        tensor = message.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        if not raw:
            values = [s.encode() for s in t.array.reshape(-1)] if t.datatype == "BYTES" else t.array.reshape(-1).tolist()
            getattr(tensor.contents, CONTENTS_FIELD[t.datatype]).extend(values)
    if raw:
        message.raw_input_contents.extend(t.raw() for t in inputs)
    return message
