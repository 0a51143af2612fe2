"""Which version answers a request, and which shadows get a copy.

The order of precedence, first match wins:

1. The hop header (``x-sidemesh-hop``): another proxy already chose this sidecar's
   version, so serve locally and never split twice. Shadow copies carry it too.
2. No route for the model: serve locally (the model server answers, 404 included).
3. A pinned version, from the path (``/v2/models/M/versions/V/...``) or the
   ``x-sidemesh-version`` request header (for testing a version directly).
4. The sticky key's header, when the route names one: the key's hash picks the version,
   so one key keeps its version while the weights stay the same.
5. Otherwise a weighted random pick.

A pick is served locally when it names this sidecar's own model and version; otherwise it
goes to an endpoint of the version's cluster with the route's hop header added.
"""

from __future__ import annotations

import random
from typing import Callable

from .table import Cluster, MirrorTarget, ModelRoute, RoutingTable, Target, cluster_name

__all__ = ["Decision", "RouteRefused", "Router", "HOP_HEADER", "PIN_HEADER", "SHADOW_HEADER", "VERSION_HEADER", "OTHER_MODEL"]

HOP_HEADER = b"x-sidemesh-hop"
PIN_HEADER = b"x-sidemesh-version"  # request: pin a version
VERSION_HEADER = b"x-sidemesh-version"  # response: the version that answered
SHADOW_HEADER = b"x-sidemesh-shadow"
OTHER_MODEL = "_other"  # the metrics label for a model that is neither routed nor ours (bounds label values)


class RouteRefused(Exception):
    """The request names something the routing table cannot serve; carries the status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Decision:
    __slots__ = ("route", "version", "local", "cluster", "headers", "entry")

    def __init__(self, route: ModelRoute | None, version: str, local: bool, cluster: Cluster | None, headers: tuple,
                 entry: str | None = None) -> None:
        self.route = route
        self.version = version  # the version that will answer
        self.local = local
        self.cluster = cluster  # where to send it when not local
        self.headers = headers  # extra request headers (the hop mark)
        # The chosen version's cluster name when the request entered the mesh here and was
        # routed (no hop mark, so not a shadow copy either): the load reports count it here.
        self.entry = entry


class Router:
    def __init__(self, model: str, version: str, rand: Callable[[], float] = random.random) -> None:
        self.model = model
        self.version = version
        self.table: RoutingTable | None = None
        self._rand = rand
        self._local = Decision(None, version, True, None, ())

    def decide(self, model: str | None, path_version: str | None, header: Callable[[bytes], bytes | None]) -> Decision:
        """``header(name)`` reads a request header (or gRPC metadata) by lower-case name."""
        if header(HOP_HEADER) is not None:
            return self._local
        table = self.table
        route = table.routes.get(model) if table is not None and model is not None else None
        if route is None:
            return self._local
        pinned = path_version
        if pinned is None:
            raw = header(PIN_HEADER)
            if raw is not None:
                pinned = raw.decode("latin-1")
        if pinned is not None:
            target = route.target(pinned) or self._pinned_target(table, route, pinned, from_path=path_version is not None)
        elif route.sticky_key is not None and (key := header(route.sticky_key)) is not None:
            target = route.pick_sticky(key)
        else:
            target = route.pick(self._rand)
        if target.version == self.version and route.model == self.model:
            return Decision(route, target.version, True, None, (), target.cluster)
        return Decision(route, target.version, False, table.clusters.get(target.cluster), target.headers, target.cluster)

    def _pinned_target(self, table: RoutingTable, route: ModelRoute, version: str, from_path: bool) -> Target:
        """A version outside the weighted split (a shadow with weight 0) can still be pinned
        while it has a cluster."""
        name = cluster_name(route.model, version)
        if name in table.clusters or (version == self.version and route.model == self.model):
            return Target(version, name, 0, ((HOP_HEADER, version.encode()),))
        known = sorted({t.version for t in route.targets} | {m.version for m in route.mirrors})
        where = "the request path" if from_path else f"the {PIN_HEADER.decode()} header"
        raise RouteRefused(
            404 if from_path else 400,
            f"{where} names version {version!r} of model {route.model!r}, which the routing table has no backend for; "
            f"known versions: {', '.join(known)}",
        )

    def label(self, model: str | None) -> str:
        """The ``model`` label of a request's metrics. Server-level requests (health,
        metadata) belong to the local model server's model."""
        if model is None or model == self.model:
            return self.model
        table = self.table
        return model if table is not None and model in table.routes else OTHER_MODEL

    def mirrors(self, route: ModelRoute) -> list[MirrorTarget]:
        """The shadows that get a copy of this request (each by its own share)."""
        chosen = []
        for mirror in route.mirrors:
            if self._rand() * 1_000_000 < mirror.per_million:
                chosen.append(mirror)
        return chosen
