"""Snapshots keyed by node id, waking only the streams of nodes whose version changed
(go-control-plane's ``SnapshotCache``, in asyncio)."""

from __future__ import annotations

import asyncio

from .snapshot import Snapshot

__all__ = ["SnapshotCache", "SNAPSHOT_CHANGED"]

SNAPSHOT_CHANGED = ("snapshot", None)


class SnapshotCache:
    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[asyncio.Queue]] = {}

    def get(self, node_id: str) -> Snapshot | None:
        return self._snapshots.get(node_id)

    def set(self, node_id: str, snapshot: Snapshot) -> bool:
        """Store the node's snapshot; wake its streams only if any type's version differs."""
        old = self._snapshots.get(node_id)
        self._snapshots[node_id] = snapshot
        if old is not None and dict(old.versions) == dict(snapshot.versions):
            return False
        for queue in self._watchers.get(node_id, ()):
            queue.put_nowait(SNAPSHOT_CHANGED)
        return True

    def watch(self, node_id: str, queue: asyncio.Queue) -> None:
        self._watchers.setdefault(node_id, set()).add(queue)

    def unwatch(self, node_id: str, queue: asyncio.Queue) -> None:
        watchers = self._watchers.get(node_id)
        if watchers is not None:
            watchers.discard(queue)
            if not watchers:
                del self._watchers[node_id]

    def forget(self, node_id: str) -> None:
        if node_id not in self._watchers:
            self._snapshots.pop(node_id, None)
