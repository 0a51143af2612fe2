"""Canary gates measured from Prometheus (``--prometheus-url``): one instant PromQL query per
``Measurement`` field, evaluated at the end of the window, over the sidecars' own metrics.

Counting each client request once. A request that enters the sidecar of v1 and is routed to
v2 is answered twice in ``sidemesh_requests_total{version="v2"}``: by the entry sidecar and
by the v2 sidecar that served it (a shadow copy is answered once more, by the shadow's
sidecar). The entry sidecar also records each call it forwarded that got an answer in
``sidemesh_upstream_duration_seconds{upstream="remote"}``, and the mirroring sidecar counts
each copy it sent in ``sidemesh_mirror_requests_total``. So::

    client requests = answers - forwarded calls answered - shadow copies sent

which also counts once a request that entered through a proxy that exports no metrics (a
stock Envoy). No metric says which of a forwarded request's two answers was a 5xx, so
``errors`` is the 5xx share of the primary answers (every answer but the shadow copies)
applied to those requests: the share weighs a forwarded request twice in both numerator and
denominator, which leaves it unbiased unless failures depend on where a request entered.

Window counts are exact differences between the last samples at or before ``until`` and
``since`` (``x - x offset W``); a series born inside the window counts whole (a counter starts
at 0); a counter reset in the window falls back to ``increase()``. docs/control-plane.md
("Canary gates from Prometheus") lists the queries and their caveats.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from string import Template
from types import MappingProxyType
from urllib.parse import urlsplit

import aiohttp

from ..errors import ValidationError
from .measure import MeasureError, Measurement

__all__ = ["DEFAULT_QUERIES", "PrometheusSource", "promql_string", "window"]


def _delta(selector: str) -> str:
    """Per series: how much the counter grew between ``since`` and ``until``."""
    s = selector
    return f"(({s} - {s} offset $window) >= 0 or ({s} unless {s} offset $window) or increase({s}[$window]))"


def _count(selector: str) -> str:
    return f"sum({_delta(selector)})"


# Selectors; $model, $version and $window are filled in per query (label values escaped).
_ANSWERS = 'sidemesh_requests_total{model="$model",version="$version"}'
_ANSWERS_5XX = 'sidemesh_requests_total{model="$model",version="$version",code=~"5.."}'
_FORWARDED = 'sidemesh_upstream_duration_seconds_count{model="$model",version="$version",upstream="remote"}'
_DURATION = 'sidemesh_request_duration_seconds_bucket{model="$model",version="$version"}'
_COPIES = 'sidemesh_mirror_requests_total{model="$model",shadow_version="$version",outcome=~"ok|shadow_error|primary_error"}'
_SHADOW_OK = 'sidemesh_mirror_requests_total{model="$model",shadow_version="$version",outcome="ok"}'
_SHADOW_ERRORS = 'sidemesh_mirror_requests_total{model="$model",shadow_version="$version",outcome="shadow_error"}'
_COMPARED = 'sidemesh_mirror_compared_rows_total{model="$model",shadow_version="$version"}'
_AGREED = 'sidemesh_mirror_agreed_rows_total{model="$model",shadow_version="$version"}'
_MISMATCHES = 'sidemesh_mirror_mismatches_total{model="$model",shadow_version="$version"}'

# Client requests: answers, less the second answer of each forwarded call, less shadow copies.
_REQUESTS = f"clamp_min({_count(_ANSWERS)} - ({_count(_FORWARDED)} or vector(0)) - ({_count(_COPIES)} or vector(0)), 0)"
# Every answer's latency: entry (hop included) and serving views of forwarded requests mixed.
_P99 = f"histogram_quantile(0.99, sum by (le) ({_delta(_DURATION)}))"

# One query per Measurement field. Counts: absent or NaN -> 0. Quantiles: absent or NaN -> None.
DEFAULT_QUERIES: Mapping[str, str] = MappingProxyType({
    "requests": _REQUESTS,
    # The 5xx share of the primary answers (shadow copies left out) applied to the requests.
    "errors": (f"({_REQUESTS}) * clamp_min(({_count(_ANSWERS_5XX)} or vector(0)) - ({_count(_SHADOW_ERRORS)} or vector(0)), 0)"
               f" / ({_count(_ANSWERS)} - ({_count(_COPIES)} or vector(0)))"),
    "p99_s": _P99,
    "shadow_answers": _count(_SHADOW_OK),
    "shadow_errors": _count(_SHADOW_ERRORS),
    "compared_rows": _count(_COMPARED),
    "agreed_rows": _count(_AGREED),
    "mismatches": _count(_MISMATCHES),
    # What the shadow's own sidecar recorded serving: in the shadow phase the candidate has no
    # weight, so all it serves are copies (the mirroring sidecar exports only latency deltas).
    "shadow_p99_s": _P99,
})

_QUANTILES = frozenset({"p99_s", "shadow_p99_s"})
_FIELDS = tuple(f.name for f in fields(Measurement))
_PLACEHOLDERS = frozenset({"model", "version", "window"})


def promql_string(value: str) -> str:
    """``value`` escaped for the inside of a double-quoted PromQL string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def window(since: float, until: float) -> str:
    """The range ``[W]`` for ``since``..``until``: whole seconds, rounded up (a window a
    fraction of a second long reaches back to the scrape before it), at least 1 s."""
    span = until - since
    if not math.isfinite(span) or span < 0:
        raise ValueError(f"since: expected a time at or before until ({until!r}), got {since!r}")
    return f"{max(1, math.ceil(span - 1e-6))}s"


@dataclass(frozen=True)
class PrometheusSource:
    """Queries the Prometheus HTTP API at ``url`` (a path prefix is kept, e.g. behind a
    proxy). ``queries`` overrides the default PromQL of some fields by name."""

    url: str
    timeout_s: float = 10.0
    queries: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValidationError("url", f"expected an http:// or https:// URL with a host (and no query), got {self.url!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValidationError("url", f"expected a port from 0 to 65535, got {self.url!r}") from None
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise ValidationError("timeout_s", f"expected seconds greater than 0, got {self.timeout_s!r}")
        if not isinstance(self.queries, Mapping):
            raise ValidationError("queries", f"expected a mapping of Measurement field to PromQL, got {type(self.queries).__name__}")
        merged = dict(DEFAULT_QUERIES)
        for name, query in self.queries.items():
            if name not in DEFAULT_QUERIES:
                raise ValidationError(f"queries.{name}", f"expected one of {', '.join(_FIELDS)}")
            if not isinstance(query, str) or not query.strip():
                raise ValidationError(f"queries.{name}", f"expected a PromQL expression, got {query!r}")
            template = Template(query)
            unknown = set(template.get_identifiers()) - _PLACEHOLDERS
            if unknown or not template.is_valid():
                raise ValidationError(f"queries.{name}", "expected placeholders $model, $version and $window only (write $$ "
                                      f"for a literal $), got {query!r}")
            merged[name] = query
        object.__setattr__(self, "queries", MappingProxyType(merged))

    def render(self, name: str, model: str, version: str, since: float, until: float) -> str:
        """Field ``name``'s PromQL for one model version and window."""
        return Template(self.queries[name]).substitute(
            model=promql_string(model), version=promql_string(version), window=window(since, until))

    async def measure(self, model: str, version: str, since: float, until: float) -> Measurement:
        queries = {name: self.render(name, model, version, since, until) for name in _FIELDS}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            # Every query finishes before the session closes; the first failure is the answer.
            values = await asyncio.gather(*(self._query(session, name, query, until) for name, query in queries.items()),
                                          return_exceptions=True)
        for value in values:
            if isinstance(value, BaseException):
                raise value
        doc = {}
        for name, value in zip(queries, values):
            if value is not None and math.isinf(value):
                raise MeasureError(f"Prometheus at {self.url}: query for {name} ({queries[name]}): returned {value}, "
                                   f"expected a {'quantile' if name in _QUANTILES else 'count'}")
            if name in _QUANTILES:
                doc[name] = None if value is None or math.isnan(value) else value
            elif value is None or math.isnan(value) or value <= 0:
                doc[name] = 0
            elif name == "errors":  # a fraction of an error counts whole: gates err on the safe side
                doc[name] = math.ceil(value - 1e-6)
            else:
                doc[name] = round(value)
        return Measurement(**doc)

    async def _query(self, session: aiohttp.ClientSession, name: str, query: str, at: float) -> float | None:
        """The query's value at ``at``: the sum of its series, None when it has none."""
        endpoint = f"{self.url}/api/v1/query"
        what = f"Prometheus at {self.url}: query for {name} ({query})"
        try:
            async with session.get(endpoint, params={"query": query, "time": repr(float(at))}) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
        except TimeoutError:
            raise MeasureError(f"{what}: no answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise MeasureError(f"{what}: {type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            kind = body.get("errorType") if isinstance(body, dict) else None
            detail = f"{kind}: {error}" if error else "an answer that is not the query API's JSON"
            raise MeasureError(f"{what}: HTTP {status}, {detail}")
        return _value(body.get("data"), what, name in _QUANTILES)


def _value(data: object, what: str, single: bool) -> float | None:
    try:
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return float(result[1])
        if kind != "vector":
            raise MeasureError(f"{what}: expected an instant vector or a scalar, got a {kind}")
        samples = [float(series["value"][1]) for series in result]
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise MeasureError(f"{what}: malformed result ({type(exc).__name__}: {exc})") from None
    if not samples:
        return None
    if single and len(samples) > 1:
        raise MeasureError(f"{what}: returned {len(samples)} series; a quantile query must return one (aggregate with sum by (le))")
    return math.fsum(samples)
