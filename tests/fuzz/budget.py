"""Example budgets: in-process properties take the profile's ``max_examples``; a network
property takes a share of it, scaled with the profile, and has no deadline (a round trip
through a real server is not a hang)."""

from __future__ import annotations

from hypothesis import settings

__all__ = ["BASE_EXAMPLES", "network", "share"]

BASE_EXAMPLES = 200


def share(examples: int) -> settings:
    """``examples`` out of every ``BASE_EXAMPLES`` of the loaded profile (at least one)."""
    return settings(max_examples=max(1, examples * settings.default.max_examples // BASE_EXAMPLES))


def network(examples: int) -> settings:
    return settings(share(examples), deadline=None)
