"""Drift end to end with real processes: a model server holding tabular v1, its sidecar with
``--drift``, the drift detector with v1's training data as reference, and a webhook
receiver. Traffic like the training data is judged clean; the same traffic shifted by one
standard deviation fires an alert that arrives at the webhook."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_server.examples import tabular_data
from tests.control_plane.peers import wait_until
from tests.drift.peers import DriftProcess, Receiver
from tests.drift.test_detector import reference_cli
from tests.sidecar.peers import SidecarProcess

ROWS = 300


def send(sidecar: SidecarProcess, rows: np.ndarray) -> list[int]:
    statuses = []
    for batch in np.array_split(rows, len(rows) // 10):
        tensor = {"name": "features", "datatype": "FP32", "shape": list(batch.shape), "data": batch.ravel().tolist()}
        statuses.append(sidecar.infer(body=json.dumps({"inputs": [tensor]}).encode())[0])
    return statuses


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_traffic_through_a_sidecar_is_judged_against_the_training_data(tmp_path, server, receiver):
    train, _ = tabular_data(11, 4000)  # version 1's training features
    np.save(tmp_path / "train.npy", train)
    detector = DriftProcess(tmp_path / "drift.db", ["--window-rows", ROWS, "--window-seconds", 0, "--alpha", 0.001,
                                                     "--fire-after", 1, "--resolve-after", 1,
                                                     "--webhook", receiver.url]).start()
    try:
        done = reference_cli("tabular", "--version", "1", "--data", tmp_path / "train.npy", "--drift-url", detector.url)
        assert done.returncode == 0, done.stderr
        with SidecarProcess("tabular", "1", server.http, extra_args=[
                "--drift", f"127.0.0.1:{detector.stats_port}", "--stats-interval", "0.2"]) as sidecar:
            fresh, _ = tabular_data(31, ROWS)
            assert send(sidecar, fresh) == [200] * (ROWS // 10)

            def evaluated():
                status, body = detector.api("GET", "/v1/models/tabular/versions/1")
                return body if status == 200 else None

            latest = wait_until(evaluated, what="the first window's verdict")
            assert latest["verdict"] == "clean" and latest["window"]["rows"] == ROWS
            assert {f["input"] for f in latest["features"]} == {"features"} and len(latest["features"]) == 8
            assert send(sidecar, fresh + 1.0) == [200] * (ROWS // 10)
            _, body = receiver.get()
        alert = json.loads(body)
        assert (alert["status"], alert["model"], alert["modelVersion"]) == ("firing", "tabular", "1")
        assert alert["details"]["drifted_features"] == 8
        metrics = detector.metrics()
        assert 'sidemesh_drift_stats_received_total{model="tabular",version="1"} 4800.0' in metrics
        assert 'sidemesh_drift_alert_firing{model="tabular",version="1"} 1.0' in metrics
    finally:
        detector.stop()
