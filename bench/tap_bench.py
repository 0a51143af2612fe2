"""What the sidecar's statistics tap costs: per request in isolation, and as a share of the
sidecar's CPU at 1,000 req/s.

- **Per request** (this process): ``StatsTap.offer`` on the request path, and the worker's
  decode + sketch update per request, for a 32-feature FP32 V2 JSON body, in batches as the
  worker sees them under load (128 bodies) and one at a time (a trickle).
- **Share of sidecar CPU**: two sidecars in front of one nginx backend (``bench.proxy_peers``),
  both pinned to CPU 1 and loaded at the same time, so that other tenants of a shared
  machine weigh on both alike: one plain, one with ``--drift`` streaming to a real
  ``sidemesh drift`` (on CPU 0). Each gets its own 1,000 req/s open loop of the 32-feature
  body for 10 s after 1 s of warm-up; the sidecar's CPU seconds per 1,000 requests (/proc)
  give the tap's share, (with - without) / without, per round. The tapped sidecar's own
  counters say how many requests its statistics took and the worker's CPU per request.
  Target: <= 5%. The ratio is what is stable on a shared machine; absolute figures move.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

from bench.openloop import open_loop
from bench.proxy_peers import PROXY_CPU, backend_server, cpu_seconds, spawn, start_nginx, wait_ready
from bench.sidecar_bench import response_body
from sidecar.instruments import StatsInstruments
from sidecar.metrics import MetricSet
from sidecar.router import Router
from sidecar.table import static_table
from sidecar.tap import StatsTap, TapConfig
from tests.control_plane.peers import free_port

__all__ = ["main"]

FEATURES = 32
INFER = "/v2/models/m/infer"


def body_of(rng: np.random.Generator) -> bytes:
    row = rng.normal(size=(1, FEATURES)).astype(np.float32)
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, FEATURES],
                                   "data": [round(float(v), 6) for v in row.ravel()]}]}).encode()


def per_request(repeats: int) -> dict:
    router = Router("m", "1")
    router.table = static_table("m", "1")
    rng = np.random.default_rng(0)
    bodies = [body_of(rng) for _ in range(1024)]
    headers = [(b"content-type", b"application/json")]
    config = TapConfig(cpu_budget=1.0, max_pending=1 << 20, max_pending_bytes=1 << 30)
    tap = StatsTap(config, router, StatsInstruments(MetricSet()), None, rand=random.Random(1).random)
    offer = min(timeit.repeat(lambda: tap.offer(bodies[0], headers), number=10_000, repeat=repeats)) / 10_000
    tap.process()  # drain what timeit queued
    tap.take()
    batched, single = [], []
    for _ in range(repeats):
        for body in bodies:
            tap.offer(body, headers)
        started = time.perf_counter()
        while tap.pending():
            tap.process(tap.config.batch)
        batched.append((time.perf_counter() - started) / len(bodies))
        started = time.perf_counter()
        for body in bodies[:200]:
            tap.offer(body, headers)
            tap.process(1)
        single.append((time.perf_counter() - started) / 200)
    return {"offer_us": offer * 1e6, "worker_batched_us": statistics.median(batched) * 1e6,
            "worker_single_us": statistics.median(single) * 1e6}


def start_sidecar(workdir: Path, backend: int, name: str, drift: str | None, budget: float | None = None) -> tuple:
    port, admin = free_port(), free_port()
    cmd = [sys.executable, "-m", "sidemesh", "sidecar", "--model", "m", "--version", "1", "--upstream",
           f"http://127.0.0.1:{backend}", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"]
    if drift:
        cmd += ["--drift", drift]
        if budget is not None:
            cmd += ["--stats-cpu-budget", str(budget)]
    proc = spawn(name, cmd, workdir, PROXY_CPU)
    wait_ready(proc, f"http://127.0.0.1:{admin}/healthz/ready")
    return proc, port, admin


def sidecar_share(args, workdir: Path) -> dict:
    import uvloop

    procs = []
    try:
        backend, backend_port = start_nginx("backend", workdir, lambda p: backend_server(p, response_body()), None)
        procs.append(backend)
        drift_port, stats_port = free_port(), free_port()
        detector = spawn("drift", [sys.executable, "-m", "sidemesh", "drift", "--port", str(drift_port), "--stats-port",
                                   str(stats_port), "--state", str(workdir / "drift.db")], workdir, 0)
        procs.append(detector)
        wait_ready(detector, f"http://127.0.0.1:{drift_port}/healthz/ready")
        plain = start_sidecar(workdir, backend_port, "plain", None)
        tapped = start_sidecar(workdir, backend_port, "tapped", f"127.0.0.1:{stats_port}", args.stats_cpu_budget)
        procs += [plain[0], tapped[0]]
        body = body_of(np.random.default_rng(2))
        rounds: dict[str, list] = {"plain": [], "tapped": []}
        sides = (("plain", plain), ("tapped", tapped))
        for rep in range(args.repeats):
            # Both at once, each with its own 1,000 req/s: whatever else runs on the machine
            # meanwhile weighs on both alike, so each round is a fair pair.
            marks: dict = {}

            def load(label: str, proc, port: int):
                request = (f"POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
                return open_loop(port, request, args.rate, 1.0, args.seconds, 4,
                                 lambda: marks.__setitem__(label, cpu_seconds(proc.pid)))

            async def both():
                return await asyncio.gather(*(load(label, proc, port) for label, (proc, port, _) in sides))

            results = uvloop.run(both())
            for (label, (proc, _, _)), result in zip(sides, results):
                cpu = cpu_seconds(proc.pid) - marks[label]
                rounds[label].append({"vcpu_per_1k": cpu / result["requests"] * 1000, "errors": result["errors"],
                                      "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"]})
                print(f"round {rep + 1} {label:6s} vCPU/1k {rounds[label][-1]['vcpu_per_1k']:.3f}  p50 "
                      f"{result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.3f} ms  errors {result['errors']}", flush=True)
        received = json.loads(_get(f"http://127.0.0.1:{drift_port}/v1/windows"))
        tapped_share = _tapped_share(_get(f"http://127.0.0.1:{tapped[2]}/metrics").decode())
        plain_v = statistics.median(r["vcpu_per_1k"] for r in rounds["plain"])
        tapped_v = statistics.median(r["vcpu_per_1k"] for r in rounds["tapped"])
        shares = [(t["vcpu_per_1k"] - p["vcpu_per_1k"]) / p["vcpu_per_1k"] for p, t in zip(rounds["plain"], rounds["tapped"])]
        return {"rounds": rounds, "plain_vcpu_per_1k": plain_v, "tapped_vcpu_per_1k": tapped_v,
                "plain_p99_ms": statistics.median(r["p99_ms"] for r in rounds["plain"]),
                "tapped_p99_ms": statistics.median(r["p99_ms"] for r in rounds["tapped"]),
                "tap_share_median": statistics.median(shares), "tap_share_rounds": shares,
                "detector_windows": received.get("windows", []), "tapped": tapped_share}
    finally:
        for proc in reversed(procs):
            proc.stop()


def _tapped_share(metrics: str) -> dict:
    """How many requests made it into the statistics, and why the others did not: a tap that
    stays cheap by skipping most requests would not be worth its figure."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {"sampled": 0.0}
    seconds = 0.0
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "sidemesh_stats_sampled_total":
                counts["sampled"] += sample.value
            elif sample.name == "sidemesh_stats_skipped_total":
                counts[sample.labels["reason"]] = counts.get(sample.labels["reason"], 0.0) + sample.value
            elif sample.name == "sidemesh_stats_tap_seconds_total":
                seconds = sample.value
    total = sum(counts.values())
    # The worker's own CPU accounting, per request it took: steadier than the difference of
    # two processes' CPU on a shared machine.
    return {"counts": counts, "sampled_share": counts["sampled"] / total if total else 0.0,
            "worker_us_per_sampled": seconds / counts["sampled"] * 1e6 if counts["sampled"] else 0.0}


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tap_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--stats-cpu-budget", type=float, help="the tapped sidecar's budget (default: its own default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = {"per_request": per_request(5)}
    p = results["per_request"]
    print(f"tap per request (32 FP32 features, V2 JSON): offer {p['offer_us']:.2f} us on the request path; worker "
          f"{p['worker_batched_us']:.1f} us batched, {p['worker_single_us']:.1f} us one at a time", flush=True)
    with tempfile.TemporaryDirectory(prefix="tap-bench-") as tmp:
        s = results["share"] = sidecar_share(args, Path(tmp))
    print(f"sidecar CPU at {args.rate:g} req/s: {s['plain_vcpu_per_1k']:.3f} vCPU/1k without the tap, "
          f"{s['tapped_vcpu_per_1k']:.3f} with it: the tap adds {s['tap_share_median'] * 100:.1f}% "
          f"(rounds: {', '.join(f'{x * 100:.1f}%' for x in s['tap_share_rounds'])}; target <= 5%); "
          f"{s['tapped']['sampled_share'] * 100:.1f}% of requests made it into the statistics "
          f"({', '.join(f'{k} {v:g}' for k, v in s['tapped']['counts'].items())}); the worker's own CPU: "
          f"{s['tapped']['worker_us_per_sampled']:.1f} us per request taken, "
          f"{s['tapped']['worker_us_per_sampled'] * s['tapped']['sampled_share'] / (s['plain_vcpu_per_1k'] * 1000) * 100:.1f}% "
          f"of the plain sidecar's CPU; p99 median {s['plain_p99_ms']:.2f} ms plain, {s['tapped_p99_ms']:.2f} ms tapped", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
