"""``sidemesh webhook``: the mutating admission webhook over TLS (aiohttp).

- ``POST /mutate``: pods in namespaces without the ``sidemesh.io/inject=enabled`` label;
  the pod's ``sidemesh.io/inject`` annotation decides.
- ``POST /mutate/namespace-enabled``: pods in namespaces with the label; injected unless
  the pod says ``sidemesh.io/inject: "false"``. The webhook cannot see namespace labels,
  so the MutatingWebhookConfiguration routes each case to its path (namespaceSelector).
- ``GET /healthz``, ``GET /metrics``.

The webhook keeps no state: besides logs, a review changes only counters, and dry runs
count apart (see ``metrics``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidemesh.lifecycle import StackLifecycle

from ..errors import ValidationError
from .config import InjectorConfig
from .metrics import InjectorMetrics
from .review import DENIED, IGNORED, review
from .tls import ReloadingCertificate

__all__ = ["WebhookConfig", "WebhookServer", "serve"]

log = logging.getLogger("sidemesh.injector")
MAX_REVIEW_BYTES = 8 << 20  # a pod is at most ~1.5 MB in etcd; an AdmissionReview carries it once on CREATE


@dataclass(frozen=True)
class WebhookConfig:
    tls_cert: Path
    tls_key: Path
    host: str = "127.0.0.1"
    port: int = 9443
    injector: InjectorConfig = field(default_factory=InjectorConfig)

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"--listen: expected a port 0-65535, got {self.port!r}")


def _say(message: str) -> None:
    print(f"sidemesh webhook: {message}", flush=True)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own 404/405/413 answer ``{"error": ...}`` like everything else."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, f"{exc.reason}: {request.method} {request.path}; the webhook serves POST /mutate, "
                      "POST /mutate/namespace-enabled, GET /healthz and GET /metrics")


class WebhookServer(StackLifecycle):
    """``async with WebhookServer(config) as hook`` serves; ``hook.port`` is known after."""

    def __init__(self, config: WebhookConfig, metrics: InjectorMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else InjectorMetrics()
        self.port = 0

    def _mutate(self, namespace_enabled: bool):
        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            with self.metrics.review_duration.time():
                try:
                    result = review(body, self.config.injector, namespace_enabled)
                except ValidationError as exc:
                    self.metrics.bad_requests.inc()
                    log.warning("bad admission request from %s: %s", request.remote, exc)
                    return _error(400, f"not a valid AdmissionReview: {exc}")
            self.metrics.reviewed(result.outcome, result.dry_run)
            dry = " (dry run)" if result.dry_run else ""
            if result.outcome == DENIED:
                log.warning("denied %s%s: %s", result.pod, dry, result.message)
            elif result.outcome != IGNORED:
                log.info("%s %s%s", result.outcome.replace("_", " "), result.pod, dry)
            return web.json_response(result.response)

        return handler

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _start(self) -> None:
        cfg = self.config
        certificate = ReloadingCertificate(cfg.tls_cert, cfg.tls_key,
                                           lambda ok: self.metrics.certificate_reloads.labels("ok" if ok else "error").inc())
        app = web.Application(client_max_size=MAX_REVIEW_BYTES, middlewares=[_errors])
        app.router.add_post("/mutate", self._mutate(False))
        app.router.add_post("/mutate/namespace-enabled", self._mutate(True))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=certificate.context, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        inj = cfg.injector
        _say(f"serving https://{cfg.host}:{self.port}/mutate with {cfg.tls_cert}; sidecar image {inj.image}, "
             f"{inj.sidecar_style} sidecars, control plane {inj.control_plane or '(none)'}, drift {inj.drift or '(none)'}")
        _say("ready")


async def serve(config: WebhookConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with WebhookServer(config):
        await stop.wait()
        _say("stopping")
