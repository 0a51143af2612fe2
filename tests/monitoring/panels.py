"""Reading the committed dashboards as Grafana would: every panel's queries, every template
variable, and Grafana's variable interpolation for a chosen value of each variable."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from tools.monitoring.generate import MONITORING

__all__ = ["DASHBOARD_FILES", "Target", "read_board", "targets", "query_variables", "fill", "label_values_query"]

DASHBOARD_FILES = sorted((MONITORING / "dashboards").glob("*.json"))

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$", re.S)


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref: str
    expr: str
    unit: str | None

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def read_board(path: Path) -> dict:
    return json.loads(path.read_text())


def _panels(board: dict):
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def targets(board: dict) -> list[Target]:
    found = []
    for panel in _panels(board):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        for target in panel.get("targets", []):
            found.append(Target(board["title"], panel["title"], target["refId"], target["expr"], unit))
    return found


def query_variables(board: dict) -> list[dict]:
    return [v for v in board["templating"]["list"] if v["type"] == "query"]


def fill(text: str, values: dict[str, str]) -> str:
    """Grafana's interpolation of ``$name`` / ``${name}`` (one value per variable; these values
    need no regex escaping). An unknown variable is an error, not left in the query."""
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"no value for ${name} in {text!r}")
        return values[name]

    return _VARIABLE.sub(replace, text)


def label_values_query(query: str) -> tuple[str, str | None]:
    """(label, series selector or None) of a Grafana ``label_values(...)`` variable query."""
    match = _LABEL_VALUES.match(query.strip())
    if match is None:
        raise AssertionError(f"expected label_values([selector,] label), got {query!r}")
    return match.group("label"), match.group("match")
