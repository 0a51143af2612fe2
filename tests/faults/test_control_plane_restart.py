"""Control plane killed (SIGKILL) and restarted on the same ports and state while traffic
flows through a sidecar that splits it between two versions: no request fails, and
weights changed as soon as the control plane is back are in force in every sidecar
within 2 s of its return.

"Its return" is the moment the restarted control plane printed its ready line; the
weights are PUT at once, and "applied" is when every sidecar's /config_dump shows the
route at that state version (polled every 10 ms)."""

from __future__ import annotations

import json
import time

from tests.faults.load import ClosedLoop, infer_body
from tests.faults.peers import ControlPlaneAsShipped, applied_state, kill9, until
from tests.sidecar.peers import SidecarProcess, total

MODEL = "tabular"
APPLY_WITHIN_S = 2.0


def route(v1: int, v2: int) -> dict:
    return {"backends": [{"version": "1", "weight": v1}, {"version": "2", "weight": v2}]}


def put(cp: ControlPlaneAsShipped, doc: dict) -> int:
    status, body = cp.api("PUT", f"/v1/routes/{MODEL}", doc)
    assert status == 200, body
    return body["version"]


def endpoints(sidecar: SidecarProcess) -> dict:
    table = json.loads(sidecar.admin("/config_dump")[2]).get("table") or {}
    return {name: len(c.get("endpoints", [])) for name, c in (table.get("clusters") or {}).items()}


def when_all(*conditions, timeout: float) -> list[float]:
    """The monotonic time each condition was first seen true, polling all every 10 ms."""
    seen: list[float | None] = [None] * len(conditions)
    deadline = time.monotonic() + timeout
    while None in seen:
        now = time.monotonic()
        for i, condition in enumerate(conditions):
            if seen[i] is None and condition():
                seen[i] = now
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f} s: reconnected at {seen[0]}, new weights applied at {seen[1]}")
        time.sleep(0.01)
    return seen


def test_a_control_plane_killed_under_load_fails_no_request_and_new_weights_apply_within_2_s_of_its_return(
        tmp_path, server, figure):
    cp = ControlPlaneAsShipped(tmp_path / "cp.db").start()
    xds = f"127.0.0.1:{cp.xds_port}"
    sidecars = [SidecarProcess(MODEL, v, server.http, control_plane=xds, extra_args=["--static-after", "never"])
                for v in ("1", "2")]
    load = None
    try:
        for sidecar in sidecars:
            sidecar.start(wait_ready=False)
        first = put(cp, route(50, 50))
        until(lambda: all(applied_state(s, MODEL) >= first for s in sidecars), 30, "the first routes in every sidecar")
        until(lambda: all(endpoints(s).get(f"{MODEL}|{v}") == 1 for s in sidecars for v in ("1", "2")), 30,
              "every version's endpoint in every sidecar")
        entry = sidecars[0]
        load = ClosedLoop(entry.port, f"/v2/models/{MODEL}/infer", infer_body(), threads=3, max_requests=40_000,
                          max_seconds=90)
        with load:
            load.wait_for(300, what="answers before the kill")
            signalled, _ = kill9(cp.popen)
            cp.stop()
            until(lambda: all(total(s.metrics(), "sidemesh_xds_connected") == 0 for s in sidecars), 10,
                  "the sidecars noticing the control plane is gone")
            load.wait_for(load.count() + 300, what="answers while the control plane is gone")
            cp = ControlPlaneAsShipped(cp.state, admin_port=cp.admin_port, xds_port=cp.xds_port).start()
            back = time.monotonic()
            second = put(cp, route(10, 90))
            reconnected, applied = when_all(
                lambda: all(total(s.metrics(), "sidemesh_xds_connected") == 1 for s in sidecars),
                lambda: all(applied_state(s, MODEL) >= second for s in sidecars), timeout=10)
            mark = load.count()
            load.wait_for(mark + 1000, what="answers after the new weights")
        answers = load.answers
    finally:
        if load is not None:
            load.stop()
        for sidecar in sidecars:
            if hasattr(sidecar, "proc"):
                sidecar.stop()
        cp.stop()

    failed = [(a.status, a.body[:200]) for a in answers if a.status != 200]
    during = [a for a in answers if signalled <= a.sent <= back]
    apply_s = applied - back
    figure("control plane killed and restarted",
           requests=len(answers), failed=len(failed), requests_while_down=len(during),
           control_plane_down_s=back - signalled, new_weights_applied_after_return_s=apply_s,
           sidecars_reconnected_after_return_s=reconnected - back)
    assert failed == [], f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    assert len(during) >= 300 and {a.version for a in during} == {"1", "2"}  # split as before, from the last table
    later = answers[mark:]
    twos = sum(a.version == "2" for a in later) / len(later)
    assert 0.85 < twos < 0.95, twos  # the new weights (10/90) are in force
    assert apply_s <= APPLY_WITHIN_S, (f"the new weights took {apply_s:.2f} s after the control plane's return "
                                       f"(reconnected after {reconnected - back:.2f} s)")
