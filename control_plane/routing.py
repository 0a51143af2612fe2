"""The desired routing state of one model, as frozen, validated dataclasses.

A ``Route`` names the model's backends (one per version, with an integer weight and
optional static endpoints), its mirrors (a backend and a percentage, fractional allowed),
an optional sticky key, the timeout and retry policy, and knobs only sidemesh's sidecar
reads. ``Route.from_dict`` parses the admin API's JSON and names the field at fault in
every error; ``to_dict`` gives the same JSON back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError

__all__ = ["Backend", "Mirror", "RetryPolicy", "SidecarKnobs", "Route", "RETRY_ON", "NAME"]

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
_HEADER = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")
# Envoy's x-envoy-retry-on conditions that make sense for model traffic.
RETRY_ON = ("5xx", "gateway-error", "reset", "connect-failure", "refused-stream", "retriable-4xx")
MAX_TIMEOUT_MS = 3_600_000


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(where, f"expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ValidationError(where, f"expected an integer between {low} and {high}, got {value}")
    return value


def _name(value: Any, where: str, what: str = "name") -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise ValidationError(where, f"expected a {what} of letters, digits, '_', '.' or '-' (at most 63), got {value!r}")
    return value


def _keys(doc: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
    if not isinstance(doc, dict):
        raise ValidationError(where, "expected an object")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}" if where else unknown[0], f"unknown field; expected one of {', '.join(sorted(allowed))}")
    for key in sorted(required):
        if key not in doc:
            raise ValidationError(f"{where}.{key}" if where else key, "is required")
    return doc


def _prefix(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


@dataclass(frozen=True)
class Backend:
    """One version of the model. ``endpoints`` are static ``host:port`` entries added to
    those of the sidecars that register for this version."""

    version: str
    weight: int
    endpoints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _name(self.version, "version", "version")
        _int(self.weight, "weight", 0, 1_000_000)
        for i, endpoint in enumerate(self.endpoints):
            match = _HOST_PORT.match(endpoint) if isinstance(endpoint, str) else None
            if match is None or not 1 <= int(match.group("port")) <= 65535:
                raise ValidationError(f"endpoints[{i}]", f"expected host:port with a port 1-65535, got {endpoint!r}")


@dataclass(frozen=True)
class Mirror:
    """Copy ``percent`` of the model's requests to ``version``; its answers are compared
    with the primary's, never returned."""

    version: str
    percent: float

    def __post_init__(self) -> None:
        _name(self.version, "version", "version")
        p = self.percent
        # The range check alone refuses NaN and infinities, and unlike math.isfinite takes integers of any size.
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100:
            raise ValidationError("percent", f"expected a number greater than 0 and at most 100, got {p!r}")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 1
    per_try_timeout_ms: int | None = None
    on: tuple[str, ...] = ("connect-failure", "refused-stream", "reset")

    def __post_init__(self) -> None:
        _int(self.attempts, "attempts", 0, 10)
        if self.per_try_timeout_ms is not None:
            _int(self.per_try_timeout_ms, "per_try_timeout_ms", 1, MAX_TIMEOUT_MS)
        for i, condition in enumerate(self.on):
            if condition not in RETRY_ON:
                raise ValidationError(f"on[{i}]", f"unknown retry condition {condition!r}; expected one of {', '.join(RETRY_ON)}")


@dataclass(frozen=True)
class SidecarKnobs:
    """What only sidemesh's sidecar reads (Envoy has no field for them)."""

    stats_sample: float = 1.0
    compare: bool = True

    def __post_init__(self) -> None:
        s = self.stats_sample
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
            raise ValidationError("stats_sample", f"expected a share between 0 and 1, got {s!r}")
        if not isinstance(self.compare, bool):
            raise ValidationError("compare", f"expected true or false, got {self.compare!r}")


@dataclass(frozen=True)
class Route:
    model: str
    backends: tuple[Backend, ...]
    mirrors: tuple[Mirror, ...] = ()
    sticky_key: str | None = None
    timeout_ms: int = 30_000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sidecar: SidecarKnobs = field(default_factory=SidecarKnobs)

    def __post_init__(self) -> None:
        _name(self.model, "model", "model name")
        if not self.backends:
            raise ValidationError("backends", "at least one backend is required")
        seen: dict[str, int] = {}
        for i, backend in enumerate(self.backends):
            if backend.version in seen:
                raise ValidationError(f"backends[{i}].version", f"{backend.version!r} is listed twice")
            seen[backend.version] = backend.weight
        if sum(seen.values()) == 0:
            raise ValidationError("backends", "all weights are 0; at least one backend needs a weight above 0")
        mirrored: set[str] = set()
        for i, mirror in enumerate(self.mirrors):
            where = f"mirrors[{i}].version"
            if mirror.version not in seen:
                raise ValidationError(where, f"unknown backend {mirror.version!r}; backends are {', '.join(seen)}")
            if seen[mirror.version] > 0:
                raise ValidationError(
                    where, f"{mirror.version!r} is a primary target (weight {seen[mirror.version]}); a mirror target must have weight 0"
                )
            if mirror.version in mirrored:
                raise ValidationError(where, f"{mirror.version!r} is mirrored twice")
            mirrored.add(mirror.version)
        if self.sticky_key is not None and (not isinstance(self.sticky_key, str) or not _HEADER.match(self.sticky_key)):
            raise ValidationError("sticky_key", f"expected a lower-case HTTP header name, got {self.sticky_key!r}")
        _int(self.timeout_ms, "timeout_ms", 1, MAX_TIMEOUT_MS)

    @property
    def weights(self) -> dict[str, int]:
        return {b.version: b.weight for b in self.backends}

    # --- JSON ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, model: str, doc: Any) -> "Route":
        _keys(doc, "", {"backends", "mirrors", "sticky_key", "timeout_ms", "retry", "sidecar"}, {"backends"})
        backends = tuple(_nested(Backend, f"backends[{i}]", _backend_args(b, f"backends[{i}]"))
                         for i, b in enumerate(_list(doc["backends"], "backends")))
        mirrors = tuple(_nested(Mirror, f"mirrors[{i}]", _keys(m, f"mirrors[{i}]", {"version", "percent"}, {"version", "percent"}))
                        for i, m in enumerate(_list(doc.get("mirrors", []), "mirrors")))
        retry_doc = _keys(doc.get("retry", {}), "retry", {"attempts", "per_try_timeout_ms", "on"})
        if "on" in retry_doc:
            retry_doc = {**retry_doc, "on": tuple(_list(retry_doc["on"], "retry.on"))}
        retry = _nested(RetryPolicy, "retry", retry_doc)
        sidecar = _nested(SidecarKnobs, "sidecar", _keys(doc.get("sidecar", {}), "sidecar", {"stats_sample", "compare"}))
        args = {k: doc[k] for k in ("sticky_key", "timeout_ms") if k in doc}
        return cls(model=model, backends=backends, mirrors=mirrors, retry=retry, sidecar=sidecar, **args)

    def to_dict(self) -> dict:
        doc: dict[str, Any] = {
            "backends": [{"version": b.version, "weight": b.weight, **({"endpoints": list(b.endpoints)} if b.endpoints else {})}
                         for b in self.backends],
            "mirrors": [{"version": m.version, "percent": m.percent} for m in self.mirrors],
            "sticky_key": self.sticky_key,
            "timeout_ms": self.timeout_ms,
            "retry": {"attempts": self.retry.attempts, "per_try_timeout_ms": self.retry.per_try_timeout_ms, "on": list(self.retry.on)},
            "sidecar": {"stats_sample": self.sidecar.stats_sample, "compare": self.sidecar.compare},
        }
        return doc


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise ValidationError(where, f"expected a list, got {type(value).__name__}")
    return value


def _backend_args(doc: Any, where: str) -> dict:
    doc = _keys(doc, where, {"version", "weight", "endpoints"}, {"version", "weight"})
    if "endpoints" in doc:
        doc = {**doc, "endpoints": tuple(_list(doc["endpoints"], f"{where}.endpoints"))}
    return doc


def _nested(cls, where: str, args: dict):
    """Construct ``cls`` and prefix any field error with where it sits in the document."""
    try:
        return cls(**args)
    except ValidationError as exc:
        raise ValidationError(_prefix(where, exc.field), exc.message) from None
