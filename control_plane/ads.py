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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from .cache import SNAPSHOT_CHANGED
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
_END = ("end", None)


_NONCE = 5  # DiscoveryResponse.nonce


@dataclass
class _TypeState:
    names: frozenset[str] = frozenset()
    sent: str | None = None
    nonce: str | None = None


class _Stream:
    """One ADS stream: turns requests and snapshot changes into responses."""

    _nonces = itertools.count(1)

    def __init__(self, control_plane: "ControlPlane") -> None:
        self.cp = control_plane
        self.node: NodeInfo | None = None
        self.states: dict[str, _TypeState] = {}

    def on_request(self, request: DiscoveryRequest) -> list[bytes]:
        type_url = request.type_url
        state = self.states.setdefault(type_url, _TypeState())
        if request.response_nonce:
            if request.response_nonce != state.nonce:
                return []  # answers an older response: stale
            error = request.error_detail
            if error is not None and (error.code or error.message):
                self.node.last_nack = {"type_url": type_url, "version": state.sent, "error": error.message, "at": time.time()}
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
    async def stream(requests, context: grpc.aio.ServicerContext):
        events: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in requests:
                    events.put_nowait(("request", request))
            finally:
                events.put_nowait(_END)

        reader = asyncio.create_task(read())
        handler = _Stream(control_plane)
        try:
            while True:
                kind, request = await events.get()
                if kind == "end":
                    return
                if handler.node is None:
                    if kind != "request" or request.node is None or not request.node.id:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first DiscoveryRequest must carry node.id")
                    handler.node = control_plane.attach(request.node.id, _metadata(request), events)
                responses = handler.on_request(request) if kind == "request" else handler.on_snapshot()
                for response in responses:
                    yield response
        finally:
            reader.cancel()
            if handler.node is not None:
                control_plane.detach(handler.node.id, events)

    return grpc.method_handlers_generic_handler(ADS_SERVICE, {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            # responses are already serialized (see Snapshot.response_body)
            stream, request_deserializer=DiscoveryRequest.FromString, response_serializer=None,
        ),
    })
