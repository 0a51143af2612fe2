"""Shadow answer comparison: decode two V2 inference answers and say how far apart they are.

Envoy drops a mirrored request's answer; the sidecar keeps it and compares it with the
primary's, off the request path. Answers come in any of the three V2 encodings (REST JSON,
REST binary tensor extension, gRPC ``ModelInferResponse``) and decode to ``{output name:
numpy array}``; ``compare`` then reports label agreement per row and the largest absolute
and relative differences. Everything is vectorized: this runs for every mirrored request.

This module imports numpy, so the sidecar imports it only when comparison is on. It reuses
the model server's datatype table and message classes, which import neither ONNX Runtime,
aiohttp nor grpc.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import orjson
from google.protobuf.message import DecodeError

from model_server.datatypes import GRPC_CONTENTS_FIELD, V2_TO_NUMPY, deserialize_bytes
from model_server.proto import grpc_service_pb2 as pb

from .errors import CompareError

__all__ = ["Comparison", "compare", "decode_rest", "decode_grpc", "REL_FLOOR"]

# Magnitudes below this count as this in the relative difference, so zeros and tiny
# probabilities (1e-9 vs 3e-9) do not read as 200% apart.
REL_FLOOR = 1e-6

_HEADER_LENGTH = b"inference-header-content-length"
_NUMPY_TO_V2 = {dtype: name for name, dtype in V2_TO_NUMPY.items() if name != "BYTES"}
_LABEL_WORDS = ("label", "class")


@dataclass(frozen=True, slots=True)
class Comparison:
    """How a shadow answer differs from the primary's.

    ``rows``/``agreed_rows``: rows compared for label agreement and rows that agree (0/0
    when neither answer has a classifier output; ``compare`` says which output counts).
    ``max_abs``: the largest ``|a - b|`` over the numeric outputs both answers have with the
    same shape (a label vector counted for agreement aside); ``max_rel``: the largest
    ``|a - b| / max(|a|, |b|, REL_FLOOR)`` over the same elements, symmetric and between 0
    and 2 for finite values. Both are NaN when nothing numeric was compared. Equal infinities, and NaN on
    both sides, count as equal; a NaN or infinity the other side does not match counts as
    an infinite difference. ``mismatch``: what differs in output names, shapes or
    datatypes, or None. ``label_output``: the output agreement was counted on, or None.
    """

    rows: int
    agreed_rows: int
    max_abs: float
    max_rel: float
    mismatch: str | None = None
    label_output: str | None = None

    @property
    def agreement(self) -> float:
        """The share of rows that agree; NaN when no rows were compared."""
        return self.agreed_rows / self.rows if self.rows else math.nan


# --- decoding -------------------------------------------------------------------------


def decode_rest(headers: Iterable[tuple[bytes, bytes]], body: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """The outputs of a V2 REST answer, JSON or binary tensor extension.

    ``headers`` are the HTTP response's (name, value) pairs; ``Inference-Header-Content-Length``
    (any case) marks where the JSON ends and raw output bytes begin. A gzip or deflate
    ``Content-Encoding`` is undone first. Raises ``CompareError`` naming the field at fault.
    """
    json_length: bytes | None = None
    encoding = b""
    for name, value in headers:
        lowered = name.lower()
        if lowered == _HEADER_LENGTH and json_length is None:
            json_length = value
        elif lowered == b"content-encoding":
            encoding = value.strip().lower()
    body = _decompress(encoding, body)
    view = memoryview(body)
    json_end = len(view) if json_length is None else _json_end(json_length, len(view))
    try:
        doc = orjson.loads(view[:json_end])
    except orjson.JSONDecodeError as exc:
        raise CompareError(f"REST answer is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CompareError(f"REST answer must be a JSON object, got {type(doc).__name__}")
    if "error" in doc and "outputs" not in doc:
        raise CompareError(f"REST answer is an error: {doc['error']!r}")
    items = doc.get("outputs")
    if not isinstance(items, list):
        raise CompareError("REST answer has no 'outputs' list")

    outputs: dict[str, np.ndarray] = {}
    offset = json_end
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CompareError(f"outputs[{i}] must be an object")
        name, datatype, shape = _header(item.get("name"), item.get("datatype"), item.get("shape"), f"outputs[{i}]")
        params = item.get("parameters")
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise CompareError(f"output {name!r}: 'parameters' must be an object")
        size = params.get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise CompareError(f"output {name!r}: has neither 'data' nor 'parameters.binary_data_size'")
            array = _from_values(name, datatype, shape, item["data"])
        else:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise CompareError(f"output {name!r}: binary_data_size must be a non-negative integer, got {size!r}")
            if offset + size > len(view):
                raise CompareError(
                    f"output {name!r}: binary_data_size {size} runs past the end of the body ({len(view) - offset} bytes left)"
                )
            array = _from_raw(name, datatype, shape, view[offset : offset + size])
            offset += size
        _add(outputs, name, array)
    if offset != len(view):
        raise CompareError(f"REST answer has {len(view) - offset} bytes beyond the JSON header and the binary outputs it declares")
    return outputs


def decode_grpc(body: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """The outputs of a serialized ``inference.ModelInferResponse``, from
    ``raw_output_contents`` when present, else from each output's typed ``contents``.
    The message may still carry its 5-byte gRPC frame prefix: no protobuf message starts
    with a 0 or 1 byte (field number 0), so the prefix is told apart safely."""
    body = bytes(body)
    if len(body) >= 5 and body[0] in (0, 1) and int.from_bytes(body[1:5], "big") == len(body) - 5:
        if body[0] == 1:
            raise CompareError("gRPC answer is a compressed message; the sidecar compares uncompressed ones only")
        body = body[5:]
    try:
        message = pb.ModelInferResponse.FromString(body)
    except DecodeError as exc:
        raise CompareError(f"gRPC answer is not a ModelInferResponse: {exc}") from None
    raw = message.raw_output_contents
    if raw and len(raw) != len(message.outputs):
        raise CompareError(f"gRPC answer has {len(raw)} raw_output_contents for {len(message.outputs)} outputs")
    outputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(message.outputs):
        name, datatype, shape = _header(tensor.name, tensor.datatype, list(tensor.shape), f"outputs[{i}]")
        if raw:
            array = _from_raw(name, datatype, shape, raw[i])
        else:
            field = GRPC_CONTENTS_FIELD.get(datatype)
            if field is None:
                raise CompareError(f"output {name!r}: {datatype} has no typed contents field and raw_output_contents is empty")
            values = getattr(tensor.contents, field)
            array = _from_values(name, datatype, shape, list(values))
        _add(outputs, name, array)
    return outputs


def _decompress(encoding: bytes, body: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    if encoding in (b"", b"identity"):
        return body
    if encoding not in (b"gzip", b"x-gzip", b"deflate"):
        raise CompareError(f"REST answer has Content-Encoding {encoding.decode('latin-1')!r}; only gzip and deflate are undone")
    try:
        # 47: zlib or gzip header, detected; deflate without a header needs -15.
        return zlib.decompress(body, 47) if encoding != b"deflate" else _inflate(body)
    except zlib.error as exc:
        raise CompareError(f"REST answer's {encoding.decode()} body does not decompress: {exc}") from None


def _inflate(body: bytes | bytearray | memoryview) -> bytes:
    try:
        return zlib.decompress(body)
    except zlib.error:
        return zlib.decompress(body, -15)


def _json_end(value: bytes, body_length: int) -> int:
    try:
        length = int(value)
    except ValueError:
        raise CompareError(f"Inference-Header-Content-Length must be an integer, got {value!r}") from None
    if not 0 < length <= body_length:
        raise CompareError(f"Inference-Header-Content-Length is {length} but the body is {body_length} bytes")
    return length


def _header(name: Any, datatype: Any, shape: Any, where: str) -> tuple[str, str, tuple[int, ...]]:
    if not isinstance(name, str) or not name:
        raise CompareError(f"{where}: needs a non-empty string 'name'")
    if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
        raise CompareError(f"output {name!r}: datatype {datatype!r} is not a V2 datatype")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise CompareError(f"output {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    return name, datatype, tuple(shape)


def _add(outputs: dict[str, np.ndarray], name: str, array: np.ndarray) -> None:
    if name in outputs:
        raise CompareError(f"output {name!r} appears twice")
    outputs[name] = array


def _from_raw(name: str, datatype: str, shape: tuple[int, ...], buffer: bytes | memoryview) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        try:
            items = deserialize_bytes(buffer, count)
        except ValueError as exc:
            raise CompareError(f"output {name!r}: raw BYTES data {exc}") from None
        return _objects(items).reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if len(buffer) != count * dtype.itemsize:
        raise CompareError(
            f"output {name!r}: raw data is {len(buffer)} bytes, shape {list(shape)} of {datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


def _from_values(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """An element list, flat or nested, as an array of ``shape``. Strict, so that a decoding
    quirk never hides (or invents) a difference: no float-to-int truncation, no wrapping."""
    if not isinstance(data, list):
        raise CompareError(f"output {name!r}: 'data' must be a list, got {type(data).__name__}")
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).reshape(-1) if data else np.empty(0, dtype=object)
        if flat.size != count:
            raise CompareError(f"output {name!r}: {flat.size} elements for shape {list(shape)}, which needs {count}")
        try:
            items = [item if isinstance(item, bytes) else item.encode("utf-8") for item in flat.tolist()]
        except AttributeError:
            raise CompareError(f"output {name!r}: BYTES data must be strings") from None
        return _objects(items).reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    try:
        raw = np.asarray(data)
        if raw.dtype.kind == "O" and dtype.kind == "f":
            raw = np.asarray(data, dtype=dtype)  # JSON null (NaN, infinity) becomes NaN
    except (ValueError, TypeError) as exc:
        raise CompareError(f"output {name!r}: 'data' is not a regular array of numbers ({exc})") from None
    if raw.size != count:
        raise CompareError(f"output {name!r}: {raw.size} elements for shape {list(shape)}, which needs {count}")
    if count == 0:
        return np.empty(shape, dtype=dtype)
    kind = raw.dtype.kind
    if dtype.kind == "b":
        if kind != "b":
            raise CompareError(f"output {name!r}: BOOL data must be true/false")
    elif dtype.kind in "iu":
        if kind in "fO":
            raw = _exact_integers(name, datatype, data)
        elif kind not in "iu":
            raise CompareError(f"output {name!r}: {datatype} data must be integers")
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise CompareError(f"output {name!r}: a value is out of range for {datatype} [{info.min}, {info.max}]")
    elif kind not in "biuf":
        raise CompareError(f"output {name!r}: {datatype} data must be numbers")
    return raw.astype(dtype, copy=False).reshape(shape)


def _exact_integers(name: str, datatype: str, data: list) -> np.ndarray:
    """Integers past int64 make numpy fall back to float64 or object: rebuild them exactly
    from the Python values, still refusing real floats. Rare, so a Python loop is fine."""
    values = np.array(data, dtype=object).reshape(-1).tolist()
    if not all(type(v) is int for v in values):
        raise CompareError(f"output {name!r}: {datatype} data must be integers")
    info = np.iinfo(V2_TO_NUMPY[datatype])
    if min(values) < info.min or max(values) > info.max:
        raise CompareError(f"output {name!r}: a value is out of range for {datatype} [{info.min}, {info.max}]")
    return np.array(values, dtype=V2_TO_NUMPY[datatype])


def _objects(items: list[bytes]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


# --- comparing ------------------------------------------------------------------------


def compare(primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray]) -> Comparison:
    """Compare a shadow answer with the primary's (decoded as above).

    Label agreement is counted per row (a batched answer counts each row) on one output,
    among those both answers have with the same shape:

    1. a *label vector* — shape [N] or [N, 1], integer, or BYTES when named like a label —
       compared value by value; a name containing "label" or "class" wins, then integer
       over BYTES, then name order;
    2. otherwise the first (by name) floating-point output of shape [N, C] with C >= 2,
       taken as per-class scores and compared by argmax over the last axis per row.

    With neither, ``rows`` is 0. ``max_abs`` and ``max_rel`` cover every numeric (BOOL,
    integer, float) output the answers share with equal shapes, datatypes aside, except a
    label vector chosen in step 1: class ids 0 and 2 are not "2 apart", and agreement
    already measures them.
    """
    problems = [f"output {name!r} only in primary" for name in sorted(primary.keys() - shadow.keys())]
    problems += [f"output {name!r} only in shadow" for name in sorted(shadow.keys() - primary.keys())]
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for name in sorted(primary.keys() & shadow.keys()):
        a, b = primary[name], shadow[name]
        if a.shape != b.shape:
            problems.append(f"output {name!r} shape {list(a.shape)} vs {list(b.shape)}")
            continue
        if a.dtype != b.dtype:
            problems.append(f"output {name!r} datatype {_v2(a.dtype)} vs {_v2(b.dtype)}")
        pairs.append((name, a, b))

    rows = agreed = 0
    label, by_argmax = _label_output(pairs)
    if label is not None:
        _, a, b = label
        same = np.argmax(a, axis=-1) == np.argmax(b, axis=-1) if by_argmax else a.reshape(-1) == b.reshape(-1)
        rows, agreed = int(same.size), int(np.count_nonzero(same))

    max_abs = max_rel = -math.inf
    for name, a, b in pairs:
        if a.size and a.dtype.kind in "biuf" and b.dtype.kind in "biuf" and not (label and name == label[0] and not by_argmax):
            worst_abs, worst_rel = _worst(a, b)
            max_abs, max_rel = max(max_abs, worst_abs), max(max_rel, worst_rel)
    if max_abs == -math.inf:
        max_abs = max_rel = math.nan
    return Comparison(rows, agreed, max_abs, max_rel, "; ".join(problems) or None, label[0] if label else None)


def _worst(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The largest absolute and relative differences between two same-shaped arrays, in
    float64 (no integer overflow, no FP16 rounding)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, FP64 overflow: handled below
        diff = np.subtract(a, b, dtype=np.float64)
        np.abs(diff, out=diff)
        scale = np.fmax(np.abs(a, dtype=np.float64), np.abs(b, dtype=np.float64))  # fmax: NaN loses
        np.fmax(scale, REL_FLOOR, out=scale)
        if not math.isfinite(diff.max()):
            # Some NaN or infinity: equal values (NaN on both sides included) differ by 0,
            # anything else non-finite by infinity.
            same = (a == b) | (np.isnan(a) & np.isnan(b))
            diff[same] = 0.0
            diff[np.isnan(diff)] = math.inf
            rel = diff / scale
            rel[np.isnan(rel)] = math.inf
        else:
            rel = np.divide(diff, scale, out=scale)
    return float(diff.max()), float(rel.max())


def _label_output(pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> tuple[tuple[str, np.ndarray, np.ndarray] | None, bool]:
    """The output to count agreement on, and whether by argmax (scores) or by value."""
    vectors = []
    for name, a, b in pairs:
        if a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1):
            labelled = any(word in name.lower() for word in _LABEL_WORDS)
            if a.dtype.kind in "iu" and b.dtype.kind in "iu":
                vectors.append((not labelled, 0, name, a, b))
            elif labelled and a.dtype.kind == "O" and b.dtype.kind == "O":
                vectors.append((not labelled, 1, name, a, b))
    if vectors:
        return min(vectors, key=lambda v: v[:3])[2:], False
    for name, a, b in pairs:  # already in name order
        if a.ndim == 2 and a.shape[1] >= 2 and a.dtype.kind == "f" and b.dtype.kind == "f":
            return (name, a, b), True
    return None, False


def _v2(dtype: np.dtype) -> str:
    return "BYTES" if dtype.kind in "OSU" else _NUMPY_TO_V2.get(dtype, str(dtype))
