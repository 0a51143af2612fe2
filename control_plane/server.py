"""Assembles and runs the control plane: SQLite store, xDS (ADS) and load reports (LRS) on
grpcio, the admin API on aiohttp, the rebuild task and the canary controller; torn down in
reverse through one ``AsyncExitStack``."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidemesh.lifecycle import StackLifecycle

from .admin import build_admin_app
from .ads import ads_handler
from .auth import TokenAuth
from .canary.api import add_canary_routes
from .canary.controller import CanaryController
from .canary.drift_client import DriftClient
from .canary.ledger import LoadLedger
from .canary.notify import start_events
from .canary.state import CanaryStore
from .errors import ControlPlaneError
from .lrs import lrs_handler
from .service import ControlPlane
from .store import RouteStore

__all__ = ["ControlPlaneConfig", "ControlPlaneServer", "serve"]

# xDS streams are long-lived and mostly idle: small read buffers and no bandwidth-delay
# probing keep each connected sidecar cheap.
_XDS_OPTIONS = [
    ("grpc.http2.bdp_probe", 0),
    ("grpc.experimental.tcp_min_read_chunk_size", 1024),
    ("grpc.experimental.tcp_max_read_chunk_size", 16384),
]


@dataclass(frozen=True)
class ControlPlaneConfig:
    state: Path = Path(".sidemesh/control-plane.db")
    host: str = "127.0.0.1"
    admin_port: int = 15000
    xds_port: int = 15010
    token_file: Path | None = None
    endpoint_grace_s: float = 2.0
    webhooks: tuple[str, ...] = ()  # canary events go to each
    webhook_secret_file: Path | None = None
    drift_url: str | None = None  # the drift detector, for the canary drift gate
    prometheus_url: str | None = None  # canary gates query it instead of the sidecars' load reports
    load_report_interval_s: float = 2.0  # what the LRS server asks of sidecars
    canary_tick_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("admin_port", "xds_port"):
            port = getattr(self, name)
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"{name}: expected a port 0-65535, got {port!r}")
        if self.endpoint_grace_s < 0:
            raise ValueError(f"endpoint_grace_s: expected >= 0, got {self.endpoint_grace_s}")
        for name, flag in (("load_report_interval_s", "--load-report-interval"), ("canary_tick_s", "--canary-tick")):
            value = getattr(self, name)
            if not 0.05 <= value <= 3600:
                raise ValueError(f"{flag}: expected seconds between 0.05 and 3600, got {value}")


def _say(message: str) -> None:
    print(f"sidemesh control-plane: {message}", flush=True)


class ControlPlaneServer(StackLifecycle):
    """``async with ControlPlaneServer(config) as cp`` runs it; ports are known after."""

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.admin_port = 0
        self.xds_port = 0


    async def _start(self) -> None:
        cfg = self.config
        auth = TokenAuth.load(cfg.token_file) if cfg.token_file else None
        store = RouteStore(cfg.state)
        self._stack.callback(store.close)
        self.control_plane = cp = ControlPlane(store, grace_s=cfg.endpoint_grace_s)
        self._run_task(cp.run(), "rebuild")
        self.ledger = ledger = LoadLedger()
        self.canaries = canaries = await self._canaries(cfg, cp, ledger)
        self._run_task(canaries.run(), "canaries")

        xds = grpc.aio.server(options=_XDS_OPTIONS)
        xds.add_generic_rpc_handlers((ads_handler(cp), lrs_handler(ledger, cfg.load_report_interval_s, cp.metrics.reported)))
        self.xds_port = xds.add_insecure_port(f"{cfg.host}:{cfg.xds_port}")
        if self.xds_port == 0:
            raise ControlPlaneError(f"cannot listen for xDS on {cfg.host}:{cfg.xds_port}")
        await xds.start()
        self._stack.push_async_callback(xds.stop, 1.0)

        app = build_admin_app(store, cp.nodes.status, cp.changed, auth)
        add_canary_routes(app, canaries)

        async def metrics(request: web.Request) -> web.Response:  # unauthenticated, like /healthz
            return web.Response(body=generate_latest(cp.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, cfg.host, cfg.admin_port, reuse_address=True)
        await site.start()
        self.admin_port = runner.addresses[0][1]
        _say(f"admin API on http://{cfg.host}:{self.admin_port}, xDS (ADS) on {cfg.host}:{self.xds_port}, state in {cfg.state}")
        if auth is None:
            _say("the admin API is open: no --token-file was given")
        running = canaries.running()
        _say(f"ready; {len(store.routes())} model route(s) at version {store.version}"
             + (f"; resumed {len(running)} canar{'y' if len(running) == 1 else 'ies'}" if running else ""))

    def _run_task(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)

        async def stop_task() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self._stack.push_async_callback(stop_task)

    async def _canaries(self, cfg: ControlPlaneConfig, cp: ControlPlane, ledger: LoadLedger) -> CanaryController:
        """The canary controller with its measurement source, drift client and event delivery."""
        source = ledger
        if cfg.prometheus_url:
            from .canary.prometheus import PrometheusSource  # only when configured

            source = PrometheusSource(cfg.prometheus_url)
        drift = None
        if cfg.drift_url:
            drift = DriftClient(cfg.drift_url)
            self._stack.push_async_callback(drift.close)
        store = CanaryStore(cfg.state)
        self._stack.callback(store.close)
        notify = await start_events(self._stack, cfg.state, cfg.webhooks, cfg.webhook_secret_file, cp.metrics.registry)
        controller = CanaryController(
            cp.store, store, source, endpoints=cp.nodes.endpoints, on_change=cp.changed, notify=notify, drift=drift,
            # The ledger drops reports that straddle a phase's start; Prometheus gets a scrape's worth of time.
            tick_s=cfg.canary_tick_s, settle_s=cfg.load_report_interval_s if cfg.prometheus_url else 0.0,
            on_decision=cp.metrics.canary_decided)
        cp.metrics.watch_canaries(controller)
        return controller


async def serve(config: ControlPlaneConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ControlPlaneServer(config):
        await stop.wait()
        _say("stopping")
