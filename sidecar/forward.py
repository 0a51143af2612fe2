"""Send a request to the chosen version with the route's timeout, retries and outlier
ejection, and turn every failure into a V2-shaped answer that says why.

Retry conditions are Envoy's ``retry_on`` names: ``connect-failure``, ``reset`` (and
``refused-stream``, its HTTP/2 cousin), ``5xx``, ``gateway-error`` (502, 503, 504, per-try
timeouts) and ``retriable-4xx`` (409). A retry goes to another endpoint when the cluster
has one, and only while the retry budget allows.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from .budget import RetryBudget, RetryGate
from .errors import ConnectFailed, UpstreamError, UpstreamReset, UpstreamTimeout
from .http1 import Response, error_response
from .instruments import Instruments
from .outlier import OutlierDetector
from .router import Decision
from .table import Endpoint, RetryPolicy
from .upstream import UpstreamPool, UpstreamResponse

__all__ = ["Forwarder", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 30.0
_NO_RETRY = RetryPolicy()


def _retryable(on: frozenset, status: int) -> str | None:
    if status >= 500:
        if "5xx" in on:
            return "5xx"
        if status in (502, 503, 504) and "gateway-error" in on:
            return "gateway-error"
    elif status == 409 and "retriable-4xx" in on:
        return "retriable-4xx"
    return None


def _retryable_error(on: frozenset, exc: UpstreamError) -> str | None:
    if isinstance(exc, ConnectFailed):
        return "connect-failure" if "connect-failure" in on else None
    if isinstance(exc, UpstreamReset):
        return "reset" if ("reset" in on or "refused-stream" in on) else None
    if isinstance(exc, UpstreamTimeout):
        return next((c for c in ("5xx", "gateway-error") if c in on), None)
    return None


class Forwarder:
    def __init__(self, pool: UpstreamPool, local: tuple[str, int], outliers: OutlierDetector, budget: RetryBudget,
                 instruments: Instruments, in_flight: Callable[[], int], connect_timeout_s: float = 1.0) -> None:
        self.pool = pool
        self.local = local
        self.outliers = outliers
        self.budget = budget
        self.instruments = instruments
        self._in_flight = in_flight
        self.connect_timeout_s = connect_timeout_s
        self._loop = asyncio.get_event_loop()

    async def send(self, decision: Decision, model_label: str, data: bytes, head_only: bool = False) -> UpstreamResponse | Response:
        """The upstream's response, or the sidecar's own error ``Response``."""
        route = decision.route
        retry = route.retry if route is not None else _NO_RETRY
        timeout = route.timeout_s if route is not None else DEFAULT_TIMEOUT_S
        deadline = self._loop.time() + timeout
        cluster = decision.cluster
        where = "local" if decision.local else "remote"
        labels = (model_label, decision.version)
        endpoint: Endpoint | None = None
        gate = RetryGate(self.budget, retry.retries, self._in_flight)
        try:
            while True:
                if decision.local:
                    host, port = self.local
                    connect_timeout = self.connect_timeout_s
                else:
                    if cluster is None:
                        return error_response(503, f"version {decision.version!r} of model {model_label!r} has no cluster in the routing table yet")
                    endpoint = self.outliers.pick(cluster, avoid=endpoint)
                    if endpoint is None:
                        return error_response(
                            503, f"version {decision.version!r} of model {model_label!r} has no endpoint: no sidecar of that version is connected")
                    host, port = endpoint.host, endpoint.port
                    connect_timeout = cluster.connect_timeout_s
                remaining = deadline - self._loop.time()
                per_try = min(retry.per_try_timeout_s or remaining, remaining)
                try:
                    response = await self.pool.request(host, port, data, per_try, connect_timeout, head_only)
                except UpstreamError as exc:
                    if endpoint is not None:
                        self.outliers.record(cluster, endpoint, failed=True)
                    reason = _retryable_error(retry.on, exc)
                    outcome: UpstreamResponse | UpstreamError = exc
                else:
                    self.instruments.upstream_duration.observe(labels + (where,), response.elapsed)
                    if endpoint is not None:
                        self.outliers.record(cluster, endpoint, failed=response.status >= 500)
                    reason = _retryable(retry.on, response.status) if response.status >= 409 else None
                    outcome = response
                if reason is None or deadline - self._loop.time() <= 0 or not gate.allow():
                    if gate.refused:
                        self.instruments.retries_refused.inc(labels)
                    return outcome if isinstance(outcome, UpstreamResponse) else self._failure(outcome, decision, model_label, timeout)
                self.instruments.retries.inc(labels + (reason,))
        finally:
            gate.close()

    def _failure(self, exc: UpstreamError, decision: Decision, model: str, timeout: float) -> Response:
        what = f"version {decision.version!r} of model {model!r}"
        if isinstance(exc, ConnectFailed):
            return error_response(503, f"{what} is unavailable: {exc}")
        if isinstance(exc, UpstreamTimeout):
            return error_response(504, f"{what} did not answer in time: {exc}")
        return error_response(502, f"{what} failed to answer: {exc}")
