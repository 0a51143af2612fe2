"""The fault suite's figures: each test records what it measured with ``figure(fault,
**values)``. A figure is printed at once (seen with ``-s``), kept as a test property
(``record_property``, for JUnit XML), appended to ``fault-figures.json`` in pytest's base
temporary directory, and listed in a "fault figures" section at the end of the run, so
the numbers show whatever the capture mode."""

from __future__ import annotations

import json

import pytest

_FIGURES: list[dict] = []


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _line(entry: dict) -> str:
    values = ", ".join(f"{k}={_format(v)}" for k, v in entry["values"].items())
    return f"FAULT FIGURE | {entry['fault']} | {values}"


@pytest.fixture
def figure(request, record_property, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "fault-figures.json"

    def record(fault: str, **values) -> None:
        entry = {"test": request.node.name, "fault": fault, "values": values}
        _FIGURES.append(entry)
        record_property(fault, values)
        print(_line(entry))
        path.write_text(json.dumps(_FIGURES, indent=1))

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if _FIGURES:
        terminalreporter.section("fault figures")
        for entry in _FIGURES:
            terminalreporter.write_line(_line(entry))
