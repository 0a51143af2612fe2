"""Drift detector killed (SIGKILL) under load: the sidecar streaming statistics to it
serves every request, drops the reports it cannot keep (bounded queue) and counts them,
and once the detector is back on its ports and state, drifted traffic raises an alert
that reaches the webhook.

Sized so that an outage of a few seconds overflows the sidecar's report queue: the
smallest queue it takes (64 KiB), a report every 0.05 s (a quiet window is held for up to
six intervals), one row per request, and a CPU budget that taps every request. Traffic
follows version 1's training distribution until the detector is back, then the same
rows shifted by one standard deviation; windows of 300 rows, firing after one drifted
window."""

from __future__ import annotations

import json
import time

import numpy as np

from model_server.examples import tabular_data
from tests.drift.peers import DriftProcess, Receiver
from tests.drift.test_detector import reference_cli
from tests.faults.load import ClosedLoop
from tests.faults.peers import kill9, until
from tests.sidecar.peers import SidecarProcess, total

MODEL = "tabular"
ROWS_PER_REQUEST = 1
QUEUE_BYTES = 65_536  # the smallest queue the sidecar takes, so that an outage overflows it soon


def bodies(rows: np.ndarray) -> list[bytes]:
    return [json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": list(batch.shape),
                                    "data": batch.ravel().tolist()}]}).encode()
            for batch in np.array_split(rows, len(rows) // ROWS_PER_REQUEST)]


def test_a_killed_drift_detector_fails_no_request_drops_and_counts_statistics_and_alerts_after_its_return(
        tmp_path, server, figure):
    train, _ = tabular_data(11, 4000)  # version 1's training features
    np.save(tmp_path / "train.npy", train)
    receiver = Receiver()
    detector = DriftProcess(tmp_path / "drift.db", ["--window-rows", 300, "--window-seconds", 0, "--alpha", 0.001,
                                                     "--fire-after", 1, "--resolve-after", 1, "--checkpoint-interval", 0.5,
                                                     "--webhook", receiver.url]).start()
    sidecar = load = None
    try:
        done = reference_cli(MODEL, "--version", "1", "--data", tmp_path / "train.npy", "--drift-url", detector.url)
        assert done.returncode == 0, done.stderr
        sidecar = SidecarProcess(MODEL, "1", server.http, extra_args=[
            "--drift", f"127.0.0.1:{detector.stats_port}", "--stats-interval", "0.05",
            "--stats-queue-bytes", str(QUEUE_BYTES), "--stats-cpu-budget", "0.5"]).start()
        clean = bodies(tabular_data(31, 3000)[0])
        load = ClosedLoop(sidecar.port, f"/v2/models/{MODEL}/infer", clean, threads=3, max_requests=60_000, max_seconds=90)
        with load:
            until(lambda: total(sidecar.metrics(), "sidemesh_stats_reports_acked_total") >= 2, 20,
                  "reports acknowledged before the kill")
            signalled, _ = kill9(detector.popen)
            detector.stop()
            until(lambda: total(sidecar.metrics(), "sidemesh_stats_reports_dropped_total") >= 3, 30,
                  "the sidecar dropping reports it cannot keep")
            down = sidecar.metrics()
            detector = DriftProcess(detector.state, detector.args, port=detector.port, stats_port=detector.stats_port).start()
            back = time.monotonic()
            until(lambda: total(sidecar.metrics(), "sidemesh_stats_connected") == 1, 15, "the sidecar reconnecting")
            reconnected = time.monotonic()
            load.bodies = bodies(tabular_data(31, 3000)[0] + 1.0)  # one standard deviation off: drift
            _, body = receiver.get(timeout=30)
            alerted = time.monotonic()
        answers = load.answers
        after = sidecar.metrics()
        detector_metrics = detector.metrics()
    finally:
        if load is not None:
            load.stop()
        if sidecar is not None:
            sidecar.stop()
        detector.stop()
        receiver.close()

    failed = [(a.status, a.body[:200]) for a in answers if a.status != 200]
    during = sum(1 for a in answers if signalled <= a.sent <= back)
    dropped = total(down, "sidemesh_stats_reports_dropped_total")
    # The detector learns what it missed from the count the sidecar sends in later reports.
    told = next((float(line.rpartition(" ")[2]) for line in detector_metrics.splitlines()
                 if line.startswith('sidemesh_drift_stats_dropped_total{reason="sidecar_queue"}')), 0.0)
    figure("drift detector killed",
           requests=len(answers), failed=len(failed), requests_while_down=during,
           detector_down_s=back - signalled, reports_dropped_by_sidecar=int(total(after, "sidemesh_stats_reports_dropped_total")),
           dropped_reported_to_detector=int(told), sidecar_reconnected_after_return_s=reconnected - back,
           alert_delivered_after_return_s=alerted - back)
    assert failed == [], f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    assert during > 100
    assert dropped >= 3 and total(down, "sidemesh_stats_queue_bytes") <= QUEUE_BYTES
    assert told >= dropped
    alert = json.loads(body)
    assert (alert["status"], alert["model"], alert["modelVersion"]) == ("firing", MODEL, "1")
