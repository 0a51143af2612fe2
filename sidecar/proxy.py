"""The REST request path, one layer per step (linkerd-style, in one readable place):

1. shed: refuse at once with a 503 when ``max_concurrent`` requests are in flight, or
   before any routing configuration has been applied;
2. route: read the model (and pinned version) from the path, pick the version
   (``router.Router``); nothing else of the request is parsed;
3. trace: when sampled, an inbound span and a fresh ``traceparent`` for the upstream;
4. forward: timeout, retries, outlier ejection (``forward.Forwarder``);
5. answer: upstream headers and body as bytes, plus ``x-sidemesh-version``. A request
   served locally without a version in its path is sent as ``/v2/models/M/versions/V/...``,
   so a model server holding several versions answers with this sidecar's;
6. record: counters and histograms (dictionary updates), and for an infer request that
   entered the mesh here, its cluster's row of the load reports; then hand the finished exchange
   to the mirror queue when a shadow gets a copy, and an infer request this sidecar served
   with a 200 for its own model to the statistics tap (``tap.StatsTap.offer``: a sampling
   decision and an append). Comparison and decoding happen there, later.
"""

from __future__ import annotations

import time

from .forward import Forwarder
from .http1 import HOP_BY_HOP, Request, Response, error_response
from .instruments import Instruments
from .mirror import Mirror, MirrorJob
from .router import VERSION_HEADER, RouteRefused, Router
from .upstream import encode_request

__all__ = ["RestProxy", "parse_model_path"]

_MODELS = b"/v2/models/"
_SKIP = HOP_BY_HOP
_SKIP_TRACED = HOP_BY_HOP | {b"traceparent"}
_RESPONSE_SKIP = HOP_BY_HOP | {VERSION_HEADER}


def parse_model_path(path: bytes) -> tuple[bytes | None, bytes | None, bytes]:
    """``/v2/models/M[/versions/V][/op]`` to (M, V, op); (None, None, b"") for other paths."""
    if not path.startswith(_MODELS):
        return None, None, b""
    parts = path[len(_MODELS):].split(b"/")
    if len(parts) >= 3 and parts[1] == b"versions":
        return parts[0] or None, parts[2] or None, parts[3] if len(parts) > 3 else b""
    return parts[0] or None, None, parts[1] if len(parts) > 1 else b""


class RestProxy:
    def __init__(self, router: Router, forwarder: Forwarder, mirror: Mirror, instruments: Instruments,
                 max_concurrent: int, tracer=None, tap=None) -> None:
        self.router = router
        self.forwarder = forwarder
        self.mirror = mirror
        self.m = instruments
        self.max_concurrent = max_concurrent
        self.tracer = tracer if tracer is not None and tracer.enabled else None
        self.tap = tap  # tap.StatsTap, with --drift
        self.in_flight = 0
        self._codes: dict[int, str] = {}
        self._own_prefix = b"/v2/models/" + router.model.encode()
        self._own_versioned = self._own_prefix + b"/versions/" + router.version.encode()
        self._version_bytes: dict[str, bytes] = {}

    async def handle(self, request: Request) -> Response:
        if self.in_flight >= self.max_concurrent:
            self.m.refused("overload")
            return error_response(503, f"the sidecar is at its limit of {self.max_concurrent} requests in flight; retry shortly")
        if self.router.table is None:
            self.m.refused("not_ready")
            return error_response(503, "the sidecar has no routing configuration yet (waiting for the control plane)")
        self.in_flight += 1
        try:
            return await self._proxy(request)
        finally:
            self.in_flight -= 1

    async def _proxy(self, request: Request) -> Response:
        model_b, version_b, op = parse_model_path(request.path)
        model = model_b.decode("latin-1") if model_b is not None else None
        label = self.router.label(model)
        if request.header(b"host") is None:  # the upstream would refuse it too, but not in the V2 error shape
            return self._record(label, self.router.version, error_response(
                400, "the request has no Host header; HTTP/1.1 requires one (RFC 9112, section 3.2)"), request)
        try:
            decision = self.router.decide(model, version_b.decode("latin-1") if version_b else None, request.header)
        except RouteRefused as exc:
            return self._record(label, self.router.version, error_response(exc.status, str(exc)), request)
        span = None
        extra, skip = decision.headers, _SKIP
        if self.tracer is not None:
            span = self.tracer.start_inbound(request.headers, request.method, request.target, model)
        client_span = None
        if span is not None:
            address = "local" if decision.local else decision.version
            client_span, traceparent = span.upstream(decision.version, address)
            extra, skip = tuple(extra) + ((b"traceparent", traceparent),), _SKIP_TRACED
        target = request.target
        if decision.local and version_b is None and target.startswith(self._own_prefix):
            # The local model server may hold other versions too: ask for ours by name.
            rest = target[len(self._own_prefix):]
            if not rest or rest[:1] in (b"/", b"?"):
                target = self._own_versioned + rest
        data = encode_request(request.method, target, request.headers, extra, request.body, skip)
        result = await self.forwarder.send(decision, label, data, request.method == b"HEAD")
        version = decision.version
        vbytes = self._version_bytes.get(version)
        if vbytes is None:
            vbytes = self._version_bytes[version] = version.encode()
        if isinstance(result, Response):
            response = result
            response.headers.append((VERSION_HEADER, vbytes))
            elapsed = None
        else:
            headers = [h for h in result.headers if h[0] not in _RESPONSE_SKIP]
            headers.append((VERSION_HEADER, vbytes))
            response = Response(result.status, headers, result.body)
            elapsed = result.elapsed
        if client_span is not None:
            client_span.end(response.status, None if elapsed is not None else response.body.decode("utf-8", "replace"))
            span.end(response.status, version)
        route = decision.route
        if route is not None and route.mirrors and op == b"infer" and request.method == b"POST":
            for shadow in self.router.mirrors(route):
                self.mirror.submit(MirrorJob(
                    label, version, shadow, self.router.table.clusters.get(shadow.cluster), route.compare, route.timeout_s,
                    "rest", request.method, request.target, request.headers, request.body,
                    response.status, response.headers, response.body,
                    elapsed if elapsed is not None else time.perf_counter() - request.received, span,
                ))
        if self.tap is not None and decision.local and response.status == 200 and op == b"infer" and model == self.router.model:
            self.tap.offer(request.body, request.headers)
        entry = decision.entry if op == b"infer" and request.method == b"POST" else None
        return self._record(label, version, response, request, entry)

    def _record(self, label: str, version: str, response: Response, request: Request, entry: str | None = None) -> Response:
        status = response.status
        code = self._codes.get(status)
        if code is None:
            code = self._codes[status] = str(status)
        seconds = time.perf_counter() - request.received
        self.m.answered(label, version, code, seconds)
        if entry is not None and (load := self.m.load) is not None:
            load.entry(entry, status >= 500, seconds)
        return response
