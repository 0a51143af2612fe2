"""What the injector adds to every pod unless the pod's annotations say otherwise: the
image, where the control plane and the drift detector are, the sidecar's resources and
whether it runs as a native sidecar (an init container with ``restartPolicy: Always``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from .quantity import parse_quantity

__all__ = ["InjectorConfig", "Resources", "SIDECAR_STYLES", "injector_version", "default_image"]

SIDECAR_STYLES = ("native", "container")
_HOST_PORT = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")
_IMAGE = re.compile(r"^[a-z0-9][A-Za-z0-9._/:@-]*[A-Za-z0-9_]$|^[a-z0-9]$")


def injector_version() -> str:
    try:
        return version("sidemesh")
    except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
        return "0.0.0"


def default_image() -> str:
    return f"ghcr.io/sidemesh/sidemesh:{injector_version()}"


@dataclass(frozen=True)
class Resources:
    """The sidecar's requests and limits, as Kubernetes quantity strings."""

    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"

    def __post_init__(self) -> None:
        for name in ("cpu_request", "memory_request", "cpu_limit", "memory_limit"):
            try:
                value = parse_quantity(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if name.endswith("_limit") and value == 0:
                raise ValueError(f"{name}: expected a limit above 0, got {getattr(self, name)!r}")
        for kind in ("cpu", "memory"):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            if parse_quantity(request) > parse_quantity(limit):
                raise ValueError(f"{kind}_request: {request} is above the {kind} limit {limit}")

    def as_dict(self) -> dict:
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit}}


@dataclass(frozen=True)
class InjectorConfig:
    """``control_plane`` and ``drift`` are ``HOST:PORT`` or empty (the sidecar then serves
    its static fallback / gathers no input statistics)."""

    image: str = field(default_factory=default_image)
    control_plane: str = "sidemesh-control-plane.sidemesh-system.svc:15010"
    drift: str = "sidemesh-drift.sidemesh-system.svc:9001"
    sidecar_style: str = "native"
    resources: Resources = field(default_factory=Resources)
    run_as_user: int = 65532

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not _IMAGE.match(self.image):
            raise ValueError(f"image: expected an image reference such as ghcr.io/sidemesh/sidemesh:0.1.0, got {self.image!r}")
        for name in ("control_plane", "drift"):
            value = getattr(self, name)
            match = _HOST_PORT.match(value) if isinstance(value, str) else None
            if value != "" and (match is None or not 1 <= int(match["port"]) <= 65535):
                raise ValueError(f"{name}: expected HOST:PORT with a port 1-65535 (or empty for none), got {value!r}")
        if self.sidecar_style not in SIDECAR_STYLES:
            raise ValueError(f"sidecar_style: expected one of {', '.join(SIDECAR_STYLES)}, got {self.sidecar_style!r}")
        if isinstance(self.run_as_user, bool) or not isinstance(self.run_as_user, int) or not 1 <= self.run_as_user <= 2**31 - 1:
            raise ValueError(f"run_as_user: expected a non-root user id 1..2147483647, got {self.run_as_user!r}")
