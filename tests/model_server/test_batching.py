"""Dynamic batching through a real server: batched answers equal unbatched ones bit for bit
(CPU provider), callers never see each other's rows, a full queue answers 503."""

from __future__ import annotations

import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from model_server.examples import heavy_model, tabular_model
from tests.servers import ModelServerProcess, write_config

CALLERS = 48


@pytest.fixture(scope="module")
def batch_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    model = tabular_model(1).SerializeToString()
    for name in ("batched", "unbatched"):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").write_bytes(model)
    # A generous delay makes joining near-certain for concurrent callers; correctness
    # does not depend on it.
    write_config(root, "batched", max_batch_size=64, max_queue_delay_us=20000)
    write_config(root, "unbatched", max_batch_size=0)
    # A model slow enough that concurrent callers find the one-slot queue taken.
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "1" / "model.onnx").write_bytes(heavy_model(width=1024, layers=2, inputs=64).SerializeToString())
    write_config(root, "slow", max_batch_size=0, max_queue_size=1)
    # Waits a minute for a second row: a lone request stays queued until cancelled.
    (root / "patient" / "1").mkdir(parents=True)
    (root / "patient" / "1" / "model.onnx").write_bytes(model)
    write_config(root, "patient", max_batch_size=64, max_queue_delay_us=60_000_000)
    return root


@pytest.fixture(scope="module")
def batch_server(batch_repo):
    with ModelServerProcess(batch_repo) as proc:
        yield proc


def _rows() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((CALLERS, 8)).astype(np.float32)


def _infer_one(url: str, protocol: str, model: str, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(url)
    try:
        inp = mod.InferInput("features", [1, 8], "FP32")
        if protocol == "http":
            inp.set_data_from_numpy(row[None, :], binary_data=True)
            outs = [mod.InferRequestedOutput("probabilities", binary_data=True), mod.InferRequestedOutput("label", binary_data=True)]
        else:
            inp.set_data_from_numpy(row[None, :])
            outs = [mod.InferRequestedOutput("probabilities"), mod.InferRequestedOutput("label")]
        result = client.infer(model, [inp], outputs=outs)
        return result.as_numpy("probabilities"), result.as_numpy("label")
    finally:
        client.close()


def _batch_counts(server, model: str) -> tuple[float, float]:
    text = urllib.request.urlopen(f"http://{server.http}/metrics", timeout=30).read().decode()
    count = float(re.search(rf'sidemesh_model_batch_size_count{{model="{model}",version="1"}} (\S+)', text).group(1))
    total = float(re.search(rf'sidemesh_model_batch_size_sum{{model="{model}",version="1"}} (\S+)', text).group(1))
    return count, total


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_batched_answers_equal_unbatched_ones_bit_for_bit(batch_server, batch_repo, protocol):
    url = batch_server.http if protocol == "http" else batch_server.grpc
    x = _rows()
    runs_before, rows_before = _batch_counts(batch_server, "batched")
    with ThreadPoolExecutor(CALLERS) as pool:
        batched = list(pool.map(lambda r: _infer_one(url, protocol, "batched", r), x))
    runs, rows = _batch_counts(batch_server, "batched")
    assert rows - rows_before == CALLERS
    assert runs - runs_before < CALLERS, "concurrent callers were never joined into one run"

    unbatched = [_infer_one(url, protocol, "unbatched", r) for r in x]
    session = ort.InferenceSession(str(batch_repo / "unbatched" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for i, ((bp, bl), (up, ul)) in enumerate(zip(batched, unbatched)):
        assert bp.tobytes() == up.tobytes() and bl.tobytes() == ul.tobytes()
        # No cross-talk: every caller got the answer for its own row.
        expected = session.run(None, {"features": x[i : i + 1]})
        assert bp.tobytes() == expected[0].tobytes() and bl.tolist() == expected[1].tolist()


def test_a_full_queue_answers_503_at_once_and_the_server_recovers(batch_server):
    x = np.zeros((1, 64), np.float32)

    def call(_):
        client = httpclient.InferenceServerClient(batch_server.http)
        inp = httpclient.InferInput("x", [1, 64], "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        try:
            client.infer("slow", [inp])
            return "ok"
        except InferenceServerException as exc:
            return f"{exc.status()} {exc.message()}"
        finally:
            client.close()

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(call, range(32)))
    refused = [o for o in outcomes if o != "ok"]
    assert "ok" in outcomes
    assert refused, "32 concurrent calls never filled a one-slot queue"
    assert all(o.startswith("503") and "queue is full" in o for o in refused)
    assert call(None) == "ok"


def _metric(server, line_start: str) -> float | None:
    text = urllib.request.urlopen(f"http://{server.http}/metrics", timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_cancelled_grpc_call_is_counted_as_499_not_as_a_server_error(batch_server):
    import grpc

    from model_server.proto import grpc_service_pb2 as pb
    from model_server.proto import grpc_service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="patient")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 8]).contents.fp32_contents.extend([0.0] * 8)
    inflight = 'sidemesh_model_inflight_requests{model="patient",version="1"}'
    with grpc.insecure_channel(batch_server.grpc) as channel:
        call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer.future(request)
        deadline = time.monotonic() + 30
        while _metric(batch_server, inflight) != 1.0:  # the request is queued on the server
            assert time.monotonic() < deadline, "the request never reached the queue"
            time.sleep(0.05)
        assert call.cancel()
    deadline = time.monotonic() + 30
    while _metric(batch_server, 'sidemesh_model_requests_total{code="499",model="patient"') is None:
        assert time.monotonic() < deadline, "the cancelled call was never counted"
        time.sleep(0.05)
    assert _metric(batch_server, 'sidemesh_model_requests_total{code="500",model="patient"') is None
    assert _metric(batch_server, inflight) == 0.0
