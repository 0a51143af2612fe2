"""Assembles and runs the drift detector: SQLite state, the stats stream (gRPC), the HTTP API,
the evaluation worker, the ticker (window ages, checkpoints) and alert delivery; torn down
in reverse through one ``AsyncExitStack``, with a last checkpoint on the way out."""

from __future__ import annotations

import asyncio
import signal

import grpc
from aiohttp import web

from sidemesh.lifecycle import StackLifecycle
from sidemesh.notify import Outbox

from .api import build_app
from .config import DriftConfig
from .delivery import AlertmanagerTarget, Deliverer, WebhookTarget
from .errors import DriftError
from .ingest import MAX_MESSAGE_BYTES, stats_handler
from .metrics import DriftMetrics
from .service import DriftService
from .store import DriftStore

__all__ = ["DriftServer", "serve"]


def _say(message: str) -> None:
    print(f"sidemesh drift: {message}", flush=True)


class DriftServer(StackLifecycle):
    """``async with DriftServer(config) as drift`` runs it; ports are known after."""

    def __init__(self, config: DriftConfig, metrics: DriftMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else DriftMetrics()
        self.port = 0
        self.stats_port = 0

    def _targets(self) -> list:
        cfg = self.config
        targets: list = [WebhookTarget(url, cfg.webhook_secret, "sidemesh") for url in cfg.webhooks]
        targets += [WebhookTarget(url, cfg.webhook_secret, "alertmanager") for url in cfg.am_webhooks]
        targets += [AlertmanagerTarget(url) for url in cfg.alertmanagers]
        return targets

    async def _task(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self._stack.push_async_callback(stop)

    async def _start(self) -> None:
        cfg = self.config
        store = DriftStore(cfg.state)
        self._stack.callback(store.close)
        outbox = Outbox(cfg.state)
        self._stack.callback(outbox.close)
        service_ref: list[DriftService] = []
        deliverer = Deliverer(outbox, self._targets(), self.metrics,
                              firing=lambda: service_ref[0].tracker.firing() if service_ref else [],
                              resend_s=cfg.resend_s)
        self.service = service = DriftService(store, self.metrics, cfg.policy, notify=deliverer.notify)
        service_ref.append(service)
        await deliverer.start()
        self._stack.push_async_callback(deliverer.stop)
        # Unwound before the deliverer stops and the store closes: a last checkpoint.
        self._stack.callback(service.checkpoint)
        await self._task(service.run(), "drift-evaluate")
        await self._task(self._ticker(), "drift-ticker")

        stats = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        stats.add_generic_rpc_handlers((stats_handler(service),))
        self.stats_port = stats.add_insecure_port(f"{cfg.host}:{cfg.stats_port}")
        if self.stats_port == 0:
            raise DriftError(f"cannot listen for statistics on {cfg.host}:{cfg.stats_port}")
        await stats.start()
        self._stack.push_async_callback(stats.stop, 1.0)

        runner = web.AppRunner(build_app(service, outbox), access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        deliverer.external_url = cfg.external_url or f"http://{cfg.host}:{self.port}"
        refs = len(service.reference_list())
        _say(f"HTTP API on http://{cfg.host}:{self.port}, statistics stream on {cfg.host}:{self.stats_port}, "
             f"state in {cfg.state}")
        if not self._targets():
            _say("no alert targets: give --webhook, --am-webhook or --alertmanager to be told about drift")
        _say(f"ready; {refs} reference(s), {len(service.windows.open)} window(s) in progress")

    async def _ticker(self) -> None:
        """Close windows that reached their age every second; checkpoint every few seconds."""
        loop = asyncio.get_running_loop()
        next_checkpoint = loop.time() + self.config.checkpoint_s
        while True:
            await asyncio.sleep(min(1.0, self.config.checkpoint_s))
            self.service.tick()
            if loop.time() >= next_checkpoint:
                self.service.checkpoint()
                next_checkpoint = loop.time() + self.config.checkpoint_s


async def serve(config: DriftConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with DriftServer(config):
        await stop.wait()
        _say("stopping")
