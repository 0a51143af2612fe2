"""A retry budget: retries in flight may not pass a share of requests in flight.

Envoy's ``retry_budget`` semantics (20% and at least 3 by default): when an upstream is
down for everyone, retries cannot multiply the load on what is left.
"""

from __future__ import annotations

__all__ = ["RetryBudget", "RetryGate"]


class RetryBudget:
    def __init__(self, ratio: float = 0.2, min_concurrency: int = 3) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError(f"ratio: expected a share between 0 and 1, got {ratio}")
        if min_concurrency < 0:
            raise ValueError(f"min_concurrency: expected 0 or more, got {min_concurrency}")
        self.ratio = ratio
        self.min_concurrency = min_concurrency
        self.active = 0

    def acquire(self, in_flight: int) -> bool:
        if self.active >= max(self.min_concurrency, int(self.ratio * in_flight)):
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


class RetryGate:
    """One request's retries against the shared budget: ``allow()`` before each retry holds a
    budget slot for that try (giving back the previous one); ``close()`` gives back the last.
    ``refused`` tells a retry the budget turned down from one the route did not allow."""

    __slots__ = ("_budget", "_in_flight", "_left", "_held", "refused")

    def __init__(self, budget: RetryBudget, retries: int, in_flight) -> None:
        self._budget = budget
        self._in_flight = in_flight
        self._left = retries
        self._held = False
        self.refused = False

    def allow(self) -> bool:
        self.close()
        if self._left <= 0:
            return False
        if not self._budget.acquire(self._in_flight()):
            self.refused = True
            return False
        self._left -= 1
        self._held = True
        return True

    def close(self) -> None:
        if self._held:
            self._budget.release()
            self._held = False
