"""Discovery by self-registration: who is connected, and the endpoints they make.

A sidecar's xDS node metadata names its ``model``, ``version`` and ``inbound`` address
(where other proxies reach it), and ``grpc``, its gRPC inbound address, when it serves
one. While its stream is open, that address is an endpoint of the (model, version)
backend, carrying the gRPC port for sidecars that forward gRPC. When the stream ends the endpoint stays for a grace period,
so a sidecar reconnecting after a control-plane blip does not flap every other proxy's
endpoints. Nodes without model metadata (a front Envoy, say) are tracked but add nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["NodeInfo", "NodeRegistry", "RegisteredEndpoint", "parse_address"]

# (host, port, gRPC port or None): a registered sidecar's inbound addresses.
RegisteredEndpoint = tuple[str, int, int | None]


def parse_address(text: str) -> tuple[str, int] | None:
    """``host:port`` (IPv6 in brackets) to (host, port); None when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def _address(pair: tuple[str, int]) -> str:
    host, port = pair
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_SENT_KEPT = 4


@dataclass(slots=True)
class NodeInfo:
    """One xDS client. ACK/NACK fields are written by its ADS stream."""

    id: str
    model: str | None = None
    version: str | None = None
    inbound: tuple[str, int] | None = None
    listen: tuple[str, int] | None = None
    grpc_inbound: tuple[str, int] | None = None
    connected: bool = True
    connected_at: float = field(default_factory=time.time)
    streams: int = 0
    acked: dict[str, str] = field(default_factory=dict)  # type_url -> version_info
    last_nack: dict | None = None
    acked_state_version: int | None = None
    # (state version, {type_url: version}) of the latest snapshots sent, newest last
    sent: list = field(default_factory=list)

    def remember(self, state_version: int, versions) -> None:
        """Note a snapshot sent to this node (endpoint changes can rebuild one state).
        ``versions`` is the snapshot's own read-only mapping, shared, not copied."""
        entry = (state_version, versions)
        if self.sent and self.sent[-1][0] == state_version:
            self.sent[-1] = entry
        else:
            self.sent.append(entry)
            del self.sent[:-_SENT_KEPT]

    def to_dict(self) -> dict:
        return {
            "id": self.id, "model": self.model, "version": self.version,
            "address": f"{self.inbound[0]}:{self.inbound[1]}" if self.inbound else None,
            "grpc_address": f"{self.grpc_inbound[0]}:{self.grpc_inbound[1]}" if self.grpc_inbound else None,
            "connected": self.connected, "connected_at": self.connected_at,
            "acked": dict(self.acked), "acked_state_version": self.acked_state_version, "last_nack": self.last_nack,
        }


def _metadata(raw: dict[str, Any]) -> dict[str, Any]:
    inbound = parse_address(str(raw["inbound"])) if "inbound" in raw else None
    listen = parse_address(str(raw["listen"])) if "listen" in raw else None
    grpc_inbound = parse_address(str(raw["grpc"])) if "grpc" in raw else None
    model = raw.get("model")
    version = raw.get("version")
    return {
        "model": str(model) if model else None,
        "version": str(version) if version else None,
        "inbound": inbound,
        "listen": listen,
        "grpc_inbound": grpc_inbound,
    }


class NodeRegistry:
    """Connected nodes; calls ``on_change`` whenever the set of endpoints changes."""

    def __init__(self, on_change: Callable[[], None], grace_s: float = 2.0) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        self._on_change = on_change
        self._grace_s = grace_s
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    def connect(self, node_id: str, metadata: dict[str, Any]) -> NodeInfo:
        meta = _metadata(metadata)
        timer = self._expiry.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        node = self._nodes.get(node_id)
        if node is None:
            node = NodeInfo(node_id, **meta)
            self._nodes[node_id] = node
            changed = node.inbound is not None
        else:
            endpoint = (node.model, node.version, node.inbound, node.grpc_inbound)
            changed = endpoint != (meta["model"], meta["version"], meta["inbound"], meta["grpc_inbound"]) or not node.connected
            for key, value in meta.items():
                setattr(node, key, value)
            if not node.connected:
                node.connected, node.connected_at = True, time.time()
        node.streams += 1
        if changed:
            self._on_change()
        return node

    def disconnect(self, node_id: str) -> None:
        node = self._nodes.get(node_id)
        if node is None:
            return
        node.streams -= 1
        if node.streams > 0:
            return
        node.connected = False
        self._expiry[node_id] = asyncio.get_running_loop().call_later(self._grace_s, self._expire, node_id)

    def _expire(self, node_id: str) -> None:
        self._expiry.pop(node_id, None)
        node = self._nodes.get(node_id)
        if node is not None and not node.connected:
            del self._nodes[node_id]
            if node.inbound is not None:
                self._on_change()

    def restore(self, registrations: dict[str, dict[str, Any]]) -> None:
        """Sidecars registered before a restart (``registrations()`` as saved then): each
        counts as having just lost its stream, so its endpoint stays for the grace period
        while it reconnects. Without this the first sidecar back would get empty clusters
        for the versions whose sidecars are still on their way (503s)."""
        if not registrations:
            return
        loop = asyncio.get_running_loop()
        for node_id, raw in registrations.items():
            if node_id not in self._nodes:
                self._nodes[node_id] = NodeInfo(node_id, connected=False, **_metadata(raw))
                self._expiry[node_id] = loop.call_later(self._grace_s, self._expire, node_id)

    def registrations(self) -> dict[str, dict[str, str]]:
        """Node id -> the metadata that makes its endpoint, for every node that makes one."""
        return {n.id: {"model": n.model, "version": n.version, "inbound": _address(n.inbound),
                       **({"grpc": _address(n.grpc_inbound)} if n.grpc_inbound else {})}
                for n in self._nodes.values() if n.model and n.version and n.inbound}

    def get(self, node_id: str) -> NodeInfo | None:
        return self._nodes.get(node_id)

    def nodes(self) -> list[NodeInfo]:
        return list(self._nodes.values())

    def endpoints(self) -> dict[tuple[str, str], list[RegisteredEndpoint]]:
        """(model, version) -> (host, port, gRPC port or None) of its registered sidecars,
        sorted by address."""
        found: dict[tuple[str, str], dict[tuple[str, int], int | None]] = {}
        for node in self._nodes.values():
            if node.model and node.version and node.inbound:
                grpc_port = node.grpc_inbound[1] if node.grpc_inbound else None
                found.setdefault((node.model, node.version), {})[node.inbound] = grpc_port
        return {k: [(h, p, g) for (h, p), g in sorted(v.items())] for k, v in found.items()}

    def status(self) -> list[dict]:
        return [n.to_dict() for n in sorted(self._nodes.values(), key=lambda n: n.id)]
