"""The traffic commands as a user runs them: ``python -m sidemesh ...`` subprocesses
against the real admin app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.control_plane.conftest import ADMIN_TOKEN, READ_TOKEN

ROOT = Path(__file__).resolve().parents[2]


def sidemesh(admin, *args: str, token: str | None = ADMIN_TOKEN, url: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SIDEMESH_TOKEN"}
    if token is not None:
        env["SIDEMESH_TOKEN"] = token
    cmd = [sys.executable, "-m", "sidemesh", *args, "--control-plane", url or admin.url]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def weights(admin, model: str = "m") -> dict[str, int]:
    return admin.store.get(model)[0].weights


def mirrors(admin, model: str = "m") -> dict[str, float]:
    return {m.version: m.percent for m in admin.store.get(model)[0].mirrors}


def test_split_creates_a_route_then_changes_its_weights(admin):
    created = sidemesh(admin, "split", "m", "v1=100")
    assert created.returncode == 0, created.stderr
    assert weights(admin) == {"v1": 100}

    changed = sidemesh(admin, "split", "m", "v1=90", "v2=10")
    assert changed.returncode == 0, changed.stderr
    assert weights(admin) == {"v1": 90, "v2": 10}
    assert f"routing version {admin.store.version}" in changed.stdout
    assert "90.0%" in changed.stdout and "10.0%" in changed.stdout
    assert "backends.v1.weight: 100 -> 90" in changed.stdout


def test_split_keeps_unlisted_versions_at_weight_zero_and_keeps_mirrors(admin):
    admin.call("PUT", "/v1/routes/m", {"backends": [{"version": "v1", "weight": 1}, {"version": "v3", "weight": 0}],
                                       "mirrors": [{"version": "v3", "percent": 5}], "timeout_ms": 1234})
    result = sidemesh(admin, "split", "m", "v2=1")
    assert result.returncode == 0, result.stderr
    route = admin.store.get("m")[0]
    assert route.weights == {"v1": 0, "v3": 0, "v2": 1}
    assert mirrors(admin) == {"v3": 5} and route.timeout_ms == 1234


def test_mirror_turns_on_replaces_and_turns_off(admin):
    sidemesh(admin, "split", "m", "v1=100")
    on = sidemesh(admin, "mirror", "m", "--to", "v3", "--percent", "5")
    assert on.returncode == 0, on.stderr
    assert weights(admin) == {"v1": 100, "v3": 0} and mirrors(admin) == {"v3": 5}
    assert "mirroring 5% to v3" in on.stdout

    assert sidemesh(admin, "mirror", "m", "--to", "v3", "--percent", "0.5").returncode == 0
    assert sidemesh(admin, "mirror", "m", "--to", "v4", "--percent", "1").returncode == 0
    assert mirrors(admin) == {"v3": 0.5, "v4": 1}

    assert sidemesh(admin, "mirror", "m", "--to", "v3", "--off").returncode == 0
    assert mirrors(admin) == {"v4": 1}
    assert sidemesh(admin, "mirror", "m", "--off").returncode == 0
    assert mirrors(admin) == {} and weights(admin) == {"v1": 100, "v3": 0, "v4": 0}

    before = admin.store.version
    unchanged = sidemesh(admin, "mirror", "m", "--off")
    assert unchanged.returncode == 0 and "nothing changed" in unchanged.stdout
    assert admin.store.version == before


def test_routes_prints_weights_mirrors_and_which_nodes_applied_them(admin):
    admin.call("PUT", "/v1/routes/earlier", {"backends": [{"version": "v1", "weight": 1}]})
    admin.call("PUT", "/v1/routes/m", {"backends": [{"version": "v1", "weight": 3}, {"version": "v2", "weight": 1},
                                                    {"version": "v3", "weight": 0}],
                                       "mirrors": [{"version": "v3", "percent": 2.5}]})
    version = admin.store.version
    node = {"model": "m", "connected": True, "connected_at": 1.0, "last_nack": None}
    admin.nodes.extend([
        {**node, "id": "sc-applied", "version": "v1", "address": "127.0.0.1:1001", "acked_state_version": version},
        {**node, "id": "sc-behind", "version": "v2", "address": "127.0.0.1:1002", "acked_state_version": version - 1,
         "last_nack": {"type_url": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                       "version": str(version), "error": "unknown cluster m/v9", "at": 2.0}},
        {**node, "id": "sc-gone", "version": "v1", "address": "127.0.0.1:1003", "acked_state_version": version,
         "connected": False},
        {**node, "id": "sc-other", "model": "other", "version": "v1", "address": "127.0.0.1:1004", "acked_state_version": None},
        {**node, "id": "front-proxy", "model": None, "version": None, "address": None, "acked_state_version": version},
    ])

    result = sidemesh(admin, "routes", token=READ_TOKEN)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"m: routing version {version}" in out
    assert "75.0%" in out and "25.0%" in out and "2.5%" in out
    assert f"2 of 3 connected have applied version {version}" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  sc-") or line.startswith("  front")}
    assert "applied" in lines["sc-applied"] and "waiting" in lines["sc-behind"] and "disconnected" in lines["sc-gone"]
    assert "applied" in lines["front-proxy"]  # a node without a model routes every model
    assert "last NACK from sc-behind" in out and "unknown cluster m/v9" in out
    assert "other: no route; 1 node(s) known" in out

    one = sidemesh(admin, "routes", "m", token=READ_TOKEN)
    assert one.returncode == 0 and "sc-other" not in one.stdout and "sc-applied" in one.stdout


def test_rollback_restores_the_previous_weights(admin):
    sidemesh(admin, "split", "m", "v1=100")
    sidemesh(admin, "split", "m", "v1=50", "v2=50")
    result = sidemesh(admin, "rollback", "m")
    assert result.returncode == 0, result.stderr
    assert weights(admin) == {"v1": 100}
    assert f"routing version {admin.store.version}" in result.stdout and "100.0%" in result.stdout


def test_a_rejected_change_exits_1_with_the_control_planes_reason(admin):
    sidemesh(admin, "split", "m", "v1=100")
    sidemesh(admin, "mirror", "m", "--to", "v3", "--percent", "5")
    before = admin.store.version

    result = sidemesh(admin, "split", "m", "v3=5")
    assert result.returncode == 1
    assert "mirrors[0].version" in result.stderr and "weight 0" in result.stderr
    assert sidemesh(admin, "mirror", "m", "--to", "v1", "--percent", "5").returncode == 1
    assert sidemesh(admin, "mirror", "m", "--to", "v3", "--percent", "150").returncode == 1
    assert admin.store.version == before


def test_a_refused_token_exits_1_with_the_reason(admin):
    result = sidemesh(admin, "split", "m", "v1=100", token=READ_TOKEN)
    assert result.returncode == 1 and "'admin' token" in result.stderr
    result = sidemesh(admin, "routes", token=None)
    assert result.returncode == 1 and "SIDEMESH_TOKEN" in result.stderr


def test_commands_on_an_unknown_model_exit_1(admin):
    for args in (["rollback", "nope"], ["routes", "nope"], ["mirror", "nope", "--to", "v2", "--percent", "1"]):
        result = sidemesh(admin, *args)
        assert result.returncode == 1 and "'nope'" in result.stderr, args


def test_an_unreachable_control_plane_exits_1(admin):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound but not listening: refused
        result = sidemesh(admin, "split", "m", "v1=100", url=closed)
    assert result.returncode == 1
    assert "cannot reach the control plane" in result.stderr


@pytest.mark.parametrize("args", [
    ["split", "m", "v1=abc"], ["split", "m", "v1"], ["split", "m"], ["split", "m", "v1=1", "v1=2"],
    ["mirror", "m", "--to", "v2", "--percent", "lots"], ["mirror", "m", "--to", "v2"], ["mirror", "m", "--percent", "5"],
    ["mirror", "m", "--off", "--percent", "5"], ["routes", "--control-plane", "localhost:15000"],
], ids=lambda a: " ".join(a))
def test_a_usage_error_exits_2_and_changes_nothing(admin, args):
    result = sidemesh(admin, *args)
    assert result.returncode == 2
    assert "usage: sidemesh" in result.stderr
    assert admin.store.version == 0


@pytest.mark.parametrize("command", ["split", "mirror", "routes", "rollback"])
def test_each_command_explains_itself(command):
    result = subprocess.run([sys.executable, "-m", "sidemesh", command, "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0
    assert "--control-plane" in result.stdout and "SIDEMESH_TOKEN" in result.stdout and "exit codes" in result.stdout
