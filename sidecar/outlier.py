"""Outlier ejection and endpoint choice for a cluster's endpoints (other sidecars).

As in Envoy: an endpoint that answers ``consecutive_5xx`` times in a row with a 5xx (or
cannot be reached) is left out for ``base_ejection_s`` times the number of times it has
been ejected, capped at ``max_ejection_s``. When every endpoint of a cluster is ejected
the choice falls back to all of them ("panic", as Envoy does past its panic threshold):
a version with one flaky replica degrades rather than disappears.
"""

from __future__ import annotations

import random
import time
from typing import Callable

from .table import Cluster, Endpoint, OutlierPolicy

__all__ = ["OutlierDetector"]


class _State:
    __slots__ = ("failures", "ejected_until", "ejections")

    def __init__(self) -> None:
        self.failures = 0
        self.ejected_until = 0.0
        self.ejections = 0


class OutlierDetector:
    def __init__(self, default: OutlierPolicy, on_eject: Callable[[Cluster, Endpoint], None] = lambda c, e: None,
                 clock: Callable[[], float] = time.monotonic, rand: Callable[[], float] = random.random) -> None:
        self.default = default
        self._on_eject = on_eject
        self._clock = clock
        self._rand = rand
        self._states: dict[tuple[str, str, int], _State] = {}
        self.panics_total = 0

    def pick(self, cluster: Cluster, avoid: Endpoint | None = None, panic: bool = True) -> Endpoint | None:
        """A random endpoint that is not ejected, other than ``avoid`` when there is one.
        ``panic=False``: None when every endpoint is ejected (shadow copies, which must not
        cost the primary a connection attempt per request to a dead shadow)."""
        endpoints = cluster.endpoints
        if not endpoints:
            return None
        if len(endpoints) == 1 and not self._states:
            return endpoints[0]
        now = self._clock()
        healthy = [e for e in endpoints if self._available(cluster, e, now)]
        if not healthy:
            if not panic:
                return None
            self.panics_total += 1
            healthy = list(endpoints)
        if avoid is not None and len(healthy) > 1:
            healthy = [e for e in healthy if e != avoid] or healthy
        return healthy[int(self._rand() * len(healthy))]

    def _available(self, cluster: Cluster, endpoint: Endpoint, now: float) -> bool:
        state = self._states.get((cluster.name, endpoint.host, endpoint.port))
        return state is None or state.ejected_until <= now

    def record(self, cluster: Cluster, endpoint: Endpoint, failed: bool) -> None:
        key = (cluster.name, endpoint.host, endpoint.port)
        state = self._states.get(key)
        if not failed:
            if state is not None and state.failures:
                state.failures = 0
            return
        if state is None:
            state = self._states[key] = _State()
        state.failures += 1
        policy = cluster.outlier or self.default
        now = self._clock()
        if state.failures >= policy.consecutive_5xx and state.ejected_until <= now:
            state.ejections += 1
            state.failures = 0
            state.ejected_until = now + min(policy.base_ejection_s * state.ejections, max(policy.max_ejection_s, policy.base_ejection_s))
            self._on_eject(cluster, endpoint)

    def ejected(self) -> list[tuple[str, str, int]]:
        """(cluster, host, port) of the endpoints ejected now."""
        now = self._clock()
        return [key for key, state in self._states.items() if state.ejected_until > now]
