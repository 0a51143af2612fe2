"""``sidemesh canary`` as a process against the real control plane of a real mesh: ``start
--wait`` follows a canary to its end (exit 0 promoted, 1 rolled back or aborted), even
across a control plane restart; ``status`` and ``list`` show it, ``abort`` restores the
route, and every refusal of the control plane is shown as it said it (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.canary.mesh import BASELINE, CANDIDATE

FAST = ("--no-drift", "--steps", "50,100", "--interval", "1", "--min-requests", "20", "--step-timeout", "20")


def test_start_wait_follows_a_good_candidate_to_promotion_and_status_and_list_show_it(canary_mesh):
    mesh = canary_mesh("good")
    with mesh.traffic(rate=100, max_seconds=60):
        done = mesh.cli("start", "tabular", "--to", CANDIDATE, *FAST, "--wait")
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("tabular: canary c-") and lines[0].endswith(f"started: version 2 against {BASELINE}=100")
    events = [line.split()[1] for line in lines[2:-1]]
    assert events == ["started", "step", "promoted"], done.stdout
    assert lines[-1] == "tabular: version 2 promoted to 100%"

    status = mesh.cli("status", "tabular")
    assert status.returncode == 0 and status.stdout.startswith("tabular: canary c-")
    assert ": promoted (finished " in status.stdout and "; candidate 2 now at 100%" in status.stdout
    assert "    error ratio  0 " in status.stdout and "  history:" in status.stdout
    doc = json.loads(mesh.cli("status", "tabular", "--json").stdout)
    assert (doc["state"], doc["active"], doc["weight"]) == ("promoted", False, 100)
    listed = mesh.cli("list").stdout.splitlines()
    assert listed[0].split() == ["MODEL", "CANARY", "CANDIDATE", "STATE", "WEIGHT", "STARTED", "REASON"]
    assert listed[1].split()[:5] == ["tabular", doc["id"], CANDIDATE, "promoted", "100%"]
    mesh.wait_event("promoted")  # and the control plane told the webhook, signed
    assert [e["status"] for e in mesh.events()] == ["started", "step", "promoted"]
    assert mesh.receiver.signed_with(mesh.secret)


def test_start_wait_follows_across_a_control_plane_restart_and_exits_1_when_the_canary_is_aborted(canary_mesh):
    mesh = canary_mesh("good")
    before = mesh.route()["route"]["backends"]
    follower = subprocess.Popen([sys.executable, "-m", "sidemesh", "canary", "start", "tabular", "--to", CANDIDATE,
                                 "--no-drift", "--steps", "10,100", "--interval", "1h", "--wait",
                                 "--control-plane", mesh.cp.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        mesh.wait_canary(lambda doc: doc["history"], 30, "the canary to start")
        mesh.cp.stop()  # the follower keeps asking while the control plane restarts, and the canary resumes
        mesh.cp.start()
        assert any("resumed 1 canary" in line for line in mesh.cp.lines)
        aborted = mesh.cli("abort", "tabular")
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert aborted.returncode == 0, aborted.stderr
    assert aborted.stdout.strip().endswith(f"aborted; route restored to {BASELINE}=100")
    assert follower.returncode == 1, (out, err)
    assert out.splitlines()[-1].startswith("tabular: canary aborted") and f"route restored to {BASELINE}=100" in out
    assert mesh.route()["route"]["backends"] == before
    again = mesh.cli("abort", "tabular")
    assert again.returncode == 1 and again.stderr.startswith("sidemesh canary abort: ") and again.stdout == ""


def test_refusals_exit_1_with_the_control_planes_reason_and_a_rollback_at_the_failed_gate(canary_mesh):
    mesh = canary_mesh("errors", error_share=0.25)
    refusals = {("status", "tabular"): "tabular",  # no canary yet: 404
                ("start", "tabular", "--to", "9", "--no-drift"): "9",  # no sidecar of version 9: 409
                ("start", "tabular", "--to", CANDIDATE): "drift",  # drift gate on, but no --drift-url: 409
                ("start", "nomodel", "--to", CANDIDATE, "--no-drift"): "nomodel"}  # no route: 404
    for argv, named in refusals.items():
        done = mesh.cli(*argv)
        assert (done.returncode, done.stdout) == (1, ""), (argv, done.stdout, done.stderr)
        assert done.stderr.startswith(f"sidemesh canary {argv[0]}: ") and len(done.stderr.splitlines()) == 1, done.stderr
        assert named in done.stderr.split(":", 1)[1], (argv, done.stderr)
    assert mesh.cp.api("GET", "/v1/canaries") == (200, {"canaries": []})

    with mesh.traffic(rate=100, max_seconds=60):
        done = mesh.cli("start", "tabular", "--to", CANDIDATE, *FAST, "--wait")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout.splitlines()[-1].startswith("tabular: canary rolled back at gate error_ratio: step 1/2 (50%): error ratio ")
    status = mesh.cli("status", "tabular").stdout
    assert "  reason: step 1/2 (50%): error ratio " in status and "(failed gate: error_ratio)" in status and "FAIL" in status
