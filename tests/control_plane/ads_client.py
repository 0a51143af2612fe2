"""A minimal ADS client for protocol tests: one real gRPC stream, requests sent as told,
responses handed over in order."""

from __future__ import annotations

import asyncio
import warnings

import grpc

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.config.core.v3 import Node
    from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
    from envoy_data_plane.google.protobuf import Struct
    from envoy_data_plane.google.rpc import Status

__all__ = ["AdsClient"]

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


class AdsClient:
    def __init__(self, address: str, node_id: str, metadata: dict | None = None) -> None:
        self.address = address
        self.node = Node(id=node_id, metadata=Struct.from_dict(metadata or {}))
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._first = True

    async def __aenter__(self) -> "AdsClient":
        self.channel = grpc.aio.insecure_channel(self.address)
        stub = self.channel.stream_stream(METHOD, request_serializer=bytes, response_deserializer=DiscoveryResponse.FromString)
        self.call = stub(self._requests())
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.channel.close()

    async def _requests(self):
        while True:
            yield await self._outbox.get()

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self._inbox.put_nowait(response)
        except grpc.aio.AioRpcError:
            pass

    def send(self, type_url: str, version: str = "", nonce: str = "", names: tuple[str, ...] = (), error: str | None = None) -> None:
        request = DiscoveryRequest(type_url=type_url, version_info=version, response_nonce=nonce, resource_names=list(names),
                                   error_detail=Status(code=3, message=error) if error else None)
        if self._first:
            request.node, self._first = self.node, False
        self._outbox.put_nowait(request)

    def ack(self, response: DiscoveryResponse) -> None:
        self.send(response.type_url, response.version_info, response.nonce)

    def nack(self, response: DiscoveryResponse, error: str, previous: str = "") -> None:
        self.send(response.type_url, previous, response.nonce, error=error)

    async def recv(self, timeout: float = 20.0) -> DiscoveryResponse:
        return await asyncio.wait_for(self._inbox.get(), timeout)
