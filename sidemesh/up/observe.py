"""What the status board shows, scraped about once a second: the sidecars' /metrics, the
route from the control plane and the verdicts from the drift detector.

Rates and latency quantiles come from the difference between the newest scrape and one
about ``window_s`` older (a counter that went down means its sidecar restarted: the new
value is the increase). Every request is answered by exactly one sidecar of the version
that serves it, so a version's own sidecar counts all of its requests once; shadow copies
(counted by the primaries' sidecars as sent) are taken out of that to leave the client
requests routed to the version, the observed split. Latency merges the version's
``sidemesh_request_duration_seconds`` histograms of every sidecar (a request forwarded to
another version is timed at both sidecars it passes).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .clients import AdminApi, ApiError, DriftApi, get_text
from .config import HOST, MODEL, VERSIONS, PortPlan

__all__ = ["Sample", "VersionView", "MeshView", "Observer", "parse_sidecar", "quantile", "mesh_view"]

_SENT = ("ok", "shadow_error", "primary_error")  # mirror outcomes where the shadow received the copy
_DURATION = "sidemesh_request_duration_seconds"  # a histogram: its _bucket samples are read


@dataclass
class Sample:
    """Cumulative values from one scrape of every sidecar; keys name (sidecar version, ...)."""

    at: float  # monotonic
    scraped: set[str] = field(default_factory=set)  # sidecars that answered
    requests: dict[tuple[str, str], float] = field(default_factory=dict)  # (sidecar, answered version)
    errors: dict[tuple[str, str], float] = field(default_factory=dict)  # 5xx of the same
    buckets: dict[tuple[str, str, float], float] = field(default_factory=dict)  # (sidecar, version, le)
    mirrored: dict[tuple[str, str], float] = field(default_factory=dict)  # (sidecar, shadow) copies received
    compared: dict[tuple[str, str], float] = field(default_factory=dict)  # (primary, shadow) rows
    agreed: dict[tuple[str, str], float] = field(default_factory=dict)


def parse_sidecar(sample: Sample, sidecar: str, text: str) -> None:
    """Add one sidecar's /metrics page to ``sample``."""
    def add(table: dict, key: tuple, value: float) -> None:
        table[key] = table.get(key, 0.0) + value

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if labels.get("model") not in (MODEL, None):
                continue
            if s.name == "sidemesh_requests_total":
                add(sample.requests, (sidecar, labels["version"]), s.value)
                if labels.get("code", "").startswith("5"):
                    add(sample.errors, (sidecar, labels["version"]), s.value)
            elif s.name == _DURATION + "_bucket":
                add(sample.buckets, (sidecar, labels["version"], float(labels["le"])), s.value)
            elif s.name == "sidemesh_mirror_requests_total" and labels.get("outcome") in _SENT:
                add(sample.mirrored, (sidecar, labels["shadow_version"]), s.value)
            elif s.name == "sidemesh_mirror_compared_rows_total":
                add(sample.compared, (labels["version"], labels["shadow_version"]), s.value)
            elif s.name == "sidemesh_mirror_agreed_rows_total":
                add(sample.agreed, (labels["version"], labels["shadow_version"]), s.value)
    sample.scraped.add(sidecar)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative (le, count) pairs: linear within the
    bucket holding the rank; the highest finite bound when the rank lies in +Inf."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def _increase(new: float, old: float | None) -> float:
    return new if old is None or new < old else new - old


@dataclass(frozen=True)
class VersionView:
    version: str
    rps: float | None = None  # client requests routed to it per second
    share: float | None = None  # of all client requests
    shadow_rps: float | None = None  # shadow copies it received per second
    errors_rps: float | None = None  # 5xx answers per second
    p50_s: float | None = None
    p99_s: float | None = None
    agreed: float = 0.0  # as a shadow: rows agreeing with the primaries, since the sidecars started
    compared: float = 0.0
    verdict: str | None = None  # the detector's latest window: clean, drift, insufficient, no_reference
    firing: bool = False
    drifted_in_a_row: int = 0


@dataclass(frozen=True)
class MeshView:
    at: float  # wall clock
    window_s: float  # what the rates span
    route_version: int | None
    route: dict | None
    versions: tuple[VersionView, ...]
    problems: tuple[str, ...] = ()

    def version(self, version: str) -> VersionView:
        return next(v for v in self.versions if v.version == version)


def mesh_view(old: Sample, new: Sample, route_version: int | None, route: dict | None, verdicts: dict[str, dict],
              problems: tuple[str, ...] = ()) -> MeshView:
    """Rates between two samples (``verdicts``: the detector's /v1/models entries by version)."""
    dt = new.at - old.at
    both = old.scraped & new.scraped if old is not new else set()

    def delta(table_new: dict, table_old: dict, keep) -> float:
        return sum(_increase(v, table_old.get(k)) for k, v in table_new.items() if k[0] in both and keep(k))

    routed: dict[str, float] = {}
    rows = []
    for v in VERSIONS:
        served = delta(new.requests, old.requests, lambda k, v=v: k == (v, v))
        shadow = delta(new.mirrored, old.mirrored, lambda k, v=v: k[1] == v)
        routed[v] = max(served - shadow, 0.0)
        errors = delta(new.errors, old.errors, lambda k, v=v: k[1] == v)
        merged: dict[float, float] = {}
        for (sidecar, version, le), value in new.buckets.items():
            if version == v and sidecar in both:
                merged[le] = merged.get(le, 0.0) + _increase(value, old.buckets.get((sidecar, version, le)))
        pairs = list(merged.items())
        drift = verdicts.get(v, {})
        alert = drift.get("alert") or {}
        rows.append(dict(version=v, shadow_rps=shadow / dt if dt > 0 else None,
                         errors_rps=errors / dt if dt > 0 else None,
                         p50_s=quantile(0.5, pairs), p99_s=quantile(0.99, pairs),
                         agreed=sum(x for (p, s), x in new.agreed.items() if s == v),
                         compared=sum(x for (p, s), x in new.compared.items() if s == v),
                         verdict=drift.get("verdict"), firing=bool(alert.get("firing")),
                         drifted_in_a_row=int(alert.get("drifted_in_a_row") or 0)))
    total = sum(routed.values())
    versions = tuple(VersionView(rps=routed[r["version"]] / dt if dt > 0 else None,
                                 share=routed[r["version"]] / total if total > 0 else None, **r) for r in rows)
    return MeshView(time.time(), dt, route_version, route, versions, problems)


class Observer:
    def __init__(self, session: aiohttp.ClientSession, plan: PortPlan, admin: AdminApi, drift: DriftApi,
                 window_s: float = 5.0) -> None:
        self.session, self.plan, self.admin, self.drift = session, plan, admin, drift
        self.window_s = window_s
        self.samples: deque[Sample] = deque()
        self._waiters: list[asyncio.Future] = []
        self.view = MeshView(time.time(), 0.0, None, None, tuple(VersionView(v) for v in VERSIONS))

    async def _sidecars(self, sample: Sample, problems: list[str]) -> None:
        async def one(version: str) -> None:
            url = f"http://{HOST}:{self.plan.version(version).sidecar_admin}/metrics"
            try:
                parse_sidecar(sample, version, await get_text(self.session, url))
            except (ApiError, ValueError) as exc:
                problems.append(f"version {version}'s sidecar metrics: {exc}")

        await asyncio.gather(*(one(v) for v in VERSIONS))

    async def scrape(self) -> MeshView:
        problems: list[str] = []
        sample = Sample(time.monotonic())
        route_task = asyncio.ensure_future(self.admin.route(MODEL))
        drift_task = asyncio.ensure_future(self.drift.models())
        await self._sidecars(sample, problems)
        route_version = route = None
        try:
            found = await route_task
            if found is not None:
                route_version, route = found
        except ApiError as exc:
            problems.append(f"control plane: {exc}")
        verdicts: dict[str, dict] = {}
        try:
            verdicts = {m["version"]: m for m in await drift_task if m["model"] == MODEL}
        except (ApiError, KeyError, TypeError) as exc:
            problems.append(f"drift detector: {exc}")
        self.samples.append(sample)
        while len(self.samples) > 2 and sample.at - self.samples[1].at >= self.window_s:
            self.samples.popleft()
        self.view = mesh_view(self.samples[0], sample, route_version, route, verdicts, tuple(problems))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(self.view)
        return self.view

    async def next_view(self) -> MeshView:
        """The view of the next scrape (whoever runs it)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter
