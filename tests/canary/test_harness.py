"""The canary suite's harness does what the scenarios rely on: each kind of candidate
behaves as claimed through the real sidecars, the load is bounded and counted by version,
the webhook receiver keeps what arrives, and a mesh leaves no process behind."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.canary.mesh import BASELINE, CANDIDATE
from tests.canary.peers import Traffic, WebhookReceiver, bodies, signature
from tests.control_plane.peers import wait_until

PIN = {"x-sidemesh-version": CANDIDATE}


def _labels(mesh, version: str, body: bytes) -> list[int]:
    status, headers, answer = mesh.baseline.infer(headers={"x-sidemesh-version": version}, body=body)
    assert (status, headers["x-sidemesh-version"]) == (200, version), answer
    outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
    assert outputs["probabilities"]["shape"] == [4, 3]
    return outputs["label"]["data"]


def _mirrored_rows(mesh, requests: int) -> tuple[int, int]:
    """Send ``requests`` through the entry with a 100% mirror to the candidate; (agreed, compared) rows."""
    mesh.put_route({BASELINE: 100, CANDIDATE: 0}, mirrors={CANDIDATE: 100})
    before = mesh.shadow_rows()
    with mesh.traffic(rate=200, max_requests=requests) as load:
        load.wait_for(requests)
    assert load.counts() == {(BASELINE, 200): requests}
    wait_until(lambda: mesh.shadow_rows()[1] - before[1] >= 4 * requests, 20, "every mirrored copy compared")
    after = mesh.shadow_rows()
    return after[0] - before[0], after[1] - before[1]


def test_a_good_candidate_answers_like_the_baseline_and_the_load_splits_by_weight(canary_mesh):
    mesh = canary_mesh("good")
    assert mesh.cp.api("GET", "/v1/canaries") == (200, {"canaries": []})  # the canary API, with the flags the mesh gave
    body = bodies(requests=1)[0]
    assert _labels(mesh, CANDIDATE, body) == _labels(mesh, BASELINE, body)
    agreed, compared = _mirrored_rows(mesh, 100)
    assert agreed == compared == 400

    mesh.put_route({BASELINE: 50, CANDIDATE: 50})
    with mesh.traffic(rate=200, max_requests=200) as load:
        load.wait_for(200)
    counts = load.counts()
    assert sum(counts.values()) == 200 and set(counts) == {(BASELINE, 200), (CANDIDATE, 200)}, counts


def test_the_errors_candidate_fails_exactly_the_share_asked_for_and_answers_v2_otherwise(canary_mesh):
    mesh = canary_mesh("errors", error_share=0.25)
    with mesh.traffic(rate=200, max_requests=200, headers=PIN) as load:
        load.wait_for(200)
    assert load.counts() == {(CANDIDATE, 200): 150, (CANDIDATE, 500): 50}
    assert all("injected failure" in json.loads(a.body)["error"] for a in load.answers if a.status == 500)
    labels = [_labels(mesh, CANDIDATE, body) for body in bodies(requests=3)]  # every fourth fails: three succeed
    assert all(len(rows) == 4 for rows in labels)
    with mesh.traffic(rate=200, max_requests=50) as load:
        load.wait_for(50)
    assert load.counts() == {(BASELINE, 200): 50}  # the baseline is untouched


def test_the_slow_candidate_answers_every_request_at_least_the_delay_late(canary_mesh):
    mesh = canary_mesh("slow", delay_s=0.15)
    with mesh.traffic(rate=50, max_requests=40, headers=PIN) as load:
        load.wait_for(40)
    assert load.counts() == {(CANDIDATE, 200): 40}
    assert min(a.seconds for a in load.answers) >= 0.15
    assert mesh.faulty.requests == 40 and mesh.faulty.errors == 0


def test_the_disagreeing_candidate_predicts_another_label_on_every_mirrored_row(canary_mesh):
    mesh = canary_mesh("disagree")
    agreed, compared = _mirrored_rows(mesh, 100)
    assert (agreed, compared) == (0, 400)


def test_the_drift_candidate_gets_a_drift_verdict_while_the_baseline_stays_clean(canary_mesh):
    mesh = canary_mesh("drift", window_rows=200)
    for version in (CANDIDATE, BASELINE):
        with mesh.traffic(rate=200, max_requests=60, headers={"x-sidemesh-version": version}) as load:
            load.wait_for(60)  # 240 rows: one window at least
        assert load.counts() == {(version, 200): 60}
    assert wait_until(lambda: mesh.verdict(CANDIDATE), 20, "a verdict on version 2")["verdict"] == "drift"
    assert wait_until(lambda: mesh.verdict(BASELINE), 20, "a verdict on version 1")["verdict"] == "clean"
    processes = mesh.processes()
    assert len(processes) == 4 and all(p.poll() is None for p in processes)
    mesh.stop()
    assert all(p.poll() is not None for p in processes)


def test_traffic_stops_at_its_request_and_time_bounds(baseline_server):
    port = baseline_server.http_port
    with Traffic(port, bodies(requests=5), rate=500, max_requests=30) as load:
        wait_until(load.done, 20, "the request bound")
    assert load.counts() == {("", 200): 30}  # the model server names no version: only sidecars do
    with Traffic(port, bodies(requests=5), rate=20, max_seconds=0.5) as load:
        wait_until(load.done, 20, "the time bound")
    assert 1 <= len(load.answers) <= 10


@pytest.mark.parametrize("secret", [b"s3cret", b"other"])
def test_the_webhook_receiver_keeps_every_event_and_checks_signatures_over_the_raw_body(secret):
    receiver = WebhookReceiver()
    try:
        raw = json.dumps({"version": "1", "kind": "canary", "status": "started", "model": "tabular"}).encode()
        request = urllib.request.Request(receiver.url, data=raw, method="POST", headers={
            "Content-Type": "application/json", "X-Sidemesh-Signature": signature(b"s3cret", raw)})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert [e["status"] for e in receiver.events("canary")] == ["started"] and receiver.events("drift") == []
        assert receiver.signed_with(secret) is (secret == b"s3cret")
    finally:
        receiver.close()
