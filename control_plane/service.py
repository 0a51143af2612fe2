"""The control plane's core: the route store, the connected nodes and their snapshots.

Any change (an admin API write, a sidecar arriving or leaving) marks the state dirty; one
task rebuilds at most every ``debounce_s`` (50 ms by default, so pushes follow a change
within ~100 ms) and publishes each node's snapshot. The cache wakes only nodes whose
version changed. A rebuild that fails its consistency check is logged and not published:
nodes keep the last good snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry

from .cache import SnapshotCache, Watcher
from .discovery import NodeInfo, NodeRegistry
from .errors import ConsistencyError
from .metrics import ControlPlaneMetrics
from .snapshot import SharedResources, Snapshot
from .store import RouteStore

__all__ = ["ControlPlane"]

log = logging.getLogger("sidemesh.control_plane")


class ControlPlane:
    def __init__(self, store: RouteStore, grace_s: float = 2.0, debounce_s: float = 0.05,
                 registry: CollectorRegistry | None = None) -> None:
        self.store = store
        self.metrics = ControlPlaneMetrics(registry or CollectorRegistry())
        self.nodes = NodeRegistry(self.changed, grace_s)
        # Registrations survive a restart (see NodeRegistry.restore); saved when they change.
        self._saved_registrations = store.registrations()
        self.nodes.restore(self._saved_registrations)
        self.cache = SnapshotCache()
        self._debounce_s = debounce_s
        self._dirty = asyncio.Event()
        self._shared = self._build()
        self.rebuilds = 0
        self.metrics.watch(self)

    def changed(self) -> None:
        """Something the snapshots depend on changed; a rebuild follows shortly."""
        self._dirty.set()

    async def run(self) -> None:
        """Rebuild and publish after changes, at most once per debounce interval."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._debounce_s)  # gather the rest of a burst of changes
            self._dirty.clear()
            self.publish()

    def publish(self) -> None:
        started = time.perf_counter()
        try:
            shared = self._build()
        except ConsistencyError as exc:
            log.error("not publishing an inconsistent snapshot: %s", exc)
            return
        self._shared = shared
        registrations = self.nodes.registrations()
        if registrations != self._saved_registrations:
            self.store.save_registrations(registrations)
            self._saved_registrations = registrations
        self.rebuilds += 1
        by_listen: dict = {}  # nodes listening on the same address share one snapshot
        for node in self.nodes.nodes():
            if node.connected:
                snapshot = by_listen.get(node.listen)
                if snapshot is None:
                    snapshot = by_listen[node.listen] = Snapshot.for_node(shared, node.listen)
                self.cache.set(node.id, snapshot)
        self.metrics.rebuilds.inc()
        self.metrics.rebuild_duration.observe(time.perf_counter() - started)

    def _build(self) -> SharedResources:
        routes = {model: route for model, (route, _) in self.store.routes().items()}
        return SharedResources.build(self.store.version, routes, self.nodes.endpoints())

    # --- ADS streams --------------------------------------------------------------------

    def attach(self, node_id: str, metadata: dict, watcher: Watcher) -> NodeInfo:
        """A stream opened: register the node and give it the current snapshot at once."""
        node = self.nodes.connect(node_id, metadata)
        self.cache.set(node_id, Snapshot.for_node(self._shared, node.listen))
        self.cache.watch(node_id, watcher)
        return node

    def detach(self, node_id: str, watcher: Watcher) -> None:
        self.cache.unwatch(node_id, watcher)
        self.nodes.disconnect(node_id)
        self.cache.forget(node_id)
