"""The control plane's scrape-time gauges: the desired split and mirror shares per model
and version, read from the routing state at each scrape, next to the nodes' state."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from control_plane.metrics import ControlPlaneMetrics
from control_plane.routing import Route
from control_plane.store import RouteStore


def _gauges(registry: CollectorRegistry, name: str) -> dict:
    return {(s.labels["model"], s.labels["version"]): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples if s.name == name}


def test_the_desired_split_and_mirrors_are_exported_as_shares_and_follow_each_change(tmp_path):
    store = RouteStore(tmp_path / "routes.db")
    try:
        _check(store)
    finally:
        store.close()


def _check(store: RouteStore) -> None:
    metrics = ControlPlaneMetrics(CollectorRegistry())
    metrics.watch(SimpleNamespace(store=store, nodes=SimpleNamespace(nodes=lambda: [])))
    assert _gauges(metrics.registry, "sidemesh_route_weight_ratio") == {}

    store.put(Route.from_dict("tabular", {"backends": [{"version": "1", "weight": 90}, {"version": "2", "weight": 10},
                                                       {"version": "3", "weight": 0}],
                                          "mirrors": [{"version": "3", "percent": 12.5}]}), "test")
    store.put(Route.from_dict("other", {"backends": [{"version": "a", "weight": 3}]}), "test")
    assert _gauges(metrics.registry, "sidemesh_route_weight_ratio") == {
        ("tabular", "1"): 0.9, ("tabular", "2"): 0.1, ("tabular", "3"): 0.0, ("other", "a"): 1.0}
    assert _gauges(metrics.registry, "sidemesh_route_mirror_ratio") == {("tabular", "3"): 0.125}

    store.put(Route.from_dict("tabular", {"backends": [{"version": "1", "weight": 1}, {"version": "2", "weight": 1}]}), "test")
    assert _gauges(metrics.registry, "sidemesh_route_weight_ratio")[("tabular", "2")] == 0.5
    assert _gauges(metrics.registry, "sidemesh_route_mirror_ratio") == {}
