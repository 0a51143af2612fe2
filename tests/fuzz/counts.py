"""How many examples each fuzz target actually ran: every test body calls ``ran(target)``
once per example, so the figure counts executed cases (shrinking included), not the
``max_examples`` asked for. ``conftest`` prints the table at the end of the session."""

from __future__ import annotations

from collections import Counter

__all__ = ["COUNTS", "ran"]

COUNTS: Counter[str] = Counter()


def ran(target: str) -> None:
    COUNTS[target] += 1
