"""The ``sidemesh.io/`` annotations a pod opts in with, read into ``PodSettings``.

Every error is a ``ValidationError`` whose field is the annotation at fault and whose
message gives the expected form, so a denied pod tells its author exactly what to fix.
Annotation values are strings in Kubernetes; a YAML ``true`` or ``8000`` left unquoted is
called out as such, since the API server would reject the manifest anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

from ..errors import ValidationError
from ..routing import NAME
from .config import Resources
from .quantity import QUANTITY_FORM, parse_quantity

__all__ = ["ANNOTATIONS", "INJECT", "MODEL", "VERSION", "PORT", "GRPC_PORT", "STATS_SAMPLE", "SHADOW", "STATUS",
           "RESOURCE_ANNOTATIONS", "NAMESPACE_LABEL", "ROLE_LABEL", "SIDECAR_PORTS", "PodSettings", "wants_injection",
           "parse_settings"]

PREFIX = "sidemesh.io/"
INJECT = PREFIX + "inject"
MODEL = PREFIX + "model"
VERSION = PREFIX + "version"
PORT = PREFIX + "port"
GRPC_PORT = PREFIX + "grpc-port"
STATS_SAMPLE = PREFIX + "stats-sample"
SHADOW = PREFIX + "shadow"
STATUS = PREFIX + "status"
# Resources field -> annotation overriding it.
RESOURCE_ANNOTATIONS = {"cpu_request": PREFIX + "cpu-request", "memory_request": PREFIX + "memory-request",
                        "cpu_limit": PREFIX + "cpu-limit", "memory_limit": PREFIX + "memory-limit"}
ANNOTATIONS = (INJECT, MODEL, VERSION, PORT, GRPC_PORT, STATS_SAMPLE, SHADOW, *RESOURCE_ANNOTATIONS.values(), STATUS)
NAMESPACE_LABEL = PREFIX + "inject"  # on a namespace, value "enabled"
ROLE_LABEL = PREFIX + "role"  # set on injected pods: "primary" or "shadow"
# The sidecar's inbound REST, inbound gRPC and admin ports: the app must not use them.
SIDECAR_PORTS = {"sidemesh-http": 15001, "sidemesh-grpc": 15002, "sidemesh-admin": 15020}
# Recommended Kubernetes labels read when the annotation is absent.
_FALLBACK_LABELS = {MODEL: "app.kubernetes.io/name", VERSION: "app.kubernetes.io/version"}
_DEFAULT_PORT = 8000


def _string(annotations: Mapping[str, Any], key: str, example: str) -> str | None:
    value = annotations.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValidationError(key, f"expected a string such as {example} (annotation values are strings: quote it in YAML), got {value!r}")


def _boolean(annotations: Mapping[str, Any], key: str) -> bool | None:
    value = _string(annotations, key, '"true"')
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise ValidationError(key, f'expected "true" or "false", got {value!r}')
    return value.lower() == "true"


def wants_injection(annotations: Mapping[str, Any], namespace_enabled: bool) -> bool:
    """The opt-in rule: the pod's ``sidemesh.io/inject`` decides when present; otherwise
    the namespace label ``sidemesh.io/inject=enabled`` does."""
    choice = _boolean(annotations, INJECT)
    return namespace_enabled if choice is None else choice


@dataclass(frozen=True)
class PodSettings:
    model: str
    version: str
    port: int = _DEFAULT_PORT
    grpc_port: int | None = None
    stats_sample: float | None = None
    shadow: bool = False
    resources: Resources = field(default_factory=Resources)

    def __post_init__(self) -> None:
        for key, value in ((MODEL, self.model), (VERSION, self.version)):
            if not isinstance(value, str) or not NAME.match(value):
                raise ValidationError(key, f"expected a name of letters, digits, '_', '.' or '-' (at most 63), got {value!r}")
        for key, value in ((PORT, self.port), (GRPC_PORT, self.grpc_port)):
            if value is None and key == GRPC_PORT:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
                raise ValidationError(key, f'expected a port 1-65535 as a string (e.g. "8000"), got {value!r}')
            if value in SIDECAR_PORTS.values():
                raise ValidationError(key, f"{value} is the sidecar's own port (it uses {', '.join(map(str, SIDECAR_PORTS.values()))}); "
                                      "expected the app's port")
        if self.grpc_port == self.port:
            raise ValidationError(GRPC_PORT, f"{self.grpc_port} is also sidemesh.io/port; expected the app's gRPC port, a different one")
        if self.stats_sample is not None and not (isinstance(self.stats_sample, float) and 0.0 <= self.stats_sample <= 1.0):
            raise ValidationError(STATS_SAMPLE, f'expected a share between 0 and 1 (e.g. "0.1"), got {self.stats_sample!r}')

    @property
    def role(self) -> str:
        return "shadow" if self.shadow else "primary"


def _name(annotations: Mapping[str, Any], labels: Mapping[str, Any], key: str) -> str:
    value = _string(annotations, key, '"tabular"')
    if value is None and isinstance(labels.get(_FALLBACK_LABELS[key]), str):
        value = labels[_FALLBACK_LABELS[key]]
    if value is None:
        raise ValidationError(key, f"missing; expected the {key.removeprefix(PREFIX)} name, letters, digits, '_', '.' or '-' "
                              f"(or the label {_FALLBACK_LABELS[key]}), or sidemesh.io/inject: \"false\" to opt out")
    return value


def _port(annotations: Mapping[str, Any], key: str) -> int | None:
    value = _string(annotations, key, '"8000"')
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 5:  # int() refuses thousands of digits itself
        raise ValidationError(key, f'expected a port 1-65535 as a string (e.g. "8000"), got {value!r:.40}')
    return int(value)


def _share(annotations: Mapping[str, Any], key: str) -> float | None:
    value = _string(annotations, key, '"0.1"')
    if value is None:
        return None
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 1.0:
        raise ValidationError(key, f'expected a share between 0 and 1 (e.g. "0.1"), got {value!r}')
    return share


def _resources(annotations: Mapping[str, Any], defaults: Resources) -> Resources:
    """Defaults with the annotations' overrides. A request raised above the default limit
    takes the limit with it (and a limit set below the default request, the request); a
    request above a limit when both are given is an error."""
    given: dict[str, str] = {}
    amounts: dict[str, Decimal] = {}
    for name, key in RESOURCE_ANNOTATIONS.items():
        value = _string(annotations, key, '"250m"' if name.startswith("cpu") else '"256Mi"')
        if value is not None:
            try:
                amounts[name] = parse_quantity(value)
            except ValueError as exc:
                raise ValidationError(key, str(exc)) from None
            if name.endswith("_limit") and amounts[name] == 0:
                raise ValidationError(key, f"expected {QUANTITY_FORM}, above 0, got {value!r}")
            given[name] = value
    values = {name: given.get(name, getattr(defaults, name)) for name in RESOURCE_ANNOTATIONS}
    for kind in ("cpu", "memory"):
        request, limit = f"{kind}_request", f"{kind}_limit"
        if parse_quantity(values[request]) <= parse_quantity(values[limit]):
            continue
        if limit not in given:
            values[limit] = values[request]
        elif request not in given:
            values[request] = values[limit]
        else:
            raise ValidationError(RESOURCE_ANNOTATIONS[limit], f"{values[limit]} is below the {kind} request {values[request]}; "
                                  f"expected a limit of at least the request ({RESOURCE_ANNOTATIONS[request]})")
    return Resources(**values)


def parse_settings(metadata: Mapping[str, Any], defaults: Resources) -> PodSettings:
    """Read an opted-in pod's settings from its metadata; unknown ``sidemesh.io/``
    annotations are errors too (a misspelt one would otherwise be ignored quietly)."""
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    if not isinstance(annotations, Mapping):
        raise ValidationError("metadata.annotations", f"expected a map of strings, got {annotations!r}")
    if not isinstance(labels, Mapping):
        labels = {}
    for key in annotations:
        if isinstance(key, str) and key.startswith(PREFIX) and key not in ANNOTATIONS:
            raise ValidationError(key, f"unknown annotation; expected one of {', '.join(ANNOTATIONS)}")
    port = _port(annotations, PORT)
    return PodSettings(
        model=_name(annotations, labels, MODEL),
        version=_name(annotations, labels, VERSION),
        port=_DEFAULT_PORT if port is None else port,
        grpc_port=_port(annotations, GRPC_PORT),
        stats_sample=_share(annotations, STATS_SAMPLE),
        shadow=bool(_boolean(annotations, SHADOW)),
        resources=_resources(annotations, defaults),
    )
