"""Snapshots keyed by node id, waking only the streams of nodes whose version changed
(go-control-plane's ``SnapshotCache``, in asyncio)."""

from __future__ import annotations

from typing import Protocol

from .snapshot import Snapshot

__all__ = ["SnapshotCache", "Watcher"]


class Watcher(Protocol):
    """A stream to wake when its node's snapshot changes."""

    def notify(self) -> None: ...


class SnapshotCache:
    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Watcher]] = {}

    def get(self, node_id: str) -> Snapshot | None:
        return self._snapshots.get(node_id)

    def set(self, node_id: str, snapshot: Snapshot) -> bool:
        """Store the node's snapshot; wake its streams only if any type's version differs."""
        old = self._snapshots.get(node_id)
        self._snapshots[node_id] = snapshot
        if old is not None and dict(old.versions) == dict(snapshot.versions):
            return False
        for watcher in self._watchers.get(node_id, ()):
            watcher.notify()
        return True

    def watch(self, node_id: str, watcher: Watcher) -> None:
        self._watchers.setdefault(node_id, set()).add(watcher)

    def unwatch(self, node_id: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(node_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[node_id]

    def forget(self, node_id: str) -> None:
        if node_id not in self._watchers:
            self._snapshots.pop(node_id, None)
