"""The sidecar's xDS client: one ADS stream (state of the world) to the control plane,
turning what it sends into ``RoutingTable`` values handed to ``on_table``.

Per response: parse the resources, stage them over the last accepted set, build a whole
table (``translate.build_table`` checks everything), hand it to ``on_table`` and only then
ACK; a resource the sidecar cannot apply is NACKed with the reason in ``error_detail`` and
the last good resources stay in force. The first table goes out once a route
configuration has arrived: before that the sidecar is not ready, and clusters or
endpoints alone are only staged. A table is applied only when every EDS cluster has its
endpoints (warming): until then the update is ACKed and staged, and the table in force
keeps serving.

Subscriptions follow Envoy: Listeners and Clusters by wildcard; RouteConfigurations by
the names the listener's connection manager gives (``sidemesh_routes`` before a listener
arrives); ClusterLoadAssignments by the names of the EDS clusters, re-requested whenever
that set changes. Listener and Cluster responses carry the whole state of the world (an
empty one removes every resource); RouteConfiguration and ClusterLoadAssignment
responses may carry only some of the subscribed names, as the protocol allows, and the
rest stay until they are unsubscribed.

When the stream breaks the last table stays in force, ``connected`` turns False, and the
client reconnects with exponential backoff and full jitter, re-announcing the versions it
last applied. Nothing here runs per request.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import grpc
from google.protobuf.message import DecodeError, Message

from .errors import ConfigError
from .proto.cluster_pb2 import Cluster as EnvoyCluster
from .proto.core_pb2 import Node
from .proto.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from .reconnect import backoff_delay, raise_if_cancelled
from .table import RoutingTable
from .translate import build_table, route_config_names
from .xds_resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_URLS, decode_all

__all__ = ["XdsConfig", "XdsClient", "METHOD"]

log = logging.getLogger("sidemesh.sidecar")

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
USER_AGENT = "sidemesh-sidecar"
INVALID_ARGUMENT = 3  # google.rpc.Code, the NACK's error_detail.code
_CHANNEL_OPTIONS = (
    # A half-open connection is noticed within minutes; pinging more often than the
    # server's default 5-minute minimum would get the stream closed for too many pings.
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)
_WILDCARD = (LISTENER, CLUSTER)  # complete state in every response


def _host_port(name: str, text: str) -> None:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(name, f"expected host:port with a port 1-65535, got {text!r}")


@dataclass(frozen=True, kw_only=True)
class XdsConfig:
    """Where the control plane is and what this sidecar announces in its node metadata:
    its model and version, and the addresses other proxies reach it on."""

    control_plane: str  # host:port of the ADS server
    node_id: str
    model: str
    version: str
    inbound: str  # host:port of this sidecar's HTTP inbound
    node_cluster: str = "sidemesh"
    grpc_inbound: str | None = None  # host:port of its gRPC inbound, when it serves one
    backoff_base_s: float = 0.25
    # Capped at 1 s, not Envoy's 30 s: a sidecar must be back on a restarted control plane
    # within about a second, so that routes changed at its return apply within 2 s
    # (tests/faults). About two refused connections a second per sidecar while it is away are cheap.
    backoff_max_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("control_plane", "inbound") + (("grpc_inbound",) if self.grpc_inbound is not None else ()):
            _host_port(name, getattr(self, name))
        for name in ("node_id", "model", "version"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(name, "must not be empty")
        if not (math.isfinite(self.backoff_base_s) and self.backoff_base_s > 0):
            raise ConfigError("backoff_base_s", f"expected a number of seconds > 0, got {self.backoff_base_s!r}")
        if not (math.isfinite(self.backoff_max_s) and self.backoff_max_s >= self.backoff_base_s):
            raise ConfigError("backoff_max_s", f"expected a number of seconds >= backoff_base_s, got {self.backoff_max_s!r}")

    def node(self) -> Node:
        node = Node(id=self.node_id, cluster=self.node_cluster, user_agent_name=USER_AGENT)
        meta = {"model": self.model, "version": self.version, "inbound": self.inbound, "listen": self.inbound}
        if self.grpc_inbound is not None:
            meta["grpc"] = self.grpc_inbound
        node.metadata.update(meta)
        return node


@dataclass
class _Stream:
    """What one ADS stream remembers: each type's last nonce and the names last asked for."""

    call: grpc.aio.StreamStreamCall
    nonces: dict[str, str] = field(default_factory=dict)
    asked: dict[str, tuple[str, ...]] = field(default_factory=dict)
    node_sent: bool = False


class XdsClient:
    """``await XdsClient(config, on_table).run()`` until cancelled. The plain attributes are
    read by the sidecar's metrics and admin endpoints."""

    def __init__(self, config: XdsConfig, on_table: Callable[[RoutingTable], None]) -> None:
        self.config = config
        self._on_table = on_table
        self._node = config.node()
        self._accepted: dict[str, dict[str, Message]] = {}
        self.table: RoutingTable | None = None  # the last one handed to on_table
        self.connected = False
        self.applied_versions: dict[str, str] = {}
        self.applied_state_version: int | None = None
        self.acks_total = 0
        self.nacks_total = 0
        self.reconnects_total = 0
        self.last_nack: str | None = None
        self.last_error: str | None = None

    async def run(self) -> None:
        attempt = 0
        while True:
            self._responded = False
            try:
                await self._session()
                self.last_error = "the control plane ended the stream"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:  # unexpected: keep the table, log, and retry like any failure
                raise_if_cancelled()
                log.exception("xDS stream failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.connected = False
            raise_if_cancelled()
            attempt = 0 if self._responded else attempt
            delay = backoff_delay(attempt, self.config.backoff_base_s, self.config.backoff_max_s)
            # One warning per outage; the retries while it lasts are debug noise.
            level = logging.WARNING if self._responded or attempt == 0 else logging.DEBUG
            log.log(level, "xDS stream to %s lost (%s); reconnecting in %.2f s", self.config.control_plane, self.last_error, delay)
            attempt += 1
            await asyncio.sleep(delay)
            self.reconnects_total += 1

    async def _session(self) -> None:
        async with grpc.aio.insecure_channel(self.config.control_plane, options=_CHANNEL_OPTIONS) as channel:
            call = channel.stream_stream(
                METHOD, request_serializer=DiscoveryRequest.SerializeToString, response_deserializer=DiscoveryResponse.FromString,
            )()
            stream = _Stream(call)
            for type_url in (CLUSTER, LISTENER, ROUTE):
                await self._send(stream, type_url)
            if self._names(ENDPOINT):  # reconnecting: the clusters are known already
                await self._send(stream, ENDPOINT)
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    return
                if not self._responded:
                    log.info("xDS stream to %s is up", self.config.control_plane)
                self._responded = self.connected = True
                await self._on_response(stream, response)

    # --- one response -----------------------------------------------------------------------

    async def _on_response(self, stream: _Stream, response: DiscoveryResponse) -> None:
        type_url = response.type_url
        if type_url not in TYPE_URLS:
            log.warning("ignoring an xDS response for %r, which the sidecar never asked for", type_url)
            return
        stream.nonces[type_url] = response.nonce
        try:
            received = decode_all(type_url, response.resources)
            staged = {**self._accepted, type_url: self._merge(type_url, received)}
            table = build_table(staged, {**self.applied_versions, type_url: response.version_info})
            if table != self.table and self._warm(staged) and (self.table is not None or self._has_routes(staged)):
                self._on_table(table)  # applied before the ACK says so
                self.table = table
        except (ConfigError, DecodeError) as exc:
            await self._nack(stream, type_url, str(exc))
            return
        except Exception as exc:  # on_table failed: the update is not applied, say so
            log.exception("applying the xDS update failed")
            await self._nack(stream, type_url, f"the sidecar failed to apply the update: {type(exc).__name__}: {exc}")
            return
        self._accepted = staged
        self.applied_versions[type_url] = response.version_info
        if self.table is not None:
            versions = [r.state_version for r in self.table.routes.values() if r.state_version is not None]
            self.applied_state_version = max(versions, default=self.applied_state_version)
        await self._send(stream, type_url, nonce=response.nonce)
        self.acks_total += 1
        # A new listener may name other route configurations, new clusters other assignments:
        # ask again (with that type's last nonce, as Envoy does).
        for dependent in (ROUTE, ENDPOINT):
            names = self._names(dependent)
            if stream.asked.get(dependent, ()) != names:
                self._prune(dependent)
                await self._send(stream, dependent, nonce=stream.nonces.get(dependent, ""))

    async def _nack(self, stream: _Stream, type_url: str, error: str) -> None:
        log.warning("rejecting %s: %s", type_url.rpartition("/")[2], error)
        self.nacks_total += 1
        self.last_nack = error
        await self._send(stream, type_url, nonce=stream.nonces[type_url], error=error)

    # --- subscriptions ----------------------------------------------------------------------

    def _names(self, type_url: str) -> tuple[str, ...]:
        if type_url == ROUTE:
            return tuple(sorted(route_config_names(self._accepted.get(LISTENER, {}))))
        if type_url == ENDPOINT:
            clusters = self._accepted.get(CLUSTER, {})
            return tuple(sorted(n for n, c in clusters.items() if c.type == EnvoyCluster.EDS))
        return ()  # wildcard

    def _merge(self, type_url: str, received: dict[str, Message]) -> dict[str, Message]:
        """Listener and Cluster responses replace the whole set; the others update the
        names they carry (a wildcard subscription takes them as they come)."""
        names = self._names(type_url)
        if type_url in _WILDCARD or not names:
            return received
        merged = {**self._accepted.get(type_url, {}), **received}
        return {n: m for n, m in merged.items() if n in names}

    def _prune(self, type_url: str) -> None:
        """Drop resources no longer subscribed to."""
        names = set(self._names(type_url))
        if type_url in self._accepted and names:
            self._accepted[type_url] = {n: m for n, m in self._accepted[type_url].items() if n in names}

    @staticmethod
    def _warm(staged: dict[str, dict[str, Message]]) -> bool:
        """Every EDS cluster has its assignment (Envoy's cluster warming). A route that
        arrives before the endpoints of a new cluster it uses is held, not applied, until
        they come: the table in force keeps serving instead of answering 503s."""
        assignments = staged.get(ENDPOINT, {})
        return all(name in assignments for name, c in staged.get(CLUSTER, {}).items() if c.type == EnvoyCluster.EDS)

    def _has_routes(self, staged: dict[str, dict[str, Message]]) -> bool:
        wanted = route_config_names(staged.get(LISTENER, {}))
        return any(name in wanted for name in staged.get(ROUTE, {}))

    async def _send(self, stream: _Stream, type_url: str, nonce: str = "", error: str | None = None) -> None:
        names = self._names(type_url)
        request = DiscoveryRequest(
            type_url=type_url, version_info=self.applied_versions.get(type_url, ""), response_nonce=nonce, resource_names=names,
        )
        if error is not None:
            request.error_detail.code = INVALID_ARGUMENT
            request.error_detail.message = error
        if not stream.node_sent:  # the node goes with the first request of each stream
            request.node.CopyFrom(self._node)
            stream.node_sent = True
        stream.asked[type_url] = names
        await stream.call.write(request)
