"""Frozen, validated configuration of the model server and of each model.

``ServerConfig`` comes from the command line; ``ModelConfig`` from the optional
``<repo>/<model>/config.json``. Both validate in ``__post_init__`` so that a bad value
fails at start with the field's name, never in the middle of a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ConfigError

__all__ = ["ModelConfig", "ServerConfig", "load_model_config", "KNOWN_PROVIDERS"]

KNOWN_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class ModelConfig:
    """How one model (all its versions) is batched and run.

    ``max_batch_size`` 0 turns dynamic batching off: each request runs alone, as sent.
    ``providers`` empty means automatic: CUDA when a GPU is usable, CPU otherwise.
    ``threads`` 0 lets ONNX Runtime size its intra-op pool to the machine.
    """

    max_batch_size: int = 64
    max_queue_delay_us: int = 2000
    max_queue_size: int = 1024
    providers: tuple[str, ...] = ()
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue_delay_us", "threads"):
            _check_int(name, getattr(self, name), minimum=0)
        _check_int("max_queue_size", self.max_queue_size, minimum=1)
        if not isinstance(self.providers, tuple) or not all(isinstance(p, str) for p in self.providers):
            raise ConfigError("providers: expected a list of provider names")
        for provider in self.providers:
            if provider not in KNOWN_PROVIDERS:
                raise ConfigError(f"providers: unknown provider {provider!r}, expected one of {', '.join(KNOWN_PROVIDERS)}")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0


@dataclass(frozen=True)
class ServerConfig:
    """The model server process: where the repository is and where it listens."""

    repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    max_body_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not isinstance(self.repository, Path):
            raise ConfigError("repository: expected a path")
        for name in ("http_port", "grpc_port"):
            _check_int(name, getattr(self, name), minimum=0, maximum=65535)
        _check_int("max_body_bytes", self.max_body_bytes, minimum=1024)


def _check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name}: expected an integer {bound}, got {value}")


def load_model_config(path: Path) -> ModelConfig:
    """Read ``config.json``; a missing file means the defaults."""
    if not path.exists():
        return ModelConfig()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    if "providers" in raw:
        if not isinstance(raw["providers"], list):
            raise ConfigError(f"{path}: providers: expected a list of provider names")
        raw["providers"] = tuple(raw["providers"])
    try:
        return ModelConfig(**raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
