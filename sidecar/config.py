"""The sidecar's configuration: one frozen value, validated once, errors naming the flag."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import ConfigError
from .mirror import MirrorConfig
from .table import OutlierPolicy

__all__ = ["SidecarConfig", "parse_host_port"]


def parse_host_port(text: str, flag: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or a URL with an explicit port, to (host, port)."""
    value = text.strip()
    if "://" in value:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port
        if not host or port is None or parts.path not in ("", "/"):
            raise ConfigError(flag, f"expected http://HOST:PORT with an explicit port and no path, got {text!r}")
        return host, port
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(flag, f"expected HOST:PORT with a port 1-65535, got {text!r}")
    return host.strip("[]"), int(port)


_MIN_STATS_QUEUE = 64 << 10  # a few reports of a few inputs


def _positive(value: float, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(flag, f"expected a positive number, got {value!r}")


@dataclass(frozen=True)
class SidecarConfig:
    model: str
    version: str
    upstream: tuple[str, int] = ("127.0.0.1", 8000)
    upstream_grpc: tuple[str, int] | None = None
    listen: tuple[str, int] = ("127.0.0.1", 15001)
    grpc_listen: tuple[str, int] | None = None  # defaults to 127.0.0.1:15002 when upstream_grpc is set
    admin: tuple[str, int] = ("127.0.0.1", 15020)
    control_plane: tuple[str, int] | None = None  # None: static routing from the start
    load_report_to: tuple[str, int] | None = None  # the LRS server; None: the control plane's address
    advertise: tuple[str, int] | None = None  # where other sidecars reach us; default: listen
    advertise_grpc: tuple[str, int] | None = None
    node_id: str = ""
    static_after_s: float | None = 30.0  # serve the static fallback when no config arrived by then
    max_concurrent: int = 1024
    max_body_bytes: int = 64 << 20
    drain_timeout_s: float = 30.0
    connect_timeout_s: float = 1.0
    outlier: OutlierPolicy = field(default_factory=OutlierPolicy)
    retry_budget: float = 0.2
    mirror: MirrorConfig = field(default_factory=MirrorConfig)
    trace_sample: float = 0.01
    otlp_endpoint: str | None = None
    drift: tuple[str, int] | None = None  # the drift detector's stats stream; None: no input statistics
    stats_interval_s: float = 5.0
    stats_sample: float = 1.0  # caps each route's stats_sample share
    stats_cpu_budget: float = 0.004  # share of one core
    stats_queue_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        for flag, value in (("--model", self.model), ("--version", self.version)):
            if not value or not all(c.isalnum() or c in "_.-" for c in value) or len(value) > 63:
                raise ConfigError(flag, f"expected a name of letters, digits, '_', '.' or '-' (at most 63), got {value!r}")
        if self.static_after_s is not None and (self.static_after_s < 0 or not math.isfinite(self.static_after_s)):
            raise ConfigError("--static-after", f"expected seconds (0 or more) or 'never', got {self.static_after_s!r}")
        if isinstance(self.max_concurrent, bool) or self.max_concurrent < 1:
            raise ConfigError("--max-concurrent", f"expected a positive integer, got {self.max_concurrent!r}")
        if self.max_body_bytes < 1:
            raise ConfigError("--max-body-bytes", f"expected a positive integer, got {self.max_body_bytes!r}")
        _positive(self.drain_timeout_s, "--drain-timeout")
        _positive(self.connect_timeout_s, "--connect-timeout")
        if not 0 <= self.retry_budget <= 1:
            raise ConfigError("--retry-budget", f"expected a share between 0 and 1, got {self.retry_budget!r}")
        if not 0 <= self.trace_sample <= 1:
            raise ConfigError("--trace-sample", f"expected a share between 0 and 1, got {self.trace_sample!r}")
        _positive(self.stats_interval_s, "--stats-interval")
        if not 0 <= self.stats_sample <= 1:
            raise ConfigError("--stats-sample", f"expected a share between 0 and 1, got {self.stats_sample!r}")
        if not 0 <= self.stats_cpu_budget <= 1:
            raise ConfigError("--stats-cpu-budget", f"expected a share of one core between 0 and 1, got {self.stats_cpu_budget!r}")
        if isinstance(self.stats_queue_bytes, bool) or self.stats_queue_bytes < _MIN_STATS_QUEUE:
            raise ConfigError("--stats-queue-bytes", f"expected at least {_MIN_STATS_QUEUE} bytes, got {self.stats_queue_bytes!r}")
        if self.grpc_listen is None and self.upstream_grpc is not None:
            object.__setattr__(self, "grpc_listen", ("127.0.0.1", 15002))
        if not self.node_id:
            object.__setattr__(self, "node_id", f"{self.model}-{self.version}-{socket.gethostname()}-{os.getpid()}")

    @property
    def advertised(self) -> tuple[str, int]:
        return self.advertise or self.listen

    @property
    def advertised_grpc(self) -> tuple[str, int] | None:
        return self.advertise_grpc or self.grpc_listen

    @property
    def load_reports(self) -> tuple[str, int] | None:
        """Where load reports go: ``load_report_to``, else the control plane; None: nowhere."""
        return self.load_report_to or self.control_plane
