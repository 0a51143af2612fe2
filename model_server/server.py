"""Assembles and runs the model server: repository, REST, gRPC, loading, shutdown.

The listeners start first so that liveness answers while models load; readiness turns true
per version once it is loaded and warmed up. Teardown runs in reverse through one
``AsyncExitStack``: stop accepting, drain, close batchers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version as package_version

from aiohttp import web
from prometheus_client import CollectorRegistry

from sidemesh.lifecycle import StackLifecycle

from .batcher import BatchPolicy, DynamicBatcher
from .config import ServerConfig
from .errors import ModelServerError
from .grpc_server import build_grpc_server
from .inference import InferenceService
from .metrics import ModelServerMetrics
from .repository import ModelRegistry, VersionEntry, scan_repository
from .rest import build_rest_app
from .runtime import OnnxModel, choose_providers

__all__ = ["ModelServer", "serve"]

log = logging.getLogger("sidemesh.model_server")


def _say(message: str) -> None:
    print(f"sidemesh model-server: {message}", flush=True)


def _server_version() -> str:
    try:
        return package_version("sidemesh")
    except PackageNotFoundError:
        return "0+unknown"


class ModelServer(StackLifecycle):
    """One running model server. ``async with ModelServer(config) as server`` starts it."""

    def __init__(self, config: ServerConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = ModelRegistry(scan_repository(config.repository))
        self.metrics = ModelServerMetrics(registry or CollectorRegistry())
        self.service = InferenceService(self.registry, self.metrics, _server_version())
        self.http_port = 0
        self.grpc_port = 0


    async def _start(self) -> None:
        cfg = self.config
        runner = web.AppRunner(build_rest_app(self.service, cfg.max_body_bytes), access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, cfg.host, cfg.http_port, reuse_address=True)
        await site.start()
        self.http_port = runner.addresses[0][1]

        grpc_server = build_grpc_server(self.service, cfg.max_body_bytes)
        self.grpc_port = grpc_server.add_insecure_port(f"{cfg.host}:{cfg.grpc_port}")
        if self.grpc_port == 0:
            raise ModelServerError(f"cannot listen for gRPC on {cfg.host}:{cfg.grpc_port}")
        await grpc_server.start()
        self._stack.push_async_callback(grpc_server.stop, 2.0)
        _say(f"REST on http://{cfg.host}:{self.http_port}, gRPC on {cfg.host}:{self.grpc_port}")

    async def load(self) -> None:
        """Load and warm every version (one at a time, off the event loop)."""
        loop = asyncio.get_running_loop()
        placements: dict[str, list[str]] = {}
        reasons: dict[str, str] = {}
        for model in self.registry.models.values():
            choice = choose_providers(model.config.providers)
            for entry in model.versions.values():
                try:
                    onnx_model = await loop.run_in_executor(None, self._load_one, entry, model.config, choice)
                except ModelServerError as exc:
                    entry.state, entry.error = "failed", str(exc)
                    _say(f"model {entry.model_name} version {entry.version} failed to load: {exc}")
                    continue
                self._attach(entry, onnx_model, model.config)
                on_gpu = onnx_model.provider == "CUDAExecutionProvider"
                device = "GPU (CUDA)" if on_gpu else "CPU"
                placements.setdefault(device, []).append(f"{entry.model_name}/{entry.version}")
                fell_back = not on_gpu and "CUDAExecutionProvider" in choice.providers
                reasons[device] = "CUDA was asked for but could not start" if fell_back else choice.reason
        for device, names in placements.items():
            _say(f"running {', '.join(names)} on the {device}: {reasons[device]}")

    @staticmethod
    def _load_one(entry: VersionEntry, config, choice) -> OnnxModel:
        model = OnnxModel(entry.path, config, choice)
        model.warm_up()
        return model

    def _attach(self, entry: VersionEntry, model: OnnxModel, config) -> None:
        entry.max_batch_size = config.max_batch_size if model.batchable else 0
        policy = BatchPolicy(entry.max_batch_size, config.max_queue_delay_us / 1e6, config.max_queue_size)
        observer = self.metrics.for_version(entry.model_name, entry.version)
        batcher = DynamicBatcher(model.run, model.output_names, policy, observer)
        batcher.start()
        self._stack.push_async_callback(batcher.close)
        entry.model, entry.batcher, entry.state = model, batcher, "ready"


async def serve(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ModelServer(config) as server:
        await server.load()
        ready = server.registry.ready
        models = ", ".join(f"{m.name} (versions {', '.join(m.versions)})" for m in server.registry.models.values())
        _say(f"{'ready' if ready else 'NOT ready (see above)'}; models: {models or 'none'}")
        for name in server.registry.models:
            _say(f"try: curl http://{config.host}:{server.http_port}/v2/models/{name}")
        await stop.wait()
        _say("stopping")
    print("sidemesh model-server: stopped", file=sys.stderr, flush=True)
