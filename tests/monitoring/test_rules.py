"""The Prometheus rules: promtool accepts them, promtool's unit tests (rules_test.yaml) pass
and show every alert both firing and quiet, every alert says what to do, and the
PrometheusRule that kustomize deploys carries exactly these groups."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tools.monitoring.generate import MONITORING

RULES = MONITORING / "rules.yaml"
UNIT_TESTS = Path(__file__).with_name("rules_test.yaml")
DOCS = MONITORING.parents[1] / "docs" / "monitoring.md"


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(binary).exists(), "promtool is not installed: apt-get install prometheus (Debian), as .ci/run does"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


def test_promtool_accepts_the_rules():
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass():
    done = promtool("test", "rules", str(UNIT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing():
    firing, quiet = set(), set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in _alerts()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown quiet"
    assert (firing | quiet) - names == set(), "tests for alerts that do not exist"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section_in_the_docs():
    anchors = {re.sub(r"[^a-z0-9-]", "", line[4:].strip().lower().replace(" ", "-"))
               for line in DOCS.read_text().splitlines() if line.startswith("### ")}
    for alert in _alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        runbook = alert["annotations"]["runbook"]
        assert runbook == f"docs/monitoring.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/monitoring.md has no '### {name}' section"


def test_the_prometheus_rule_carries_exactly_the_rule_groups():
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
