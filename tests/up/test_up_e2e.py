"""``sidemesh up`` end to end, driven as a user drives it: a subprocess on free loopback
ports, called through the V2 API (Triton's client, REST and gRPC) and the traffic
commands, stopped with Ctrl-C (SIGINT) or SIGTERM, started again on the same state directory.

After every stop: ``up`` exited 0, no process is left in any child's process group, and
every port of the plan can be bound again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.control_plane.peers import wait_until
from tests.up.peers import UpProcess, bound_ports, path_without_monitoring, processes_in_groups

MODEL = "tabular"
CHILDREN = {"control-plane", "drift", *(f"{kind}-{v}" for kind in ("model-server", "sidecar") for v in "123")}


def _features(rows: int = 4) -> np.ndarray:
    return np.random.default_rng(5).normal(size=(rows, 8)).astype(np.float32)


def _infer_rest(port: int) -> np.ndarray:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        tensor = httpclient.InferInput("features", [4, 8], "FP32")
        tensor.set_data_from_numpy(_features())
        return client.infer(MODEL, [tensor]).as_numpy("label")
    finally:
        client.close()


def _infer_grpc(port: int) -> np.ndarray:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        tensor = grpcclient.InferInput("features", [4, 8], "FP32")
        tensor.set_data_from_numpy(_features())
        return client.infer(MODEL, [tensor]).as_numpy("label")
    finally:
        client.close()


def _sidemesh(up: UpProcess, *args: str) -> subprocess.CompletedProcess:
    """A traffic command against this mesh's control plane, with its token."""
    return subprocess.run([sys.executable, "-m", "sidemesh", *args, "--control-plane", up.url("control_admin")],
                          env=dict(os.environ, SIDEMESH_TOKEN=up.token), capture_output=True, text=True, timeout=60)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _assert_everything_stopped(up: UpProcess, code: int) -> None:
    assert code == 0, up.output()
    assert re.search(r"^sidemesh up: stopped \d+ processes; no process left, every port free", up.output(), re.M), up.output()
    pgids = {child["pgid"] for child in up.doc["children"]}
    assert len(pgids) == len(up.doc["children"])  # each child leads its own group
    assert processes_in_groups(pgids) == []
    assert bound_ports(list(up.doc["ports"].values())) == []
    assert not (up.state_dir / "up.json").exists()


def _weights(routes_output: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(\d)\s+(\d+)\s", routes_output, re.M))


def test_up_serves_v2_takes_route_changes_stops_cleanly_and_resumes_with_the_same_route(tmp_path: Path):
    state = tmp_path / "state"
    with UpProcess(state, "--scrape-interval", "1") as up:
        doc = up.ready()
        assert {c["name"] for c in doc["children"]} == CHILDREN | {"prometheus", "alertmanager"}
        assert not (state / "models" / "heavy").exists()  # only the small example the mesh serves
        entry = doc["plan"]["versions"][0]
        assert _infer_rest(entry["sidecar_http"]).shape == (4,)
        assert _infer_grpc(entry["sidecar_grpc"]).shape == (4,)

        split = _sidemesh(up, "split", MODEL, "1=30", "2=70")
        assert split.returncode == 0, split.stderr
        up.wait_for(r"route tabular \(routing version \d+\): 1=30 2=70 3=0; no mirror", timeout=30)  # on the board

        refused = subprocess.run([sys.executable, "-m", "sidemesh", "up", "--state-dir", str(state), "--ports", "free"],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert f"another `sidemesh up` (pid {up.proc.pid}) is using {state}" in refused.stderr

        prometheus = f"{up.url('prometheus')}/api/v1/targets"

        def every_target_up() -> list | None:
            targets = _get_json(prometheus)["data"]["activeTargets"]
            return targets if targets and all(t["health"] == "up" for t in targets) else None

        targets = wait_until(every_target_up, timeout=30, what="Prometheus to scrape every component")
        scraped = {t["labels"]["instance"] for t in targets}
        ports = [v[k] for v in doc["plan"]["versions"] for k in ("sidecar_admin", "model_http")]
        ports += [doc["plan"]["control_admin"], doc["plan"]["drift_http"]]
        assert scraped == {f"127.0.0.1:{p}" for p in ports}
        rules = _get_json(f"{up.url('prometheus')}/api/v1/rules")["data"]["groups"]
        assert any(r["name"] == "SidemeshDriftDetected" for g in rules for r in g["rules"])
        with urllib.request.urlopen(f"{up.url('alertmanager')}/-/ready", timeout=10) as response:
            assert response.status == 200

        _assert_everything_stopped(up, up.interrupt())

    with UpProcess(state, path=path_without_monitoring()) as again:
        again.wait_for(r"^sidemesh up: prometheus and alertmanager not found on the PATH, so not started; "
                       r"install them with `apt-get install prometheus prometheus-alertmanager`")
        again.wait_for(r"^sidemesh up: route tabular kept from the last run \(routing version \d+\): 1=30 2=70 3=0")
        again.wait_for(r"^sidemesh up: drift references of versions 1, 2, 3 kept from the last run")
        doc = again.ready()
        assert {c["name"] for c in doc["children"]} == CHILDREN
        assert again.token == up.token
        routes = _sidemesh(again, "routes", MODEL)
        assert routes.returncode == 0, routes.stderr
        assert _weights(routes.stdout) == {"1": "30", "2": "70", "3": "0"}, routes.stdout
        assert _infer_rest(doc["plan"]["versions"][1]["sidecar_http"]).shape == (4,)  # any sidecar is an entry
        _assert_everything_stopped(again, again.interrupt(signal.SIGTERM))


def test_the_demo_moves_the_split_mirrors_and_delivers_a_signed_drift_alert(tmp_path: Path):
    with UpProcess(tmp_path / "state", "--demo", "--exit-after-demo", path=path_without_monitoring()) as up:
        up.ready()
        first = up.wait_for(r"demo: 320/320 answered, by version 1: (\d+)%, version 2: (\d+)%")
        assert 80 <= int(first[1]) <= 97, first[0]  # 90/10
        up.wait_for(r"demo: phase 2/4")
        second = up.wait_for(r"demo: 320/320 answered, by version 1: (\d+)%, version 2: (\d+)%")
        assert 35 <= int(second[1]) <= 65, second[0]  # 50/50
        board = up.wait_for(r"^  version 3: .*, shadow [\d.]+/s, agreement (\d+)/(\d+) rows", timeout=30)
        assert 0 < int(board[1]) <= int(board[2])
        agreement = up.wait_for(r"demo: version 3 agreed with the primaries on (\d+) of (\d+) rows")
        assert int(agreement[2]) >= 240 * 8 * 0.9
        up.wait_for(r"demo: phase 4/4: shift features")
        alert = up.wait_for(r"ALERT FIRING SidemeshInputDrift model tabular version ([123]): Input drift in tabular "
                            r"version \1: \d of 8 features drifted .*\[from the drift detector, signature verified\]", timeout=90)
        assert alert[1] in "123"
        up.wait_for(r"demo: done in \d+ s$")
        _assert_everything_stopped(up, up.wait_exit())
