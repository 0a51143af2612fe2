"""V2 conformance as seen by a third-party client: Triton's tritonclient, over HTTP and gRPC."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.model_server.models import ECHO_TYPES

PROTOCOLS = ["http", "grpc"]


@pytest.fixture(params=PROTOCOLS)
def client(request, server):
    if request.param == "http":
        c = httpclient.InferenceServerClient(server.http)
        yield request.param, httpclient, c
    else:
        c = grpcclient.InferenceServerClient(server.grpc)
        yield request.param, grpcclient, c
    c.close()


def _sample(datatype: str, rows: int = 2) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(datatype)) % 2**32)
    if datatype == "BYTES":
        # str elements: tritonclient sends them as JSON strings or UTF-8 bytes as asked
        return np.array([[f"r{r}c{c}-é" for c in range(3)] for r in range(rows)], dtype=np.object_)
    if datatype == "BOOL":
        return rng.random((rows, 3)) > 0.5
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return rng.standard_normal((rows, 3)).astype(dtype)
    info = np.iinfo(np.dtype(datatype.lower()))
    return np.array([[info.min, info.max, 7]] * rows, dtype=np.dtype(datatype.lower()))


def _get(meta, key):
    return meta[key] if isinstance(meta, dict) else getattr(meta, key)


def test_server_is_live_ready_and_describes_itself(client):
    _, _, c = client
    assert c.is_server_live()
    assert c.is_server_ready()
    meta = c.get_server_metadata()
    assert _get(meta, "name") == "sidemesh"
    assert "binary_tensor_data" in list(_get(meta, "extensions"))


def test_model_metadata_comes_from_the_onnx_graph(client):
    _, _, c = client
    meta = c.get_model_metadata("tabular")
    assert list(_get(meta, "versions")) == ["1", "2", "3"]
    assert _get(meta, "platform") == "onnxruntime_onnx"
    inputs = [(_get(t, "name"), _get(t, "datatype"), list(_get(t, "shape"))) for t in _get(meta, "inputs")]
    outputs = [(_get(t, "name"), _get(t, "datatype"), list(_get(t, "shape"))) for t in _get(meta, "outputs")]
    assert inputs == [("features", "FP32", [-1, 8])]
    assert outputs == [("probabilities", "FP32", [-1, 3]), ("label", "INT64", [-1])]


def test_every_version_is_ready_and_unknown_ones_are_not(client):
    proto, _, c = client
    for version in ("1", "2", "3", ""):
        assert c.is_model_ready("tabular", version)
    if proto == "http":
        assert not c.is_model_ready("tabular", "9")
        assert not c.is_model_ready("nope")
    else:
        with pytest.raises(InferenceServerException, match="no version '9'"):
            c.is_model_ready("tabular", "9")


@pytest.mark.parametrize("datatype", list(ECHO_TYPES))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_round_trips(client, datatype, binary):
    proto, mod, c = client
    data = _sample(datatype)
    inp = mod.InferInput("x", list(data.shape), datatype)
    if proto == "http":
        inp.set_data_from_numpy(data, binary_data=binary)
        outputs = [mod.InferRequestedOutput("y", binary_data=binary), mod.InferRequestedOutput("shape", binary_data=binary)]
    else:
        inp.set_data_from_numpy(data)
        outputs = [mod.InferRequestedOutput("y"), mod.InferRequestedOutput("shape")]
    result = c.infer(f"echo_{datatype.lower()}", [inp], outputs=outputs, request_id="req-42")
    got = result.as_numpy("y")
    if datatype == "BYTES":
        # tritonclient hands JSON BYTES back as str and binary ones as bytes
        as_bytes = [[v if isinstance(v, bytes) else v.encode() for v in row] for row in got.tolist()]
        assert as_bytes == [[v.encode() for v in row] for row in data.tolist()]
    else:
        assert got.dtype == data.dtype and np.array_equal(got, data)
    assert result.as_numpy("shape").tolist() == [2, 3]
    response = result.get_response()
    assert (response["id"] if proto == "http" else response.id) == "req-42"


def test_tabular_answers_match_onnx_runtime_in_process(client, repo):
    import onnxruntime as ort

    proto, mod, c = client
    x = np.random.default_rng(5).standard_normal((4, 8)).astype(np.float32)
    inp = mod.InferInput("features", [4, 8], "FP32")
    inp.set_data_from_numpy(x)
    for version in ("1", "3"):
        expected = ort.InferenceSession(str(repo / "tabular" / version / "model.onnx")).run(None, {"features": x})
        result = c.infer("tabular", [inp], model_version=version)
        assert np.array_equal(result.as_numpy("probabilities"), expected[0])
        assert np.array_equal(result.as_numpy("label"), expected[1])


def test_no_version_means_the_highest(client):
    proto, mod, c = client
    inp = mod.InferInput("features", [1, 8], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 8), np.float32))
    response = c.infer("tabular", [inp]).get_response()
    assert (response["model_version"] if proto == "http" else response.model_version) == "3"


def test_output_selection_returns_only_what_was_asked(client):
    proto, mod, c = client
    inp = mod.InferInput("features", [3, 8], "FP32")
    inp.set_data_from_numpy(np.ones((3, 8), np.float32))
    result = c.infer("tabular", [inp], outputs=[mod.InferRequestedOutput("label")])
    assert result.as_numpy("probabilities") is None
    assert result.as_numpy("label").shape == (3,)


def test_request_type_check_happens_on_the_server(client):
    proto, mod, c = client
    inp = mod.InferInput("features", [1, 8], "FP64")
    inp.set_data_from_numpy(np.zeros((1, 8), np.float64))
    with pytest.raises(InferenceServerException, match="datatype FP64 does not match the model's FP32"):
        c.infer("tabular", [inp])


def test_metrics_count_requests_by_outcome_and_time_them(server):
    import urllib.request

    inp = httpclient.InferInput("features", [2, 8], "FP32")
    inp.set_data_from_numpy(np.zeros((2, 8), np.float32))
    client = httpclient.InferenceServerClient(server.http)
    client.infer("tabular", [inp], model_version="2")
    bad = httpclient.InferInput("features", [2, 7], "FP32")
    bad.set_data_from_numpy(np.zeros((2, 7), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("tabular", [bad], model_version="2")
    client.close()
    text = urllib.request.urlopen(f"http://{server.http}/metrics", timeout=30).read().decode()
    series = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("sidemesh_")}
    assert series['sidemesh_model_requests_total{code="200",model="tabular",version="2"}'] >= 1
    assert series['sidemesh_model_requests_total{code="400",model="tabular",version="2"}'] >= 1
    for histogram in ("request_duration_seconds", "queue_duration_seconds", "compute_duration_seconds", "batch_size"):
        assert series[f'sidemesh_model_{histogram}_count{{model="tabular",version="2"}}'] >= 1
    assert series['sidemesh_model_batch_size_sum{model="tabular",version="2"}'] >= 2
    assert series['sidemesh_model_inflight_requests{model="tabular",version="2"}'] == 0
