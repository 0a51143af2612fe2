"""``sidemesh up``'s settings: the port plan and the run's options, frozen and checked once.

Several model servers and sidecars share one machine here, so each gets its own ports.
The default plan keeps version 1 on the documented defaults (DESIGN.md) and offsets
versions 2 and 3 by +100 and +200; ``--ports free`` asks the kernel for unused ports (for
tests and a busy machine) and ``--ports N`` lays every port out from N upwards.
Everything binds 127.0.0.1.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ConfigError

__all__ = ["MODEL", "VERSIONS", "HOST", "DriftSettings", "VersionPorts", "PortPlan", "UpConfig", "parse_ports"]

MODEL = "tabular"
VERSIONS = ("1", "2", "3")  # 1 and 2 share the traffic, 3 is the shadow
HOST = "127.0.0.1"


@dataclass(frozen=True)
class DriftSettings:
    """The detector's windows for ``up``: small, so that a shift shows within seconds.

    300-row windows at alpha 0.001 (Benjamini-Hochberg over the 8 features) keep false
    alarms on clean traffic near one window in a thousand, and still reject a 1.5-sigma
    shift with p-values far below alpha; two drifted windows in a row fire the alert.
    """

    window_rows: int = 300
    window_seconds: float = 10.0
    min_rows: int = 100
    alpha: float = 0.001
    fire_after: int = 2
    resolve_after: int = 2

    def __post_init__(self) -> None:
        if self.window_rows < self.min_rows:
            raise ConfigError(f"drift.window_rows: expected at least min_rows ({self.min_rows}), got {self.window_rows}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"drift.alpha: expected a number between 0 and 1, got {self.alpha}")
        if self.fire_after < 1 or self.resolve_after < 1:
            raise ConfigError("drift.fire_after, drift.resolve_after: expected at least 1")

    def flags(self) -> list[str]:
        return ["--window-rows", str(self.window_rows), "--window-seconds", str(self.window_seconds),
                "--min-rows", str(self.min_rows), "--alpha", str(self.alpha),
                "--fire-after", str(self.fire_after), "--resolve-after", str(self.resolve_after)]


@dataclass(frozen=True)
class VersionPorts:
    """One model version's model server and sidecar."""

    version: str
    model_http: int
    model_grpc: int
    sidecar_http: int
    sidecar_grpc: int
    sidecar_admin: int


_LABELS = {"control_admin": "control plane admin", "control_xds": "control plane xDS", "drift_http": "drift API",
           "drift_stats": "drift stats", "receiver": "alert receiver", "prometheus": "prometheus",
           "alertmanager": "alertmanager", "model_http": "model server REST", "model_grpc": "model server gRPC",
           "sidecar_http": "sidecar REST", "sidecar_grpc": "sidecar gRPC", "sidecar_admin": "sidecar admin"}


@dataclass(frozen=True)
class PortPlan:
    control_admin: int
    control_xds: int
    drift_http: int
    drift_stats: int
    receiver: int
    prometheus: int
    alertmanager: int
    versions: tuple[VersionPorts, ...]

    def __post_init__(self) -> None:
        if tuple(v.version for v in self.versions) != VERSIONS:
            raise ConfigError(f"ports.versions: expected one entry per version {', '.join(VERSIONS)}")
        seen: dict[int, str] = {}
        for name, port in self.named():
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError(f"ports.{name}: expected a port 1-65535, got {port!r}")
            if port in seen:
                raise ConfigError(f"ports.{name}: port {port} is also {seen[port]}'s; every port must differ")
            seen[port] = name

    def named(self) -> list[tuple[str, int]]:
        """Every port with a name for people, in the order the plan lays them out."""
        out = [(_LABELS[f.name], getattr(self, f.name)) for f in fields(self) if f.name != "versions"]
        for v in self.versions:
            out += [(f"v{v.version} {_LABELS[f.name]}", getattr(v, f.name)) for f in fields(v) if f.name != "version"]
        return out

    def version(self, version: str) -> VersionPorts:
        return next(v for v in self.versions if v.version == version)

    @property
    def entry(self) -> VersionPorts:
        """The sidecar clients call: version 1's (any sidecar would route the same way)."""
        return self.versions[0]

    @classmethod
    def default(cls) -> "PortPlan":
        versions = tuple(VersionPorts(v, 8000 + 100 * i, 8001 + 100 * i, 15001 + 100 * i, 15002 + 100 * i, 15020 + 100 * i)
                         for i, v in enumerate(VERSIONS))
        return cls(15000, 15010, 9000, 9001, 9002, 9090, 9093, versions)

    @classmethod
    def from_ports(cls, ports: list[int]) -> "PortPlan":
        """The plan with these ports, in ``named()`` order."""
        per = len(fields(VersionPorts)) - 1
        head = len(fields(cls)) - 1
        if len(ports) != cls.size():
            raise ConfigError(f"ports: expected {cls.size()} ports, got {len(ports)}")
        versions = tuple(VersionPorts(v, *ports[head + i * per: head + (i + 1) * per]) for i, v in enumerate(VERSIONS))
        return cls(*ports[:head], versions)

    @classmethod
    def size(cls) -> int:
        return len(fields(cls)) - 1 + len(VERSIONS) * (len(fields(VersionPorts)) - 1)

    @classmethod
    def from_base(cls, base: int) -> "PortPlan":
        return cls.from_ports(list(range(base, base + cls.size())))

    @classmethod
    def free(cls) -> "PortPlan":
        """Ports the kernel says are unused now, all held at once so that they differ."""
        with ExitStack() as stack:
            ports = []
            for _ in range(cls.size()):
                s = stack.enter_context(socket.socket())
                s.bind((HOST, 0))
                ports.append(s.getsockname()[1])
        return cls.from_ports(ports)


def parse_ports(text: str) -> PortPlan:
    """``default``, ``free`` or a base port N (ports N, N+1, ...)."""
    if text == "default":
        return PortPlan.default()
    if text == "free":
        return PortPlan.free()
    top = 65535 - PortPlan.size() + 1
    if text.isdigit() and 1024 <= int(text) <= top:
        return PortPlan.from_base(int(text))
    raise ConfigError(f"--ports: expected 'default', 'free' or a base port 1024-{top}, got {text!r}")


@dataclass(frozen=True)
class UpConfig:
    state_dir: Path
    ports: PortPlan
    demo: bool = False
    exit_after_demo: bool = False
    board_interval: float = 5.0  # seconds between compact boards when stdout is not a terminal
    scrape_interval: float = 5.0  # Prometheus's, when it runs
    start_timeout: float = 90.0  # per tier of children
    stop_grace: float = 10.0  # SIGTERM to SIGKILL
    drift: DriftSettings = DriftSettings()

    def __post_init__(self) -> None:
        if self.exit_after_demo and not self.demo:
            raise ConfigError("--exit-after-demo: only with --demo")
        for name in ("board_interval", "scrape_interval", "start_timeout", "stop_grace"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')}: expected a number of seconds > 0, got {value}")
        if self.state_dir.exists() and not self.state_dir.is_dir():
            raise ConfigError(f"--state-dir: {self.state_dir} exists and is not a directory")
