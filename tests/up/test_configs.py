"""Prometheus and Alertmanager configs that their own checkers accept, and the binaries
found on the PATH or said to be missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from sidemesh.up.config import PortPlan
from sidemesh.up.configs import (alertmanager_argv, alertmanager_config, find_monitoring, prometheus_argv, prometheus_config,
                                 rules_file, write_yaml)

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    assert Path(path).exists(), f"{name} is not installed: apt-get install prometheus prometheus-alertmanager, as .ci/run does"
    return path


def test_prometheus_scrapes_every_component_loads_the_rules_and_alerts_through_alertmanager(tmp_path: Path):
    plan = PortPlan.default()
    config = prometheus_config(plan, 5, alertmanager=True, rules=rules_file())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs == {"sidemesh-sidecars": ["127.0.0.1:15020", "127.0.0.1:15120", "127.0.0.1:15220"],
                    "sidemesh-model-servers": ["127.0.0.1:8000", "127.0.0.1:8100", "127.0.0.1:8200"],
                    "sidemesh-control-plane": ["127.0.0.1:15000"], "sidemesh-drift": ["127.0.0.1:9000"]}
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == [str(REPO / "manifests" / "monitoring" / "rules.yaml")]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]
    path = write_yaml(tmp_path / "prometheus.yml", config)
    checked = subprocess.run([_tool("promtool"), "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr


def test_without_alertmanager_or_rules_prometheus_only_scrapes():
    config = prometheus_config(PortPlan.default(), 1, alertmanager=False, rules=None)
    assert "alerting" not in config and "rule_files" not in config
    assert config["global"]["scrape_timeout"] == "1s"


def test_alertmanager_sends_everything_quickly_to_the_local_receiver(tmp_path: Path):
    config = alertmanager_config("http://127.0.0.1:9002/alertmanager")
    assert config["route"]["group_wait"] == "2s"
    assert config["receivers"][0]["webhook_configs"] == [{"url": "http://127.0.0.1:9002/alertmanager", "send_resolved": True}]
    path = write_yaml(tmp_path / "alertmanager.yml", config)
    assert yaml.safe_load(path.read_text()) == config  # the generated-by comment is only a comment
    checked = subprocess.run([_tool("amtool"), "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_binaries_are_looked_up_on_the_path(tmp_path: Path):
    assert find_monitoring(str(tmp_path)).missing() == ["prometheus", "alertmanager"]
    for name in ("prometheus", "alertmanager"):  # upstream's name for Alertmanager works as well as Debian's
        fake = tmp_path / name
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
    found = find_monitoring(str(tmp_path))
    assert (found.prometheus, found.alertmanager, found.missing()) == (str(tmp_path / "prometheus"), str(tmp_path / "alertmanager"), [])


def test_both_bind_loopback_and_alertmanager_runs_without_a_cluster_port(tmp_path: Path):
    assert "--web.listen-address=127.0.0.1:9090" in prometheus_argv("prometheus", tmp_path / "p.yml", tmp_path / "d", 9090)
    argv = alertmanager_argv("alertmanager", tmp_path / "a.yml", tmp_path / "d", 9093)
    assert "--web.listen-address=127.0.0.1:9093" in argv and "--cluster.listen-address=" in argv
