"""Prometheus metrics of the control plane; the registry is injected.

Counters are bumped where things happen (a response sent, a NACK received, a rebuild);
gauges about the nodes are computed at scrape time from the registry of nodes, so the
request path pays nothing for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from .resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

if TYPE_CHECKING:
    from .service import ControlPlane

__all__ = ["ControlPlaneMetrics", "TYPE_NAMES"]

TYPE_NAMES = {LISTENER: "listener", ROUTE: "route", CLUSTER: "cluster", ENDPOINT: "endpoint"}


class _NodeGauges:
    """Scrape-time view of the nodes (how many are connected, how many have not applied the
    latest routing version: what an alert on stale config watches) and of the desired split."""

    def __init__(self, control_plane: "ControlPlane") -> None:
        self._cp = control_plane

    def collect(self):
        version = self._cp.store.version
        connected = [n for n in self._cp.nodes.nodes() if n.connected]
        stale = sum(1 for n in connected if (n.acked_state_version or 0) < version)
        nacked = sum(1 for n in connected if n.last_nack is not None and (n.acked_state_version or 0) < version)
        yield GaugeMetricFamily("sidemesh_control_plane_routing_version", "Latest routing state version.", value=version)
        yield GaugeMetricFamily("sidemesh_xds_connected_nodes", "Nodes with an open ADS stream.", value=len(connected))
        yield GaugeMetricFamily("sidemesh_xds_stale_nodes", "Connected nodes that have not ACKed the latest routing version.", value=stale)
        yield GaugeMetricFamily("sidemesh_xds_nacked_nodes", "Connected nodes behind because they rejected a newer config.", value=nacked)
        # The desired split, next to the observed one the sidecars count: what a dashboard
        # compares and an alert on a split that does not take effect needs.
        weights = GaugeMetricFamily("sidemesh_route_weight_ratio", "Desired share of a model's requests for each "
                                    "version (its weight over the model's total).", labels=["model", "version"])
        mirrors = GaugeMetricFamily("sidemesh_route_mirror_ratio", "Desired share of a model's requests copied to each "
                                    "shadow version.", labels=["model", "version"])
        for model, (route, _) in self._cp.store.routes().items():
            total = sum(b.weight for b in route.backends)
            for backend in route.backends:
                weights.add_metric([model, backend.version], backend.weight / total if total else 0.0)
            for mirror in route.mirrors:
                mirrors.add_metric([model, mirror.version], mirror.percent / 100.0)
        yield weights
        yield mirrors


class _CanaryGauges:
    """Scrape-time view of the running canaries."""

    def __init__(self, controller) -> None:
        self._controller = controller

    def collect(self):
        weight = GaugeMetricFamily("sidemesh_canary_weight_ratio", "Share of a model's requests the running canary gives "
                                   "its candidate (0 in the shadow phase).", labels=["model", "version"])
        step = GaugeMetricFamily("sidemesh_canary_step", "The running canary's phase: 0 shadow, N for step N (1-based).",
                                 labels=["model", "version"])
        for canary in self._controller.running():
            weight.add_metric([canary.model, canary.candidate], canary.weight / 100.0 if canary.state == "step" else 0.0)
            step.add_metric([canary.model, canary.candidate], 0 if canary.step is None or canary.state == "shadow" else canary.step + 1)
        yield weight
        yield step


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.responses = Counter("sidemesh_xds_responses", "DiscoveryResponses sent, by resource type.", ["type"], registry=registry)
        self.nacks = Counter("sidemesh_xds_nacks", "NACKs received, by resource type.", ["type"], registry=registry)
        self.rebuilds = Counter("sidemesh_control_plane_rebuilds", "Snapshots built and published.", registry=registry)
        self.rebuild_duration = Histogram(
            "sidemesh_control_plane_rebuild_duration_seconds", "Time to build and publish every node's snapshot.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=registry,
        )
        self.load_reports = Counter("sidemesh_load_reports_received", "Load reports (LRS) received from sidecars, one per "
                                    "report, with the clusters they covered.", registry=registry)
        self.load_report_clusters = Counter("sidemesh_load_report_clusters_received", "Per-cluster load statistics taken "
                                            "from the reports.", registry=registry)
        self.canary_decisions = Counter("sidemesh_canary_decisions", "Canary transitions: started, step, promoted, "
                                        "rolled_back, aborted.", ["model", "decision"], registry=registry)
        self._responses = {t: self.responses.labels(n) for t, n in TYPE_NAMES.items()}
        self._nacks = {t: self.nacks.labels(n) for t, n in TYPE_NAMES.items()}

    def watch(self, control_plane: "ControlPlane") -> None:
        self.registry.register(_NodeGauges(control_plane))

    def watch_canaries(self, controller) -> None:
        self.registry.register(_CanaryGauges(controller))

    def reported(self, node_id: str, clusters: int) -> None:
        self.load_reports.inc()
        self.load_report_clusters.inc(clusters)

    def canary_decided(self, model: str, decision: str) -> None:
        self.canary_decisions.labels(model, decision).inc()

    def sent(self, type_url: str) -> None:
        counter = self._responses.get(type_url)
        if counter is not None:
            counter.inc()

    def nacked(self, type_url: str) -> None:
        counter = self._nacks.get(type_url)
        if counter is not None:
            counter.inc()
