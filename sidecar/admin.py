"""The admin port: readiness and liveness probes, Prometheus metrics, the applied config.

- ``GET /healthz/ready``: 200 once a routing configuration is applied (from the control
  plane, or the static fallback) and while not draining; 503 with the reason otherwise.
- ``GET /healthz/live``: 200 while the process serves.
- ``GET /metrics``: Prometheus text format.
- ``GET /config_dump``: the routing table in use and the xDS client's state, as JSON.
"""

from __future__ import annotations

from typing import Callable

import orjson

from .http1 import Request, Response, error_response
from .metrics import MetricSet

__all__ = ["AdminHandler"]

_JSON = [(b"content-type", b"application/json")]
_TEXT = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]


class AdminHandler:
    def __init__(self, metrics: MetricSet, readiness: Callable[[], str | None], config_dump: Callable[[], dict]) -> None:
        """``readiness()`` returns None when ready, else why not."""
        self._metrics = metrics
        self._readiness = readiness
        self._config_dump = config_dump
        self._routes = {
            b"/healthz/ready": self._ready,
            b"/healthz/live": self._live,
            b"/metrics": self._metrics_page,
            b"/config_dump": self._dump,
        }

    async def __call__(self, request: Request) -> Response:
        page = self._routes.get(request.path)
        if page is None:
            return error_response(404, f"no admin page at {request.path.decode('latin-1')!r}; pages: "
                                  + ", ".join(p.decode() for p in self._routes))
        if request.method not in (b"GET", b"HEAD"):
            return error_response(405, f"{request.path.decode()} answers GET only", [(b"allow", b"GET, HEAD")])
        return page()

    def _ready(self) -> Response:
        reason = self._readiness()
        if reason is not None:
            return error_response(503, reason)
        return Response(200, list(_JSON), b'{"ready":true}')

    def _live(self) -> Response:
        return Response(200, list(_JSON), b'{"live":true}')

    def _metrics_page(self) -> Response:
        return Response(200, list(_TEXT), self._metrics.exposition())

    def _dump(self) -> Response:
        return Response(200, list(_JSON), orjson.dumps(self._config_dump(), option=orjson.OPT_INDENT_2))
