"""The ADS server: ``envoy.service.discovery.v3.AggregatedDiscoveryService/
StreamAggregatedResources``, state of the world, on grpcio's asyncio server with the
envoy-data-plane message types.

Per stream and resource type the server remembers what it last sent (version, nonce) and
what the node last ACKed. A request whose ``response_nonce`` matches the last response is
an ACK, or a NACK when it carries ``error_detail``. A NACK is recorded on the node and the
rejected version is never re-sent: the node keeps its last good config until the state
changes. Requests with an older nonce are stale and ignored, as the protocol says.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from .resources import TYPE_ORDER
from .snapshot import encode_field

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest

if TYPE_CHECKING:
    from .discovery import NodeInfo
    from .service import ControlPlane

__all__ = ["ADS_SERVICE", "ads_handler"]

log = logging.getLogger("sidemesh.control_plane")
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


_NONCE = 5  # DiscoveryResponse.nonce


@dataclass(slots=True)
class _TypeState:
    names: frozenset[str] = frozenset()
    sent: str | None = None
    nonce: str | None = None


class _Stream:
    """One ADS stream: turns requests and snapshot changes into responses and writes them.

    Requests are read by the RPC's own coroutine; a snapshot change schedules a short
    push task (``notify``). One lock keeps the two writers in order. No reader task or
    queue lives for the stream's lifetime: at hundreds of sidecars, per-stream objects
    are most of the control plane's memory.
    """

    __slots__ = ("cp", "context", "node", "states", "_lock", "_push_task", "_dirty")
    _nonces = itertools.count(1)

    def __init__(self, control_plane: "ControlPlane", context: grpc.aio.ServicerContext) -> None:
        self.cp = control_plane
        self.context = context
        self.node: NodeInfo | None = None
        self.states: dict[str, _TypeState] = {}
        self._lock = asyncio.Lock()
        self._push_task: asyncio.Task | None = None
        self._dirty = False

    async def handle(self, request: DiscoveryRequest) -> None:
        async with self._lock:
            for body in self.on_request(request):
                await self.context.write(body)

    def notify(self) -> None:
        """The node's snapshot changed (called by the cache)."""
        self._dirty = True
        if self._push_task is None or self._push_task.done():
            self._push_task = asyncio.get_running_loop().create_task(self._push())

    async def _push(self) -> None:
        while self._dirty:  # a change that arrives mid-push is pushed right after
            self._dirty = False
            async with self._lock:
                for body in self.on_snapshot():
                    await self.context.write(body)

    def close(self) -> None:
        if self._push_task is not None:
            self._push_task.cancel()

    def on_request(self, request: DiscoveryRequest) -> list[bytes]:
        type_url = request.type_url
        state = self.states.setdefault(type_url, _TypeState())
        if request.response_nonce:
            if request.response_nonce != state.nonce:
                return []  # answers an older response: stale
            error = request.error_detail
            if error is not None and (error.code or error.message):
                self.node.last_nack = {"type_url": type_url, "version": state.sent, "error": error.message, "at": time.time()}
                self.cp.metrics.nacked(type_url)
                log.warning("node %s rejected %s version %s: %s", self.node.id, type_url, state.sent, error.message)
            else:
                self.node.acked[type_url] = request.version_info
                self._update_acked_state()
        names = frozenset(request.resource_names)
        names_changed = names != state.names
        state.names = names
        snapshot = self.cp.cache.get(self.node.id)
        if snapshot is None or type_url not in snapshot.versions:
            return []
        if state.sent is None or names_changed or state.sent != snapshot.versions[type_url]:
            return [self._respond(type_url)]
        return []

    def on_snapshot(self) -> list[bytes]:
        snapshot = self.cp.cache.get(self.node.id)
        return [
            self._respond(t) for t in TYPE_ORDER
            if t in self.states and self.states[t].sent is not None and self.states[t].sent != snapshot.versions.get(t)
        ]

    def _respond(self, type_url: str) -> bytes:
        """A serialized DiscoveryResponse: the snapshot's pre-encoded body plus a nonce."""
        snapshot = self.cp.cache.get(self.node.id)
        self.node.remember(snapshot.state_version, snapshot.versions)
        state = self.states[type_url]
        state.sent = snapshot.versions[type_url]
        state.nonce = str(next(self._nonces))
        self.cp.metrics.sent(type_url)
        return snapshot.response_body(type_url, state.names) + encode_field(_NONCE, state.nonce.encode())

    def _update_acked_state(self) -> None:
        """The newest state whose every subscribed type the node has ACKed."""
        for state_version, versions in reversed(self.node.sent):
            if all(self.node.acked.get(t) == versions.get(t) for t in self.states):
                self.node.acked_state_version = state_version
                return


def _metadata(request: DiscoveryRequest) -> dict:
    meta = request.node.metadata if request.node is not None else None
    return meta.to_dict() if meta is not None else {}


def ads_handler(control_plane: "ControlPlane") -> grpc.GenericRpcHandler:
    async def stream(requests, context: grpc.aio.ServicerContext) -> None:
        handler = _Stream(control_plane, context)
        try:
            async for request in requests:
                if handler.node is None:
                    if request.node is None or not request.node.id:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first DiscoveryRequest must carry node.id")
                    handler.node = control_plane.attach(request.node.id, _metadata(request), handler)
                await handler.handle(request)
                request = None  # an idle stream must not pin its last request
        finally:
            handler.close()
            if handler.node is not None:
                control_plane.detach(handler.node.id, handler)

    return grpc.method_handlers_generic_handler(ADS_SERVICE, {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            # responses are already serialized (see Snapshot.response_body)
            stream, request_deserializer=DiscoveryRequest.FromString, response_serializer=None,
        ),
    })
