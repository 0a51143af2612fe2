"""The issue's scenarios, each with real processes: a good candidate is promoted; a candidate
with more errors, a slower one, one whose answers disagree in the shadow phase and one that
raises a drift verdict are each rolled back at the right gate, with the reason in
``sidemesh canary status`` and in the webhook event, and the route restored. One more runs
the gates on Prometheus's numbers instead of the sidecars' load reports."""

from __future__ import annotations

from tests.canary.mesh import BASELINE, CANDIDATE
from tests.control_plane.peers import free_port, wait_until
from tests.monitoring.prometheus import Job, PrometheusProcess

FAST = dict(steps=[50, 100], interval_s=1, min_requests=20, step_timeout_s=30)
BEFORE = [{"version": BASELINE, "weight": 100}, {"version": CANDIDATE, "weight": 0}]


def _rolled_back_at(mesh, gate: str, phrase: str, timeout: float = 60.0) -> dict:
    """The canary ends rolled back at ``gate``; the reason is in the status doc, in `canary
    status` and in the signed webhook event; the route is as before the canary."""
    doc = mesh.wait_canary(timeout=timeout)
    assert (doc["state"], doc["failed_gate"]) == ("rolled_back", gate), doc
    assert phrase in doc["reason"], doc["reason"]
    shown = mesh.cli("status", "tabular")
    assert shown.returncode == 0 and "rolled_back" in shown.stdout and phrase in shown.stdout, shown.stdout
    event = mesh.wait_event("rolled_back")
    assert event["details"]["failed_gate"] == gate and phrase in event["summary"] and event["details"]["canary"] == doc["id"]
    assert [e["status"] for e in mesh.events()][-1] == "rolled_back" and mesh.receiver.signed_with(mesh.secret)
    assert mesh.route()["route"]["backends"] == BEFORE
    return doc


def test_a_good_candidate_passes_the_shadow_phase_and_every_step_and_is_promoted(canary_mesh):
    mesh = canary_mesh("good", detector=True)
    with mesh.traffic(rate=100, max_seconds=90):
        mesh.start_canary(shadow_first=True, **FAST)
        doc = mesh.wait_canary(timeout=80)
    assert doc["state"] == "promoted" and doc["weight"] == 100 and doc["reason"] is None, doc
    assert [h["event"] for h in doc["history"]] == ["started", "step", "step", "promoted"]
    assert {g["gate"]: g["ok"] for g in doc["gates"]} == {"samples": True, "error_ratio": True, "drift": True}
    assert {b["version"]: b["weight"] for b in mesh.route()["route"]["backends"]} == {BASELINE: 0, CANDIDATE: 10000}
    mesh.wait_event("promoted")
    assert [e["status"] for e in mesh.events()] == ["started", "step", "step", "promoted"]
    assert mesh.receiver.signed_with(mesh.secret)
    history = mesh.cp.api("GET", "/v1/history?model=tabular")[1]["changes"]
    ours = [c for c in reversed(history) if c["author"] == f"canary:{doc['id']}"]
    # The shadow route, then 50% and 100% (the last step already is the promotion: nothing more to write).
    assert [[m["version"] for m in c["route"]["mirrors"]] for c in ours] == [[CANDIDATE], [], []]
    assert [{b["version"]: b["weight"] for b in c["route"]["backends"]}[CANDIDATE] for c in ours] == [0, 5000, 10000]


def test_a_candidate_with_more_errors_is_rolled_back_at_the_error_gate(canary_mesh):
    mesh = canary_mesh("errors", error_share=0.25)
    with mesh.traffic(rate=100, max_seconds=60):
        mesh.start_canary(drift=False, **FAST)
        doc = _rolled_back_at(mesh, "error_ratio", "above the limit 0.01")
    assert doc["step"] == 0 and doc["measurement"]["errors"] > 0


def test_a_slower_candidate_is_rolled_back_at_the_latency_gate(canary_mesh):
    mesh = canary_mesh("slow", delay_s=0.15)
    with mesh.traffic(rate=100, max_seconds=60):
        mesh.start_canary(drift=False, max_p99_ms=100, **FAST)
        doc = _rolled_back_at(mesh, "p99", "above the limit 100 ms")
    assert doc["measurement"]["p99_s"] > 0.15 and doc["measurement"]["errors"] == 0


def test_a_candidate_whose_answers_disagree_is_rolled_back_in_the_shadow_phase(canary_mesh):
    mesh = canary_mesh("disagree")
    traffic = mesh.traffic(rate=100, max_seconds=60)
    with traffic:
        mesh.start_canary(drift=False, shadow_first=True, **FAST)
        doc = _rolled_back_at(mesh, "agreement", "below the minimum 0.98")
    assert doc["step"] is None and doc["reason"].startswith("shadow: ")
    assert doc["measurement"]["agreement"] < 0.5 and [h["event"] for h in doc["history"]] == ["started", "rolled_back"]
    # No client saw the candidate's answers: it was only ever a shadow.
    assert not [key for key in traffic.counts() if key[0] == CANDIDATE], traffic.counts()


def test_a_candidate_whose_inputs_drift_from_its_reference_is_rolled_back_at_the_drift_gate(canary_mesh):
    mesh = canary_mesh("drift")
    with mesh.traffic(rate=100, max_seconds=90):
        # A long interval: only the drift verdict can end this canary early.
        mesh.start_canary(steps=[50, 100], interval_s=120, min_requests=20)
        _rolled_back_at(mesh, "drift", "drift verdict", timeout=80)
    assert mesh.verdict(CANDIDATE)["verdict"] == "drift"


def test_gates_can_read_prometheus_instead_of_the_load_reports(canary_mesh, tmp_path):
    port = free_port()
    mesh = canary_mesh("errors", error_share=0.25, cp_args=("--prometheus-url", f"http://127.0.0.1:{port}"))
    sidecars = [f"127.0.0.1:{s.admin_port}" for s in (mesh.baseline, mesh.candidate)]
    prometheus = PrometheusProcess(tmp_path / "prometheus", [Job("sidemesh-sidecars", tuple(sidecars))], [], port=port).start()
    try:
        wait_until(lambda: len(prometheus.query("up == 1")) == 2, 30, "Prometheus to scrape both sidecars", every=0.2)
        with mesh.traffic(rate=100, max_seconds=60):
            mesh.start_canary(drift=False, **FAST)
            doc = _rolled_back_at(mesh, "error_ratio", "above the limit 0.01")
    finally:
        prometheus.stop()
    assert doc["measurement"]["error"] is None and doc["measurement"]["requests"] >= 20
