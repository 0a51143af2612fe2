"""The drift detector's configuration: one frozen value, validated once, errors naming the flag."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .delivery import check_url
from .errors import ConfigError
from .service import ServicePolicy

__all__ = ["DriftConfig"]


@dataclass(frozen=True)
class DriftConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    stats_port: int = 9001
    state: Path = Path(".sidemesh/drift.db")
    policy: ServicePolicy = field(default_factory=ServicePolicy)
    webhooks: tuple[str, ...] = ()
    am_webhooks: tuple[str, ...] = ()
    webhook_secret: bytes | None = None
    alertmanagers: tuple[str, ...] = ()
    checkpoint_s: float = 5.0
    resend_s: float = 60.0
    external_url: str | None = None  # where alert links point (default: this server's address)

    def __post_init__(self) -> None:
        for flag, port in (("--port", self.port), ("--stats-port", self.stats_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ConfigError(f"{flag}: expected a port 0-65535, got {port!r}")
        for flag, urls in (("--webhook", self.webhooks), ("--am-webhook", self.am_webhooks),
                           ("--alertmanager", self.alertmanagers)):
            for url in urls:
                check_url(flag, url)
        for flag, value in (("--checkpoint-interval", self.checkpoint_s), ("--alertmanager-resend", self.resend_s)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{flag}: expected seconds > 0, got {value!r}")
        if self.webhook_secret is not None and not self.webhook_secret:
            raise ConfigError("--webhook-secret-file: the file is empty; put the shared secret in it")
