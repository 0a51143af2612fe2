"""Shadow answer comparison: every encoding decodes exactly, agreement and differences are
counted right, and undecodable answers fail naming the problem."""

from __future__ import annotations

import gzip
import math
import zlib

import numpy as np
import orjson
import pytest

from model_server import grpc_codec, rest_codec
from model_server.datatypes import V2_TO_NUMPY
from model_server.proto import grpc_service_pb2 as pb
from model_server.tensors import InferOutput, InferResponse
from sidecar.compare import REL_FLOOR, Comparison, compare, decode_grpc, decode_rest
from sidecar.errors import CompareError, SidecarError

_LENGTH = b"inference-header-content-length"


def _samples(datatype: str) -> np.ndarray:
    """A [2, 3] tensor of ``datatype`` with its edge values."""
    if datatype == "BYTES":
        return np.array([[b"", b"abc", "é".encode()], [b"x" * 300, b"0", b" "]], dtype=object)
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind == "b":
        values = [True, False, True, False, False, True]
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = [info.min, info.max, 0, 1, info.max - 1, info.min // 2]
    else:
        info = np.finfo(dtype)
        values = [0.1, -2.5, float(info.max), float(info.tiny), 1e-3, -0.0]
    return np.array(values, dtype=dtype).reshape(2, 3)


def _response(outputs: dict[str, np.ndarray], binary: bool = False) -> InferResponse:
    return InferResponse("m", "1", "req-1", [
        InferOutput(name, "BYTES" if a.dtype.kind == "O" else _v2(a), a, binary) for name, a in outputs.items()
    ])


def _v2(array: np.ndarray) -> str:
    return next(name for name, dtype in V2_TO_NUMPY.items() if dtype == array.dtype)


def _rest(outputs: dict[str, np.ndarray], binary: bool = False) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body as the model server's REST front end writes them."""
    body, json_length = rest_codec.encode_response(_response(outputs, binary))
    headers = [(b"content-type", b"application/json")]
    if json_length is not None:
        headers = [(b"content-type", b"application/octet-stream"), (_LENGTH, str(json_length).encode())]
    return headers, body


def _grpc(outputs: dict[str, np.ndarray]) -> bytes:
    return grpc_codec.encode_response(_response(outputs)).SerializeToString()


def _grpc_typed(outputs: dict[str, np.ndarray]) -> bytes:
    """Typed ``contents`` instead of raw bytes, as other V2 servers may answer."""
    fields = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
              "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
              "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
    message = pb.ModelInferResponse(model_name="m", model_version="1")
    for name, array in outputs.items():
        datatype = "BYTES" if array.dtype.kind == "O" else _v2(array)
        tensor = message.outputs.add(name=name, datatype=datatype, shape=array.shape)
        getattr(tensor.contents, fields[datatype]).extend(array.reshape(-1).tolist())
    return message.SerializeToString()


def _assert_same(decoded: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(decoded) == list(expected)
    for name, array in expected.items():
        got = decoded[name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        assert got.tolist() == array.tolist(), name


# --- decoding ---------------------------------------------------------------------------

DATATYPES = list(V2_TO_NUMPY)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_rest_json_round_trip(datatype):
    outputs = {"y": _samples(datatype), "shape": np.array([2, 3], dtype=np.int64)}
    _assert_same(decode_rest(*_rest(outputs)), outputs)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_rest_binary_round_trip(datatype):
    outputs = {"y": _samples(datatype), "shape": np.array([2, 3], dtype=np.int64)}
    if datatype == "BYTES":  # binary BYTES need not be text
        outputs["y"][1, 1] = b"\xff\x00\x01"
    headers, body = _rest(outputs, binary=True)
    _assert_same(decode_rest(headers, body), outputs)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_grpc_raw_round_trip(datatype):
    outputs = {"y": _samples(datatype), "shape": np.array([2, 3], dtype=np.int64)}
    _assert_same(decode_grpc(_grpc(outputs)), outputs)


def test_grpc_answer_in_its_length_prefixed_frame():
    outputs = {"y": _samples("FP32")}
    message = _grpc(outputs)
    _assert_same(decode_grpc(b"\0" + len(message).to_bytes(4, "big") + message), outputs)
    with pytest.raises(CompareError, match="compressed message"):
        decode_grpc(b"\1" + len(message).to_bytes(4, "big") + message)


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "FP16"])
def test_grpc_typed_contents_round_trip(datatype):
    outputs = {"y": _samples(datatype), "empty": np.zeros((0, 3), dtype=np.float32)}
    _assert_same(decode_grpc(_grpc_typed(outputs)), outputs)


def test_json_and_binary_outputs_mix_in_one_answer():
    probabilities = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    label = np.array([1, 0], dtype=np.int64)
    response = InferResponse("m", "1", None, [
        InferOutput("probabilities", "FP32", probabilities, True),
        InferOutput("label", "INT64", label, False),
        InferOutput("names", "BYTES", np.array([b"b", b"a"], dtype=object), True),
    ])
    body, json_length = rest_codec.encode_response(response)
    decoded = decode_rest([(b"Inference-Header-Content-Length", str(json_length).encode())], body)
    _assert_same(decoded, {"probabilities": probabilities, "label": label, "names": np.array([b"b", b"a"], dtype=object)})


def test_nested_json_data_and_nulls():
    body = orjson.dumps({"outputs": [
        {"name": "p", "datatype": "FP32", "shape": [2, 2], "data": [[1, None], [3.5, 4]]},
        {"name": "big", "datatype": "UINT64", "shape": [2], "data": [2**64 - 1, 2**63]},
        {"name": "s", "datatype": "BYTES", "shape": [1, 2], "data": [["a", "é"]]},
    ]})
    decoded = decode_rest([], body)
    assert decoded["p"].dtype == np.float32 and np.isnan(decoded["p"][0, 1])
    assert decoded["p"][1].tolist() == [3.5, 4.0]
    assert decoded["big"].dtype == np.uint64 and decoded["big"].tolist() == [2**64 - 1, 2**63]
    assert decoded["s"].tolist() == [[b"a", "é".encode()]]


@pytest.mark.parametrize("encoding,compress", [
    (b"gzip", gzip.compress),
    (b"deflate", zlib.compress),
    (b"deflate", lambda data: zlib.compress(data, wbits=-15)),
])
def test_compressed_answers_are_undone(encoding, compress):
    outputs = {"y": _samples("FP32")}
    headers, body = _rest(outputs, binary=True)
    _assert_same(decode_rest([*headers, (b"content-encoding", encoding)], compress(body)), outputs)


# --- comparing --------------------------------------------------------------------------

def _classifier(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, 3)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"probabilities": probabilities, "label": probabilities.argmax(axis=1).astype(np.int64)}


def test_identical_answers_agree_on_every_row():
    answer = _classifier(17)
    result = compare(answer, {k: v.copy() for k, v in answer.items()})
    assert result == Comparison(17, 17, 0.0, 0.0, None, "label")
    assert result.agreement == 1.0


def test_swapped_probabilities_disagree_on_exactly_those_rows():
    primary = {"probabilities": _classifier(50)["probabilities"]}
    shadow = {"probabilities": primary["probabilities"].copy()}
    # Swap the top class with another in rows 3, 7 and 11: those rows, and only those, change label.
    for row in (3, 7, 11):
        top = int(shadow["probabilities"][row].argmax())
        other = (top + 1) % 3
        shadow["probabilities"][row, [top, other]] = shadow["probabilities"][row, [other, top]]
    result = compare(primary, shadow)
    assert (result.rows, result.agreed_rows, result.label_output) == (50, 47, "probabilities")
    diff = np.abs(primary["probabilities"].astype(np.float64) - shadow["probabilities"])
    assert result.max_abs == pytest.approx(diff.max(), rel=1e-12)


def test_an_integer_label_wins_over_scores_and_is_left_out_of_the_differences():
    primary = _classifier(8)
    shadow = {"probabilities": primary["probabilities"] + np.float32(0.01), "label": primary["label"].copy()}
    shadow["label"][[0, 5]] = (shadow["label"][[0, 5]] + 1) % 3
    result = compare(primary, shadow)
    assert (result.rows, result.agreed_rows, result.label_output) == (8, 6, "label")
    # Scores still all agree by argmax, but the label output decides; max_abs is about scores.
    assert result.max_abs == pytest.approx(0.01, rel=1e-3)


def test_label_rule_prefers_label_names_then_integers_then_name_order():
    ids = np.array([0, 1, 2, 1])
    other = np.array([0, 1, 2, 2])
    both = {"a_count": ids, "b_label": ids, "scores": np.eye(4, 3, dtype=np.float32)}
    assert compare(both, {**both, "b_label": other}).label_output == "b_label"
    assert compare({"n": ids, "m": ids}, {"n": other, "m": ids}).label_output == "m"
    words = np.array([b"cat", b"dog"], dtype=object)
    assert compare({"class_name": words, "z": np.eye(2, dtype=np.float32)}, {"class_name": words[::-1].copy(),
                   "z": np.eye(2, dtype=np.float32)}) == Comparison(2, 0, 0.0, 0.0, None, "class_name")
    assert compare({"p": np.eye(3, dtype=np.float64), "a": np.eye(3, 2)}, {"p": np.eye(3), "a": np.eye(3, 2)}).label_output == "a"
    column = np.array([[1], [2]], dtype=np.int32)
    result = compare({"label": column}, {"label": column + 1})
    assert (result.rows, result.agreed_rows) == (2, 0) and math.isnan(result.max_abs)


def test_no_classifier_output_means_no_rows():
    regression = {"y": np.array([[1.0], [2.0]], dtype=np.float32)}
    result = compare(regression, {"y": np.array([[1.5], [2.0]], dtype=np.float32)})
    assert (result.rows, result.agreed_rows, result.label_output) == (0, 0, None)
    assert result.max_abs == 0.5 and math.isnan(result.agreement)


def test_max_abs_and_max_rel_match_numpy_by_hand():
    rng = np.random.default_rng(3)
    a32 = rng.normal(size=(6, 5)).astype(np.float32)
    b32 = a32 + rng.normal(scale=1e-3, size=a32.shape).astype(np.float32)
    b32[0, 0] = 0.0
    a_int = np.array([[-128, 5, 127]], dtype=np.int8)  # [1, 3]: not a label vector
    b_int = np.array([[127, 5, -128]], dtype=np.int8)  # differences overflow int8: must not wrap
    a_tiny = np.array([1e-9, 0.0, 3e-7], dtype=np.float64)
    b_tiny = np.array([3e-9, 0.0, 0.0], dtype=np.float64)
    result = compare({"x": a32, "n": a_int, "t": a_tiny}, {"x": b32, "n": b_int, "t": b_tiny})
    diffs, rels = [], []
    for a, b in ((a32, b32), (a_int, b_int), (a_tiny, b_tiny)):
        a, b = a.astype(np.float64), b.astype(np.float64)
        d = np.abs(a - b)
        diffs.append(d.max())
        rels.append((d / np.maximum(np.maximum(np.abs(a), np.abs(b)), REL_FLOOR)).max())
    assert result.max_abs == max(diffs) == 255.0
    assert result.max_rel == pytest.approx(max(rels), rel=1e-12)
    assert result.max_rel == 255 / 128  # -128 vs 127
    assert compare({"x": a32}, {"x": b32}).max_rel == 1.0  # a32[0, 0] against 0.0
    tiny_only = compare({"t": a_tiny}, {"t": b_tiny})
    assert tiny_only.max_rel == pytest.approx(0.3, rel=1e-9)  # 3e-7 vs 0 over the 1e-6 floor


def test_nan_and_infinity_count_as_equal_only_when_matched():
    a = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=np.float32)
    result = compare({"x": a}, {"x": a.copy()})
    assert (result.max_abs, result.max_rel) == (0.0, 0.0)
    for other in ([1.0, np.inf, -np.inf, 1.0], [np.nan, 5.0, -np.inf, 1.0], [np.nan, -np.inf, -np.inf, 1.0]):
        result = compare({"x": a}, {"x": np.array(other, dtype=np.float32)})
        assert (result.max_abs, result.max_rel) == (math.inf, math.inf)


def test_fp16_bool_and_uint64_differences_are_exact():
    result = compare(
        {"h": np.array([1.0, 2.0], np.float16), "b": np.array([True, False]), "u": np.array([[2**64 - 1, 0]], np.uint64)},
        {"h": np.array([1.0, 2.5], np.float16), "b": np.array([True, True]), "u": np.array([[2**64 - 2049, 0]], np.uint64)},
    )
    assert result.max_abs == 2048.0 and result.label_output is None
    assert compare({"h": np.array([[1.0, 2.0]], np.float16)}, {"h": np.array([[1.0, 2.5]], np.float16)}).max_abs == 0.5
    assert compare({"b": np.array([[True, False]])}, {"b": np.array([[True, True]])}).max_abs == 1.0


def test_name_shape_and_datatype_mismatches_are_reported():
    primary = {"label": np.zeros(4, np.int64), "probabilities": np.zeros((4, 3), np.float32), "extra": np.zeros(1)}
    shadow = {"label": np.zeros(5, np.int64), "probabilities": np.ones((4, 3), np.float64), "new": np.zeros(1)}
    result = compare(primary, shadow)
    assert result.mismatch == (
        "output 'extra' only in primary; output 'new' only in shadow; "
        "output 'label' shape [4] vs [5]; output 'probabilities' datatype FP32 vs FP64"
    )
    # The label cannot be compared; the scores still can.
    assert (result.rows, result.agreed_rows, result.label_output, result.max_abs) == (4, 4, "probabilities", 1.0)
    empty = compare({}, {})
    assert empty.mismatch is None and empty.rows == 0 and math.isnan(empty.max_abs) and math.isnan(empty.max_rel)


# --- undecodable answers ----------------------------------------------------------------

def _json(*outputs: dict) -> bytes:
    return orjson.dumps({"model_name": "m", "outputs": list(outputs)})


_FP32 = {"name": "p", "datatype": "FP32", "shape": [2]}


@pytest.mark.parametrize("headers,body,message", [
    ([], b"<html>502</html>", "REST answer is not valid JSON"),
    ([], b"[1, 2]", "must be a JSON object, got list"),
    ([], b'{"error": "model not ready"}', "REST answer is an error: 'model not ready'"),
    ([], b'{"model_name": "m"}', "no 'outputs' list"),
    ([], _json(5), r"outputs\[0\] must be an object"),
    ([], _json({"datatype": "FP32", "shape": [1], "data": [1]}), r"outputs\[0\]: needs a non-empty string 'name'"),
    ([], _json({**_FP32, "datatype": "FLOAT"}), "output 'p': datatype 'FLOAT' is not a V2 datatype"),
    ([], _json({**_FP32, "shape": [-1]}), "output 'p': shape must be a list of non-negative integers"),
    ([], _json(_FP32), "output 'p': has neither 'data' nor 'parameters.binary_data_size'"),
    ([], _json({**_FP32, "data": [1, 2, 3]}), r"output 'p': 3 elements for shape \[2\], which needs 2"),
    ([], _json({**_FP32, "data": [[1], [2, 3]]}), "output 'p': 'data' is not a regular array of numbers"),
    ([], _json({**_FP32, "data": ["1", "2"]}), "output 'p': FP32 data must be numbers"),
    ([], _json({**_FP32, "data": "12"}), "output 'p': 'data' must be a list, got str"),
    ([], _json({**_FP32, "datatype": "INT32", "data": [1.5, 2]}), "output 'p': INT32 data must be integers"),
    ([], _json({**_FP32, "datatype": "UINT8", "data": [1, 256]}), r"output 'p': a value is out of range for UINT8 \[0, 255\]"),
    ([], _json({**_FP32, "datatype": "BOOL", "data": [1, 0]}), "output 'p': BOOL data must be true/false"),
    ([], _json({**_FP32, "datatype": "BYTES", "data": ["a", 1]}), "output 'p': BYTES data must be strings"),
    ([], _json({**_FP32, "data": [1, 2]}, {**_FP32, "data": [1, 2]}), "output 'p' appears twice"),
    ([], _json({**_FP32, "parameters": {"binary_data_size": 8}}), r"binary_data_size 8 runs past the end of the body \(0 bytes left\)"),
    ([(_LENGTH, b"abc")], b"{}", "Inference-Header-Content-Length must be an integer"),
    ([(_LENGTH, b"99")], b"{}", "Inference-Header-Content-Length is 99 but the body is 2 bytes"),
    ([(_LENGTH, b"0")], b"{}", "Inference-Header-Content-Length is 0"),
    ([], _json({**_FP32, "parameters": {"binary_data_size": True}}), "output 'p': binary_data_size must be a non-negative integer"),
    ([], _json({**_FP32, "parameters": []}), "output 'p': 'parameters' must be an object"),
    ([(b"content-encoding", b"br")], b"{}", "Content-Encoding 'br'"),
    ([(b"content-encoding", b"gzip")], b"{}", "gzip body does not decompress"),
])
def test_undecodable_rest_answers_name_the_problem(headers, body, message):
    with pytest.raises(CompareError, match=message):
        decode_rest(headers, body)


def test_undecodable_binary_data_names_the_output():
    header = _json({**_FP32, "parameters": {"binary_data_size": 6}})
    with pytest.raises(CompareError, match=r"output 'p': raw data is 6 bytes, shape \[2\] of FP32 needs 8"):
        decode_rest([(_LENGTH, str(len(header)).encode())], header + b"\0" * 6)
    header = _json({**_FP32, "parameters": {"binary_data_size": 8}})
    with pytest.raises(CompareError, match="2 bytes beyond the JSON header and the binary outputs"):
        decode_rest([(_LENGTH, str(len(header)).encode())], header + b"\0" * 10)
    header = _json({**_FP32, "datatype": "BYTES", "parameters": {"binary_data_size": 5}})
    with pytest.raises(CompareError, match="output 'p': raw BYTES data holds 1 BYTES elements, expected 2"):
        decode_rest([(_LENGTH, str(len(header)).encode())], header + b"\1\0\0\0a")


def test_undecodable_grpc_answers_name_the_problem():
    with pytest.raises(CompareError, match="gRPC answer is not a ModelInferResponse"):
        decode_grpc(b"\xff\xff\xff\xff")
    message = pb.ModelInferResponse()
    message.outputs.add(name="p", datatype="FP32", shape=[2])
    message.outputs.add(name="q", datatype="FP32", shape=[2])
    message.raw_output_contents.append(b"\0" * 8)
    with pytest.raises(CompareError, match="1 raw_output_contents for 2 outputs"):
        decode_grpc(message.SerializeToString())
    message.raw_output_contents.append(b"\0" * 4)
    with pytest.raises(CompareError, match=r"output 'q': raw data is 4 bytes, shape \[2\] of FP32 needs 8"):
        decode_grpc(message.SerializeToString())
    typed = pb.ModelInferResponse()
    typed.outputs.add(name="h", datatype="FP16", shape=[1])
    with pytest.raises(CompareError, match="output 'h': FP16 has no typed contents field"):
        decode_grpc(typed.SerializeToString())
    typed = pb.ModelInferResponse()
    typed.outputs.add(name="i", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with pytest.raises(CompareError, match=r"output 'i': a value is out of range for INT8"):
        decode_grpc(typed.SerializeToString())
    typed = pb.ModelInferResponse()
    typed.outputs.add(name="x", datatype="FP32", shape=[3]).contents.fp32_contents.extend([1, 2])
    with pytest.raises(CompareError, match=r"output 'x': 2 elements for shape \[3\], which needs 3"):
        decode_grpc(typed.SerializeToString())


def test_compare_error_is_a_sidecar_error():
    assert issubclass(CompareError, SidecarError)


# --- the real example models --------------------------------------------------------------

def test_example_v3_disagrees_with_v1_on_some_rows_through_every_encoding():
    import onnxruntime as ort  # a dependency; imported here to keep this module's import light

    from model_server.examples import tabular_data, tabular_model

    features = tabular_data(11, 4000)[0]  # v1's training features, what train.npy holds

    def run(version: int) -> dict[str, np.ndarray]:
        session = ort.InferenceSession(tabular_model(version).SerializeToString(), providers=["CPUExecutionProvider"])
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"features": features})))

    answers = {version: run(version) for version in (1, 3)}
    for encode in (lambda o: decode_rest(*_rest(o)), lambda o: decode_rest(*_rest(o, binary=True)), lambda o: decode_grpc(_grpc(o))):
        v1, v3 = encode(answers[1]), encode(answers[3])
        same = compare(v1, encode(answers[1]))
        assert same == Comparison(4000, 4000, 0.0, 0.0, None, "label")
        result = compare(v1, v3)
        assert result.rows == 4000 and result.mismatch is None and result.label_output == "label"
        assert 0.5 < result.agreement < 1.0
        assert result.agreed_rows == int((answers[1]["label"] == answers[3]["label"]).sum())
        expected = np.abs(answers[1]["probabilities"].astype(np.float64) - answers[3]["probabilities"]).max()
        assert result.max_abs == pytest.approx(expected, rel=1e-12) and 0.0 < result.max_abs <= 1.0
