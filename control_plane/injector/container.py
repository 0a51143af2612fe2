"""The sidecar container, its scratch volume and the status annotation, built from one
pod's settings and the injector's configuration.

The sidecar listens on all of the pod's addresses (a Service targets its named ports) and
reaches the app on loopback; it advertises the pod IP, which the downward API puts in
``POD_IP`` and Kubernetes expands in ``$(POD_IP)``. It runs non-root, with a read-only
root filesystem, no capabilities and the runtime's default seccomp profile; ``/tmp`` is an
emptyDir in memory, the only place it may write.
"""

from __future__ import annotations

import json

from .annotations import SIDECAR_PORTS, PodSettings
from .config import InjectorConfig, injector_version

__all__ = ["CONTAINER_NAME", "TMP_VOLUME", "sidecar_args", "sidecar_container", "tmp_volume", "status_annotation"]

CONTAINER_NAME = "sidemesh-proxy"
TMP_VOLUME = "sidemesh-tmp"
_HTTP, _GRPC, _ADMIN = SIDECAR_PORTS["sidemesh-http"], SIDECAR_PORTS["sidemesh-grpc"], SIDECAR_PORTS["sidemesh-admin"]


def sidecar_args(settings: PodSettings, config: InjectorConfig) -> list[str]:
    """``sidemesh sidecar`` arguments for this pod."""
    args = ["--model", settings.model, "--version", settings.version,
            "--upstream", f"http://127.0.0.1:{settings.port}", "--listen", f"0.0.0.0:{_HTTP}",
            "--advertise", f"$(POD_IP):{_HTTP}", "--admin", f"0.0.0.0:{_ADMIN}"]
    if settings.grpc_port is not None:
        args += ["--upstream-grpc", f"127.0.0.1:{settings.grpc_port}", "--grpc-listen", f"0.0.0.0:{_GRPC}",
                 "--advertise-grpc", f"$(POD_IP):{_GRPC}"]
    if config.control_plane:
        args += ["--control-plane", config.control_plane]
    if config.drift:
        args += ["--drift", config.drift]
        if settings.stats_sample is not None:
            args += ["--stats-sample", repr(settings.stats_sample)]
    return args


def _probe(path: str, period_s: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "sidemesh-admin"}, "periodSeconds": period_s,
            "timeoutSeconds": 1, "failureThreshold": failures}


def sidecar_container(settings: PodSettings, config: InjectorConfig, native: bool) -> dict:
    """The container to add. ``native``: it goes to ``initContainers`` with
    ``restartPolicy: Always`` (Kubernetes 1.29+), so it starts before the app, stops after
    it and does not keep a Job's pod from completing."""
    ports = [{"name": "sidemesh-http", "containerPort": _HTTP, "protocol": "TCP"}]
    if settings.grpc_port is not None:
        ports.append({"name": "sidemesh-grpc", "containerPort": _GRPC, "protocol": "TCP"})
    ports.append({"name": "sidemesh-admin", "containerPort": _ADMIN, "protocol": "TCP"})
    container = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "command": ["sidemesh", "sidecar"],
        "args": sidecar_args(settings, config),
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": ports,
        "readinessProbe": _probe("/healthz/ready", 2, 3),
        "livenessProbe": _probe("/healthz/live", 10, 3),
        "resources": settings.resources.as_dict(),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_user,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }
    if native:
        container["restartPolicy"] = "Always"
    return container


def tmp_volume() -> dict:
    return {"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}


def status_annotation(config: InjectorConfig, native: bool) -> str:
    """What was injected, as compact JSON: with the container, it marks the pod as done."""
    return json.dumps({"container": CONTAINER_NAME, "image": config.image, "injector": injector_version(),
                       "native": native, "volumes": [TMP_VOLUME]}, sort_keys=True, separators=(",", ":"))
