"""The committed dashboards are the generator's output, fit Grafana's dashboard schema (as
grafana-foundation-sdk models it for Grafana 11.6), and promise only what exists: units on
every panel, the template variables, metric names the code exports or rules.yaml records.
The live proof that every query returns data is test_live_mesh.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from tests.monitoring.panels import DASHBOARD_FILES, fill, label_values_query, query_variables, read_board, targets
from tools.monitoring.generate import MONITORING, render

ROOT = MONITORING.parents[1]
SOURCES = [ROOT / p for p in ("sidecar", "control_plane", "drift", "model_server")]
_METRIC = re.compile(r"\b(sidemesh_[a-z0-9_]+)\b")
_RECORDED = re.compile(r"\b(sidemesh:[a-z0-9_:]+)\b")


def test_the_committed_files_are_what_the_generator_writes():
    for path, text in render().items():
        assert path.exists(), f"{path} is missing: run python -m tools.monitoring.generate"
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is out of date: run python -m tools.monitoring.generate"
    assert {p.name for p in DASHBOARD_FILES} == {"latency.json", "drift.json"}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_a_dashboard_survives_grafanas_schema_unchanged(path: Path):
    """Decoding into the SDK's typed models and encoding again drops every key the schema does
    not know and normalizes what it does, so an unchanged round trip means a clean dashboard."""
    register_default_plugins()
    board = read_board(path)
    again = json.loads(JSONEncoder(sort_keys=True).encode(Dashboard.from_json(board)))
    assert again == board


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_panel_has_a_unit_the_datasource_variable_and_legends(path: Path):
    board = read_board(path)
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"]), "panel ids must be unique"
    for panel in panels:
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], panel["title"]
        assert panel["targets"] and all(t["legendFormat"] for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_the_variables_are_namespace_model_and_version_and_every_query_fills_in(path: Path):
    board = read_board(path)
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "namespace", "model", "version"]
    values = {"namespace": "models", "model": "tabular", "version": "1", "__rate_interval": "1m"}
    for variable in query_variables(board):
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*", variable["name"]
        label, selector = label_values_query(fill(variable["query"], values))
        assert label == variable["name"]
    exprs = [t.expr for t in targets(board)]
    for expr in exprs:
        assert "$" not in fill(expr, values)
    for name in ("namespace", "model", "version"):
        assert any(f"${name}" in e for e in exprs), f"no query filters on ${name}"


def _exported_names() -> str:
    return "\n".join(p.read_text() for root in SOURCES for p in root.rglob("*.py"))


def test_every_metric_a_panel_reads_is_exported_by_the_code_or_recorded_by_the_rules():
    code = _exported_names()
    rules = yaml.safe_load((MONITORING / "rules.yaml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    missing = set()
    for path in DASHBOARD_FILES:
        for target in targets(read_board(path)):
            missing |= {name for name in _RECORDED.findall(target.expr) if name not in recorded}
            for name in _METRIC.findall(target.expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                # prometheus_client names counters without _total; the sidecar's own metrics with it
                if f'"{base}"' not in code and f'"{base.removesuffix("_total")}"' not in code:
                    missing.add(name)
    assert not missing, f"panels read series nothing produces: {sorted(missing)}"
