"""Run a rendered pod template's containers as local processes, as the kubelet would.

Each container's own command line from the manifest runs, translated only where a pod and
this machine differ: ``sidemesh`` and ``python`` are this interpreter, each declared
container port becomes a free loopback port (and ``0.0.0.0`` becomes ``127.0.0.1``), each
volume becomes a directory (Secrets and ConfigMaps filled with their data), the downward
API and ``$(VAR)`` references are resolved. Probes are then asked on the ports they name.
Manifests write flags as ``--name=value`` so that the values can be translated.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.control_plane.peers import free_port

__all__ = ["LocalContainer", "LocalPod", "free_port", "http_status", "running_pod", "expand"]

_FIELD = re.compile(r"^metadata\.(annotations|labels)\['([^']+)'\]$")
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def http_status(port: int, path: str, tls: ssl.SSLContext | None = None, server_hostname: str | None = None) -> int:
    """The status code of ``GET path`` on 127.0.0.1:port (over TLS when ``tls``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock = tls.wrap_socket(raw, server_hostname=server_hostname) if tls else raw
        try:
            host = server_hostname or "127.0.0.1"
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
        finally:
            if sock is not raw:
                sock.close()
    return int(head.split(b" ", 2)[1])


@dataclass(frozen=True)
class LocalContainer:
    name: str
    argv: list[str]
    env: dict[str, str]
    ports: dict[str, int]  # port name and containerPort (as a string) -> local port
    spec: dict

    def probe(self, kind: str) -> tuple[str, str, int]:
        """(scheme, path, local port) of the container's ``readinessProbe`` or ``livenessProbe``."""
        get = (self.spec.get(kind) or {}).get("httpGet")
        if not get:
            raise AssertionError(f"container {self.name}: no {kind}.httpGet")
        return get.get("scheme", "HTTP"), get["path"], self.ports[str(get["port"])]


class LocalPod:
    """A pod template's volumes under ``root`` and its containers' local command lines."""

    def __init__(self, template: dict, root: Path, secrets: dict[str, dict[str, str]],
                 configmaps: dict[str, dict[str, str]]) -> None:
        self.metadata = template.get("metadata") or {}
        self.spec = template["spec"]
        self.root = root
        self.volumes = {v["name"]: self._volume(v, secrets, configmaps) for v in self.spec.get("volumes") or []}

    def _volume(self, volume: dict, secrets: dict, configmaps: dict) -> Path:
        path = self.root / "volumes" / volume["name"]
        path.mkdir(parents=True)
        if "secret" in volume:
            data = secrets.get(volume["secret"]["secretName"])
            if data is None:
                raise AssertionError(f"volume {volume['name']}: the test has no Secret {volume['secret']['secretName']!r}")
        elif "configMap" in volume:
            data = configmaps.get(volume["configMap"]["name"])
            if data is None:
                raise AssertionError(f"volume {volume['name']}: no ConfigMap {volume['configMap']['name']!r} was rendered")
        elif set(volume) & {"emptyDir", "persistentVolumeClaim"}:
            data = {}
        else:
            raise AssertionError(f"volume {volume['name']}: a source this test cannot make locally: {sorted(volume)}")
        for key, text in data.items():
            (path / key).write_text(text)
        return path

    def init_containers(self) -> list[LocalContainer]:
        """Init containers that run to completion (native sidecars excluded)."""
        return [self.container(c) for c in self.spec.get("initContainers") or [] if c.get("restartPolicy") != "Always"]

    def containers(self) -> list[LocalContainer]:
        return [self.container(c) for c in self.spec["containers"]]

    def container(self, spec: dict) -> LocalContainer:
        ports: dict[str, int] = {}
        for port in spec.get("ports") or []:
            local = free_port()
            ports[str(port["containerPort"])] = local
            if port.get("name"):
                ports[port["name"]] = local
        mounts = sorted(((m["mountPath"], self.volumes[m["name"]]) for m in spec.get("volumeMounts") or []),
                        key=lambda m: -len(m[0]))

        def local(value: str) -> str:
            for mount, path in mounts:
                if value == mount or value.startswith(mount + "/"):
                    return str(path) + value[len(mount):]
            host, sep, port = value.rpartition(":")
            if sep and host == "0.0.0.0" and port in ports:
                return f"127.0.0.1:{ports[port]}"
            if value == "0.0.0.0":
                return "127.0.0.1"
            return str(ports.get(value, value))

        env = {item["name"]: local(self._env_value(item)) for item in spec.get("env") or []}
        command = [*(spec.get("command") or []), *(spec.get("args") or [])]
        if not command or command[0] not in ("sidemesh", "python"):
            raise AssertionError(f"container {spec['name']}: expected a `sidemesh ...` or `python ...` command, got {command}")
        prefix = [sys.executable, "-m", "sidemesh"] if command[0] == "sidemesh" else [sys.executable]
        argv = prefix + [self._arg(expand(arg, env), local) for arg in command[1:]]
        return LocalContainer(spec["name"], argv, env, ports, spec)

    @staticmethod
    def _arg(arg: str, local) -> str:
        if arg.startswith("--"):
            if "=" not in arg:
                raise AssertionError(f"flag {arg}: write flags as --name=value in manifests (this test translates the values)")
            name, _, value = arg.partition("=")
            return f"{name}={local(value)}"
        return local(arg)

    def _env_value(self, item: dict) -> str:
        if "value" in item:
            return item["value"]
        path = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
        match = _FIELD.match(path)
        if match:
            value = (self.metadata.get(match[1]) or {}).get(match[2])
            if value is None:
                raise AssertionError(f"env {item['name']}: the pod template has no {path}")
            return value
        if path == "status.podIP":
            return "127.0.0.1"
        raise AssertionError(f"env {item['name']}: a source this test cannot resolve: {item}")

    @contextmanager
    def running(self, container: LocalContainer) -> Iterator[subprocess.Popen]:
        """The container's process, stopped (SIGTERM, then SIGKILL) on the way out."""
        log = (self.root / f"{container.name}.log").open("w")
        process = subprocess.Popen(container.argv, env=_environ(container.env), stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()

    def log(self, container: LocalContainer) -> str:
        return (self.root / f"{container.name}.log").read_text()

    def run_to_completion(self, container: LocalContainer, timeout: float = 120) -> None:
        with self.running(container) as process:
            code = process.wait(timeout=timeout)
        if code != 0:
            raise AssertionError(f"init container {container.name} exited {code}:\n{self.log(container)}")

    def wait_ready(self, container: LocalContainer, process: subprocess.Popen, kind: str = "readinessProbe",
                   timeout: float = 60) -> None:
        """Ask the probe like the kubelet does (HTTPS unverified) until it answers 2xx."""
        scheme, path, port = container.probe(kind)
        tls = None
        if scheme == "HTTPS":
            tls = ssl.create_default_context()
            tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"container {container.name} exited {process.returncode} before its {kind} "
                                     f"passed:\n{self.log(container)}")
            try:
                status = http_status(port, path, tls)
            except OSError:
                status = None
            if status is not None and 200 <= status < 300:
                return
            if status in (404, 405):  # not starting up: the path is wrong
                raise AssertionError(f"container {container.name}: {kind} {scheme} {path} answers {status}")
            if time.monotonic() > deadline:
                raise AssertionError(f"container {container.name}: {kind} {scheme} {path} on {port} did not pass in "
                                     f"{timeout:.0f} s:\n{self.log(container)}")
            time.sleep(0.1)


@contextmanager
def running_pod(template: dict, root: Path, secrets: dict[str, dict[str, str]],
                configmaps: dict[str, dict[str, str]]) -> Iterator[tuple[LocalPod, dict[str, LocalContainer]]]:
    """The pod's init containers run to completion, then its containers run until the
    block ends; each has passed its readiness and then its liveness probe when it starts."""
    pod = LocalPod(template, root, secrets, configmaps)
    for init in pod.init_containers():
        pod.run_to_completion(init)
    with ExitStack() as stack:
        containers = {}
        for container in pod.containers():
            process = stack.enter_context(pod.running(container))
            pod.wait_ready(container, process, "readinessProbe")
            pod.wait_ready(container, process, "livenessProbe", timeout=5)
            containers[container.name] = container
        yield pod, containers


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables expand, ``$$`` is a ``$``."""
    return _VAR.sub(lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def _environ(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **env}
