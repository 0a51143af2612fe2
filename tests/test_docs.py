"""The docs stay true to the code: the command reference is what the commands print, every
metric the code defines and every annotation the injector reads is in docs/operations.md,
and every relative link in the docs leads to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from control_plane.injector.annotations import ANNOTATIONS
from tools.docs.reference import REFERENCE, render

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
PACKAGES = ("model_server", "control_plane", "sidecar", "drift", "sidemesh")
# Strings shaped like metric names that are not metrics (a log prefix, a config key).
NOT_METRICS = {"sidemesh_body", "sidemesh_inbound", "sidemesh_routes"}


def _defined_metrics() -> set[str]:
    names = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if not path.name.endswith("_pb2.py"):
                names.update(re.findall(r'"(sidemesh_[a-z0-9_]+)"', path.read_text()))
    return names - NOT_METRICS


def test_the_command_reference_is_what_the_commands_print():
    assert REFERENCE.read_text() == render(), "docs/reference.md is out of date: run python -m tools.docs.reference"


def test_every_metric_the_code_defines_is_in_the_operations_metrics_table():
    defined = _defined_metrics()
    assert len(defined) > 50  # the scan found the metric definitions at all
    # prometheus_client appends _total to counters declared without it.
    missing = sorted(n for n in defined if f"`{n}`" not in OPERATIONS and f"`{n}_total`" not in OPERATIONS)
    assert missing == []


def test_every_annotation_the_injector_reads_is_in_the_operations_table():
    assert sorted(a for a in ANNOTATIONS if f"`{a}`" not in OPERATIONS) == []


@pytest.mark.parametrize("doc", sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "BENCHMARKS.md"]),
                         ids=lambda p: p.name)
def test_every_relative_link_leads_to_an_existing_file(doc):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text())
    broken = [t for t in targets if "://" not in t and not (doc.parent / t).exists()]
    assert broken == []
