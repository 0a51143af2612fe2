"""Routing documents for the control plane's admin API: valid ones drawn over every field
(backends, weights, static endpoints, mirrors, sticky key, timeouts, retries, sidecar
knobs), for the round trip and as the base that ``json_values.mutated`` breaks."""

from __future__ import annotations

from hypothesis import strategies as st

from control_plane.routing import MAX_TIMEOUT_MS, RETRY_ON

__all__ = ["NAMES", "route_documents"]

NAMES = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}\Z")
_HOSTS = st.from_regex(r"\A[A-Za-z0-9_.-]{1,12}\Z") | st.sampled_from(["[::1]", "[fe80::1]", "127.0.0.1"])
_ENDPOINTS = st.tuples(_HOSTS, st.integers(1, 65535)).map(lambda hp: f"{hp[0]}:{hp[1]}")
_HEADER_NAMES = st.from_regex(r"\A[a-z0-9!#$%&'*+.^_`|~-]{1,12}\Z")
_PERCENT = st.floats(min_value=0, max_value=100, exclude_min=True) | st.integers(1, 100)


@st.composite
def route_documents(draw) -> dict:
    versions = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    # Weight 0 (a shadow, the only kind of backend a mirror may target) is drawn often on purpose.
    weights = draw(st.lists(st.just(0) | st.integers(0, 1_000_000), min_size=len(versions), max_size=len(versions)))
    if not any(weights):
        weights[0] = draw(st.integers(1, 1_000_000))
    backends = []
    for version, weight in zip(versions, weights):
        backend = {"version": version, "weight": weight}
        if draw(st.booleans()):
            backend["endpoints"] = draw(st.lists(_ENDPOINTS, max_size=2))
        backends.append(backend)
    doc: dict = {"backends": backends}
    shadows = [v for v, w in zip(versions, weights) if w == 0]
    if shadows and draw(st.booleans()):
        doc["mirrors"] = [{"version": v, "percent": draw(_PERCENT)}
                          for v in draw(st.lists(st.sampled_from(shadows), min_size=1, unique=True))]
    if draw(st.booleans()):
        doc["sticky_key"] = draw(_HEADER_NAMES | st.none())
    if draw(st.booleans()):
        doc["timeout_ms"] = draw(st.integers(1, MAX_TIMEOUT_MS))
    if draw(st.booleans()):
        doc["retry"] = draw(st.fixed_dictionaries({}, optional={
            "attempts": st.integers(0, 10), "per_try_timeout_ms": st.none() | st.integers(1, MAX_TIMEOUT_MS),
            "on": st.lists(st.sampled_from(RETRY_ON), unique=True)}))
    if draw(st.booleans()):
        doc["sidecar"] = draw(st.fixed_dictionaries({}, optional={
            "stats_sample": st.floats(0, 1) | st.sampled_from([0, 1]), "compare": st.booleans()}))
    return doc
