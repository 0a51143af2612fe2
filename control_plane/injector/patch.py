"""The one code path of the injector: from a pod (or a workload's pod template) to the
RFC 6902 JSON Patch that injects the sidecar, or to no patch at all.

The webhook answers with this patch; ``sidemesh inject`` applies the same patch to each
pod template in a manifest. A pod carrying the ``sidemesh.io/status`` annotation and the
sidecar container is left alone, so a second pass (or webhook reinvocation) is a no-op.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ValidationError
from .annotations import ROLE_LABEL, SIDECAR_PORTS, STATUS, PodSettings, parse_settings, wants_injection
from .config import InjectorConfig
from .container import CONTAINER_NAME, TMP_VOLUME, sidecar_container, status_annotation, tmp_volume

__all__ = ["Injection", "INJECTED", "ALREADY_INJECTED", "NOT_OPTED_IN", "plan_injection", "pointer", "apply_patch"]

INJECTED, ALREADY_INJECTED, NOT_OPTED_IN = "injected", "already_injected", "not_opted_in"


@dataclass(frozen=True)
class Injection:
    outcome: str  # INJECTED, ALREADY_INJECTED or NOT_OPTED_IN
    patch: tuple[dict, ...] = ()  # empty unless INJECTED
    settings: PodSettings | None = None
    native: bool = False


def pointer(*tokens: str) -> str:
    """A JSON Pointer (RFC 6901): ``~`` and ``/`` inside a token are escaped, so the
    annotation ``sidemesh.io/status`` is ``sidemesh.io~1status``."""
    return "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


def _list(spec: Mapping, key: str) -> list:
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ValidationError(f"spec.{key}", "expected a list of objects")
    return value


def _containers(spec: Mapping, key: str) -> list:
    items = _list(spec, key)
    for i, container in enumerate(items):
        if not isinstance(container.get("name", ""), str):
            raise ValidationError(f"spec.{key}[{i}].name", f"expected the container's name, a string, got {container['name']!r}")
    return items


def _check_conflicts(spec: Mapping, containers: list, init_containers: list, reinjecting: bool) -> None:
    """Refuse a pod the sidecar could not run in, rather than produce a broken one."""
    if spec.get("hostNetwork") is True:
        raise ValidationError("spec.hostNetwork", "the sidecar listens on fixed ports of the pod's network; expected a pod "
                              'without hostNetwork, or the annotation sidemesh.io/inject: "false"')
    for where, items in (("containers", containers), ("initContainers", init_containers)):
        for i, container in enumerate(items):
            if container.get("name") == CONTAINER_NAME:
                raise ValidationError(f"spec.{where}[{i}].name", f"{CONTAINER_NAME!r} is the injected sidecar's name but the pod "
                                      f"has no {STATUS} annotation; expected another container name")
            ports = container.get("ports") or []
            if not isinstance(ports, list):
                raise ValidationError(f"spec.{where}[{i}].ports", f"expected a list of container ports, got {ports!r}")
            for port in ports:
                if not isinstance(port, Mapping):
                    continue
                name = port.get("name")
                if port.get("containerPort") in SIDECAR_PORTS.values() or (isinstance(name, str) and name in SIDECAR_PORTS):
                    raise ValidationError(f"spec.{where}[{i}].ports", f"port {port.get('name') or port.get('containerPort')} "
                                          f"is the sidecar's; it uses {', '.join(f'{n} {p}' for n, p in SIDECAR_PORTS.items())}")
    if not reinjecting and any(v.get("name") == TMP_VOLUME for v in _list(spec, "volumes")):
        raise ValidationError("spec.volumes", f"{TMP_VOLUME!r} is the injected sidecar's volume; expected another volume name")


def _add_entry(ops: list, parent: Mapping, path: tuple[str, ...], key: str, value: Any) -> None:
    """Add ``key: value`` to the map at ``path``, creating the map when it is absent or empty
    (``null``, ``{}``, or an empty value of another type that an add into it would not fit)."""
    if not parent.get(path[-1]):
        ops.append({"op": "add", "path": pointer(*path), "value": {key: value}})
    else:
        ops.append({"op": "add", "path": pointer(*path, key), "value": value})


def _append(ops: list, spec: Mapping, key: str, value: dict) -> None:
    if spec.get(key) is None:
        ops.append({"op": "add", "path": pointer("spec", key), "value": [value]})
    else:
        ops.append({"op": "add", "path": pointer("spec", key, "-"), "value": value})


def plan_injection(pod: Mapping[str, Any], config: InjectorConfig, namespace_enabled: bool = False) -> Injection:
    """Decide what to do with ``pod`` (``metadata`` and ``spec`` of a Pod or a template).
    Raises ``ValidationError`` naming the annotation or field at fault when the pod opted
    in but cannot be injected."""
    metadata = pod.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ValidationError("metadata", "expected an object")
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise ValidationError("metadata.annotations", "expected a map of strings")
    if not wants_injection(annotations, namespace_enabled):
        return Injection(NOT_OPTED_IN)
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        raise ValidationError("spec", "expected the pod's spec (an object with containers)")
    containers, init_containers = _containers(spec, "containers"), _containers(spec, "initContainers")
    if not containers:
        raise ValidationError("spec.containers", "expected at least one container")
    names = {c.get("name") for c in containers + init_containers}
    if STATUS in annotations and CONTAINER_NAME in names:
        return Injection(ALREADY_INJECTED)
    reinjecting = STATUS in annotations  # the status survived but the container did not: inject again
    _check_conflicts(spec, containers, init_containers, reinjecting)
    settings = parse_settings(metadata, config.resources)
    labels = metadata.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise ValidationError("metadata.labels", "expected a map of strings")
    if labels.get(ROLE_LABEL, settings.role) != settings.role:
        raise ValidationError(ROLE_LABEL, f"the pod's label says {labels[ROLE_LABEL]!r} but sidemesh.io/shadow makes it "
                              f"{settings.role!r}; expected no {ROLE_LABEL} label (the injector sets it)")
    native = config.sidecar_style == "native" or spec.get("restartPolicy") in ("Never", "OnFailure")

    ops: list[dict] = []  # metadata exists here: the model's name came from it
    _add_entry(ops, metadata, ("metadata", "annotations"), STATUS, status_annotation(config, native))
    if ROLE_LABEL not in labels:
        _add_entry(ops, metadata, ("metadata", "labels"), ROLE_LABEL, settings.role)
    _append(ops, spec, "initContainers" if native else "containers", sidecar_container(settings, config, native))
    if not any(v.get("name") == TMP_VOLUME for v in _list(spec, "volumes")):
        _append(ops, spec, "volumes", tmp_volume())
    return Injection(INJECTED, tuple(ops), settings, native)


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    if not path.startswith("/"):
        raise ValueError(f"JSON Pointer {path!r}: expected it to start with '/'")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
    target = doc
    for token in tokens[:-1]:
        target = target[int(token)] if isinstance(target, list) else target[token]
    return target, tokens[-1]


def apply_patch(doc: Any, patch: tuple[dict, ...] | list[dict]) -> Any:
    """Apply the ``add`` operations ``plan_injection`` makes to a copy of ``doc``."""
    result = copy.deepcopy(doc)
    for op in patch:
        if op.get("op") != "add":
            raise ValueError(f"op: expected 'add' (the only operation the injector makes), got {op.get('op')!r}")
        parent, token = _parent(result, op["path"])
        value = copy.deepcopy(op["value"])
        if isinstance(parent, list):
            parent.insert(len(parent) if token == "-" else int(token), value)
        else:
            parent[token] = value
    return result
