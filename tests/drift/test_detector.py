"""The drift detector as a process: references in, statistics streamed, windows judged,
alerts delivered and signed, everything kept across a restart, bad input refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.control_plane.peers import wait_until
from tests.drift.peers import DriftProcess, Receiver, StatsStream, report_of

FEATURES = 4
SECRET = b"s3cret-for-tests"


def reference_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sidemesh", "drift", "reference", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def detector(tmp_path, receiver):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    d = DriftProcess(tmp_path / "drift.db", ["--window-rows", 1000, "--window-seconds", 0, "--fire-after", 2,
                                              "--resolve-after", 2, "--webhook", receiver.url,
                                              "--webhook-secret-file", secret, "--checkpoint-interval", 0.2]).start()
    yield d
    d.stop()


@pytest.fixture
def reference(tmp_path, detector):
    data = np.random.default_rng(0).normal(0.0, 1.0, size=(20_000, FEATURES)).astype(np.float32)
    path = tmp_path / "train.npy"
    np.save(path, data)
    done = reference_cli("fraud", "--version", "1", "--data", path, "--drift-url", detector.url)
    assert done.returncode == 0, done.stderr
    assert "20000 rows, 4 features" in done.stdout
    return data


def windows(rng, shift: float, n: int):
    return [rng.normal(shift, 1.0, size=(1000, FEATURES)).astype(np.float32) for _ in range(n)]


def test_a_reference_uploaded_from_a_file_is_listed_with_its_statistics(detector, reference):
    status, body = detector.api("GET", "/v1/references")
    assert status == 200
    (ref,) = body["references"]
    assert (ref["model"], ref["version"], ref["rows"], ref["features"], ref["datatype"]) == ("fraud", "1", 20_000, 4, "FP32")
    status, detail = detector.api("GET", "/v1/references/fraud/1")
    feature = detail["inputs"][0]["features"][0]
    assert feature["mean"] == pytest.approx(float(reference[:, 0].mean()), abs=1e-6)
    assert feature["quantiles"]["0.5"] == pytest.approx(float(np.median(reference[:, 0])), abs=0.02)


def test_a_csv_reference_names_its_features(tmp_path, detector):
    path = tmp_path / "ref.csv"
    rows = np.random.default_rng(1).normal(size=(500, 2))
    path.write_text("age,income\n" + "\n".join(f"{a},{b}" for a, b in rows))
    done = reference_cli("credit", "--version", "2", "--data", path, "--input", "x", "--drift-url", detector.url)
    assert done.returncode == 0, done.stderr
    _, detail = detector.api("GET", "/v1/references/credit/2")
    assert [f["name"] for f in detail["inputs"][0]["features"]] == ["age", "income"]


def test_drifted_windows_fire_a_signed_alert_and_clean_ones_resolve_it(detector, reference, receiver):
    rng = np.random.default_rng(2)
    with StatsStream(detector.stats_port) as stream:
        seq = 0
        for data in windows(rng, 0.0, 2):
            seq += 1
            assert stream.send(report_of("sc-a", seq, "fraud", "1", data))[0].error == ""
        detector.api("POST", "/v1/windows/close?wait=true")
        status, latest = detector.api("GET", "/v1/models/fraud/versions/1")
        assert status == 200 and latest["verdict"] == "clean"
        assert receiver.received.empty()
        for data in windows(rng, 0.5, 2):  # half a standard deviation: unmistakable
            seq += 1
            stream.send(report_of("sc-a", seq, "fraud", "1", data))
        headers, body = receiver.get()
        event = json.loads(body)
        assert (event["status"], event["model"], event["modelVersion"]) == ("firing", "fraud", "1")
        assert event["details"]["drifted_features"] >= 1 and event["details"]["features"][0]["drifted"]
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-sidemesh-signature"], expected)
        for data in windows(rng, 0.0, 2):
            seq += 1
            stream.send(report_of("sc-a", seq, "fraud", "1", data))
        _, body = receiver.get()
        assert json.loads(body)["status"] == "resolved"
    _, latest = detector.api("GET", "/v1/models/fraud/versions/1")
    assert latest["verdict"] == "clean" and latest["alert"]["firing"] is False
    _, history = detector.api("GET", "/v1/models/fraud/versions/1/evaluations?limit=10")
    assert [e["verdict"] for e in history["evaluations"]][::-1] == ["clean"] * 2 + ["drift"] * 2 + ["clean"] * 2
    metrics = detector.metrics()
    assert 'sidemesh_drift_windows_evaluated_total{model="fraud",verdict="drift",version="1"} 2.0' in metrics
    assert 'sidemesh_drift_score{feature="0",input="features",model="fraud",test="ks",version="1"}' in metrics
    assert "sidemesh_drift_alerts_sent_total" in metrics


def test_a_resent_report_counts_once_and_a_malformed_one_is_refused_without_closing_the_stream(detector, reference):
    data = np.zeros((10, FEATURES), dtype=np.float32)
    with StatsStream(detector.stats_port) as stream:
        assert stream.send(report_of("sc-b", 1, "fraud", "1", data))[0].error == ""
        assert stream.send(report_of("sc-b", 1, "fraud", "1", data))[0].error == ""  # a resend after a lost ack
        bad = report_of("sc-b", 2, "fraud", "1", data)
        bad.inputs[0].features[0].kll = b"not a sketch"
        (ack,) = stream.send(bad)
        assert "inputs[0].features[0].kll" in ack.error
        (ack,) = stream.send(b"\xff\xff garbage")
        assert "StatsReport" in ack.error
        assert stream.send(report_of("sc-b", 3, "fraud", "1", data))[0].error == ""
    _, body = detector.api("GET", "/v1/windows")
    assert body["windows"][0]["rows"] == 20


def test_references_windows_and_alert_state_survive_a_restart(tmp_path, detector, reference, receiver):
    rng = np.random.default_rng(3)
    with StatsStream(detector.stats_port) as stream:
        for seq, data in enumerate(windows(rng, 0.6, 2), 1):
            stream.send(report_of("sc-c", seq, "fraud", "1", data))
        receiver.get()  # firing
        stream.send(report_of("sc-c", 3, "fraud", "1", windows(rng, 0.0, 1)[0][:400]))
    wait_until(lambda: detector.api("GET", "/v1/windows")[1]["windows"], what="a window in progress")
    assert detector.stop() == 0
    again = DriftProcess(detector.state, detector.args, detector.port, detector.stats_port).start()
    try:
        _, refs = again.api("GET", "/v1/references")
        assert refs["references"][0]["rows"] == 20_000
        _, open_windows = again.api("GET", "/v1/windows")
        assert open_windows["windows"][0]["rows"] == 400
        _, alerts = again.api("GET", "/v1/alerts")
        assert [a["model"] for a in alerts["firing"]] == ["fraud"]
        with StatsStream(again.stats_port) as stream:
            assert stream.send(report_of("sc-c", 3, "fraud", "1", np.zeros((400, FEATURES), np.float32)))[0].error == ""
            _, open_windows = again.api("GET", "/v1/windows")
            assert open_windows["windows"][0]["rows"] == 400  # sequence 3 was applied before the restart
            stream.send(report_of("sc-c", 4, "fraud", "1", windows(rng, 0.0, 1)[0][:600]))
            for seq, data in enumerate(windows(rng, 0.0, 1), 5):
                stream.send(report_of("sc-c", seq, "fraud", "1", data))
        _, body = receiver.get()  # two clean windows after the restart resolve the alert fired before it
        assert json.loads(body)["status"] == "resolved"
    finally:
        again.stop()


@pytest.mark.parametrize("method,path,body,field", [
    ("PUT", "/v1/references/m/1", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}, "input 'x'"),
    ("PUT", "/v1/references/m/1", {"nope": 1}, "inputs"),
    ("POST", "/v1/references/m/1/capture", {"rows": -3}, "rows"),
    ("GET", "/v1/models/m/versions/1/evaluations?limit=zero", None, "limit"),
    ("GET", "/v1/models/nope/versions/1", None, "nope"),
    ("DELETE", "/v1/references/nope/1", None, "nope"),
])
def test_bad_requests_get_a_clear_error_and_the_detector_keeps_serving(detector, method, path, body, field):
    status, answer = detector.api(method, path, body)
    assert 400 <= status < 500 and field in answer["error"]
    assert detector.api("GET", "/healthz/ready")[0] == 200


def test_reference_cli_errors_name_the_problem(tmp_path, detector):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,x\n")
    done = reference_cli("m", "--version", "1", "--data", bad, "--drift-url", detector.url)
    assert done.returncode == 2 and "line 3, column 'b'" in done.stderr
    done = reference_cli("m", "--version", "1", "--data", tmp_path / "missing.npy", "--drift-url", detector.url)
    assert done.returncode == 2 and "missing.npy" in done.stderr
    done = reference_cli("m", "--version", "1", "--capture", "100", "--drift-url", "http://127.0.0.1:9")
    assert done.returncode == 1 and "cannot reach the drift detector" in done.stderr


def test_a_reference_captured_from_traffic_is_used_for_the_following_windows(detector):
    rng = np.random.default_rng(4)
    done = reference_cli("fresh", "--version", "7", "--capture", 2000, "--drift-url", detector.url)
    assert done.returncode == 0, done.stderr
    with StatsStream(detector.stats_port) as stream:
        for seq, data in enumerate(windows(rng, 1.0, 2), 1):
            stream.send(report_of("sc-d", seq, "fresh", "7", data))
        _, refs = detector.api("GET", "/v1/references/fresh/7")
        assert refs["inputs"][0]["rows"] == 2000 and refs["inputs"][0]["source"] == "capture"
        stream.send(report_of("sc-d", 3, "fresh", "7", windows(rng, 1.0, 1)[0]))
    detector.api("POST", "/v1/windows/close?wait=true")
    _, latest = detector.api("GET", "/v1/models/fresh/versions/7")
    assert latest["verdict"] == "clean"
