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
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import native_load
from bench.openloop import open_loop
from bench.proxy_peers import (
    INFER, LOAD_CPU, NGINX, PROXY_CPU, Proc, backend_server, check_answers, cpu_busy_seconds, cpu_seconds, memory_mib,
    nginx_proxy_server, start_envoy, start_nginx, start_sidecar,
)

__all__ = ["main"]

PATHS = ("direct", "sidecar", "envoy", "nginx")
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
