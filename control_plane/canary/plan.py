"""The routes a canary writes, each derived from the route before it began (the baseline).

Weights are integers, so a step's split is expressed over 10,000: the candidate gets
``percent * 100`` and the baseline's versions share the rest in proportion to their
weights before (largest remainder, so the total is exact). Every other part of the route
(timeouts, retries, sticky key, other mirrors) is left as the baseline had it; only a
mirror to the candidate is added (shadow phase) or removed (steps).
"""

from __future__ import annotations

import dataclasses

from ..routing import Backend, Mirror, Route

__all__ = ["SCALE", "shadow_route", "step_route", "promoted_route"]

SCALE = 10_000


def _backends(baseline: Route, candidate: str, candidate_weight: int, others_total: int) -> tuple[Backend, ...]:
    weights = {b.version: b.weight for b in baseline.backends if b.version != candidate}
    total = sum(weights.values())
    shares: dict[str, int] = {}
    if total > 0 and others_total > 0:
        exact = {v: others_total * w / total for v, w in weights.items()}
        shares = {v: int(x) for v, x in exact.items()}
        left = others_total - sum(shares.values())
        for v in sorted(exact, key=lambda v: exact[v] - shares[v], reverse=True)[:left]:
            shares[v] += 1
    out = [dataclasses.replace(b, weight=shares.get(b.version, 0)) for b in baseline.backends if b.version != candidate]
    existing = next((b for b in baseline.backends if b.version == candidate), None)
    out.append(dataclasses.replace(existing, weight=candidate_weight) if existing else Backend(candidate, candidate_weight))
    return tuple(out)


def _other_mirrors(baseline: Route, candidate: str) -> tuple[Mirror, ...]:
    return tuple(m for m in baseline.mirrors if m.version != candidate)


def shadow_route(baseline: Route, candidate: str, percent: float) -> Route:
    """The baseline's split, the candidate at weight 0 and mirrored ``percent``."""
    if baseline.weights.get(candidate, 0) > 0:
        # A mirror target must have weight 0: give its share to the others for the shadow phase.
        backends = _backends(baseline, candidate, 0, SCALE)
    elif candidate in baseline.weights:
        backends = baseline.backends
    else:
        backends = baseline.backends + (Backend(candidate, 0),)
    return dataclasses.replace(baseline, backends=backends,
                               mirrors=_other_mirrors(baseline, candidate) + (Mirror(candidate, percent),))


def step_route(baseline: Route, candidate: str, percent: int) -> Route:
    weight = percent * SCALE // 100
    return dataclasses.replace(baseline, backends=_backends(baseline, candidate, weight, SCALE - weight),
                               mirrors=_other_mirrors(baseline, candidate))


def promoted_route(baseline: Route, candidate: str) -> Route:
    return step_route(baseline, candidate, 100)
