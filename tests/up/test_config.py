"""The port plan and the options: defaults as documented, every port distinct, bad input
named with the form expected."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sidemesh.up.cli import main
from sidemesh.up.config import PortPlan, UpConfig, VersionPorts, parse_ports
from sidemesh.up.errors import ConfigError


def test_the_default_plan_keeps_version_1_on_the_documented_ports_and_offsets_the_others():
    plan = parse_ports("default")
    assert (plan.control_admin, plan.control_xds, plan.drift_http, plan.drift_stats) == (15000, 15010, 9000, 9001)
    v1, v2, v3 = plan.versions
    assert (v1.model_http, v1.model_grpc, v1.sidecar_http, v1.sidecar_grpc, v1.sidecar_admin) == (8000, 8001, 15001, 15002, 15020)
    assert (v2.model_http, v2.sidecar_http, v2.sidecar_admin) == (8100, 15101, 15120)
    assert (v3.model_http, v3.sidecar_http, v3.sidecar_admin) == (8200, 15201, 15220)
    assert plan.entry is v1


def test_a_base_port_lays_every_port_out_upwards():
    plan = parse_ports("20000")
    assert [port for _, port in plan.named()] == list(range(20000, 20000 + PortPlan.size()))
    assert plan.named()[0] == ("control plane admin", 20000)
    assert ("v3 sidecar admin", 20000 + PortPlan.size() - 1) in plan.named()


def test_free_ports_are_all_different():
    ports = [port for _, port in parse_ports("free").named()]
    assert len(set(ports)) == len(ports) == PortPlan.size()


@pytest.mark.parametrize("text", ["nonsense", "80", "65530", "", "-1"])
def test_a_bad_plan_is_refused_with_the_forms_expected(text):
    with pytest.raises(ConfigError, match=r"--ports: expected 'default', 'free' or a base port 1024-\d+, got"):
        parse_ports(text)


def test_two_components_on_one_port_are_refused_naming_both():
    plan = PortPlan.default()
    with pytest.raises(ConfigError, match="ports.drift API: port 15000 is also control plane admin's"):
        replace(plan, drift_http=15000)
    with pytest.raises(ConfigError, match=r"ports.v2 sidecar admin: expected a port 1-65535, got 70000"):
        replace(plan, versions=(plan.versions[0], VersionPorts("2", 8100, 8101, 15101, 15102, 70000), plan.versions[2]))


def test_options_that_cannot_work_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="--exit-after-demo: only with --demo"):
        UpConfig(tmp_path, PortPlan.default(), exit_after_demo=True)
    with pytest.raises(ConfigError, match="--board-interval: expected a number of seconds > 0, got 0"):
        UpConfig(tmp_path, PortPlan.default(), board_interval=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="--state-dir: .* exists and is not a directory"):
        UpConfig(tmp_path / "file", PortPlan.default())


def test_the_command_exits_2_with_the_reason_on_bad_flags(tmp_path: Path, capsys):
    assert main(["--state-dir", str(tmp_path), "--ports", "somewhere"]) == 2
    assert "sidemesh up: --ports: expected 'default', 'free' or a base port" in capsys.readouterr().err
    assert main(["--state-dir", str(tmp_path), "--exit-after-demo"]) == 2
    assert "--exit-after-demo: only with --demo" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written for a run that cannot start
