"""The drift detector's ingestion and evaluation, with scipy on the raw rows beside it.

- **Profiling** (in this process, one core): ``InputSketch.update`` on 256-row blocks of 32
  FP32 features, the code the sidecar's tap and ``drift reference`` run: feature values per
  second.
- **Ingestion** (a real ``sidemesh drift`` process pinned to one CPU): a gRPC stats stream
  sends sidecar-sized reports (5,000 rows x 32 features, one report per 5 s of 1,000 req/s)
  as fast as they are acknowledged; the detector's CPU seconds (from /proc, all threads)
  give feature values ingested per CPU second. Windows are off (``--window-rows 0``) so
  this is merge cost alone; a second pass with 1,000-row windows adds the evaluation of
  every window (five per report). Two more passes send small reports, where the per-report
  cost (mostly the gRPC message and its acknowledgement) dominates: 300 rows, what a sidecar
  seeing 10 req/s sends (a window under 32,000 feature values is held for six 5 s
  intervals), and 50 rows, what it would send if it flushed every 5 s regardless.
- **Evaluation**: 10 models x 100 numeric features, 1,000-row windows against 20,000-row
  references: time to judge all ten windows from sketches (``drift.evaluate``: KS, PSI, JS,
  Wasserstein per feature, BH correction), next to ``scipy.stats.ks_2samp`` alone on the
  same raw rows (what a detector that kept raw rows would pay for KS only).

Targets: >= 5M feature values per second per core ingested; the evaluation figure is
reported (whylogs publishes about 0.3M rows/s for profiling, for context only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
from scipy import stats as sps

from bench.proxy_peers import cpu_seconds, spawn, wait_ready
from drift.evaluate import TestPolicy, evaluate
from drift.proto import stats_pb2 as pb
from drift.sketch import InputSketch
from tests.control_plane.peers import free_port

__all__ = ["main"]

FEATURES = 32
DETECTOR_CPU = 1


def profile(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    block = rng.normal(size=(256, FEATURES)).astype(np.float32)
    rates = []
    for _ in range(repeats):
        sketch = InputSketch("FP32")
        started = time.perf_counter()
        for _ in range(200):
            sketch.update(block)
        rates.append(200 * block.size / (time.perf_counter() - started))
    return {"values_per_s": statistics.median(rates), "us_per_row": 1e6 * FEATURES / statistics.median(rates)}


def _reports(count: int, rows: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    out = []
    for seq in range(1, count + 1):
        sketch = InputSketch.from_array(rng.normal(size=(rows, FEATURES)).astype(np.float32), "FP32")
        report = pb.StatsReport(source="bench", sequence=seq, start_unix=time.time(), end_unix=time.time())
        report.inputs.append(sketch.to_proto(f"m{seq % 4}", "1", "features"))
        out.append(report.SerializeToString())
    return out


def ingest(workdir: Path, reports: list[bytes], rows: int, window_rows: int, label: str) -> dict:
    port, stats_port = free_port(), free_port()
    proc = spawn(f"drift-{label}", [sys.executable, "-m", "sidemesh", "drift", "--port", str(port), "--stats-port",
                                    str(stats_port), "--state", str(workdir / f"{label}.db"), "--window-rows",
                                    str(window_rows), "--window-seconds", "0" if window_rows else "3600"],
                 workdir, cpu=DETECTOR_CPU)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}/healthz/ready")
        with grpc.insecure_channel(f"127.0.0.1:{stats_port}",
                                   options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
            call = channel.stream_stream("/sidemesh.drift.v1.StatsService/Report", request_serializer=lambda b: b,
                                         response_deserializer=pb.ReportAck.FromString)
            # Warm up on the first 10, then time the rest.
            warm, timed = reports[:10], reports[10:]
            acks = list(call(iter(warm)))
            assert all(not a.error for a in acks), acks[0].error
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            acks = list(call(iter(timed)))
            if window_rows:  # count the evaluation of every window closed, too
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/windows/close?wait=true", method="POST")
                urllib.request.urlopen(request, timeout=120).close()
            wall, cpu = time.perf_counter() - wall0, cpu_seconds(proc.pid) - cpu0
            assert len(acks) == len(timed) and all(not a.error for a in acks)
        values = len(timed) * rows * FEATURES
        return {"reports": len(timed), "values": values, "wall_s": wall, "cpu_s": cpu,
                "values_per_cpu_s": values / cpu if cpu else float("inf")}
    finally:
        proc.stop()


def evaluation(repeats: int) -> dict:
    rng = np.random.default_rng(2)
    models, features = 10, 100
    refs_raw = [rng.normal(size=(20_000, features)) for _ in range(models)]
    wins_raw = [rng.normal(0.05, 1.0, size=(1000, features)) for _ in range(models)]
    refs = [{"x": InputSketch.from_array(r, "FP64")} for r in refs_raw]
    wins = [{"x": InputSketch.from_array(w, "FP64")} for w in wins_raw]
    policy = TestPolicy()
    ours, scipy_ks = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(models):
            evaluate(f"m{i}", "1", refs[i], wins[i], policy)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(models):
            for j in range(features):
                sps.ks_2samp(refs_raw[i][:, j], wins_raw[i][:, j])
        scipy_ks.append(time.perf_counter() - started)
    return {"models": models, "features": features, "sidemesh_s": statistics.median(ours),
            "sidemesh_p99_s": float(np.percentile(ours, 99)), "scipy_ks_raw_s": statistics.median(scipy_ks),
            "ratio_to_scipy": statistics.median(ours) / statistics.median(scipy_ks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drift_detector_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=110, help="reports sent per ingestion pass (default 110)")
    parser.add_argument("--rows", type=int, default=5000, help="rows per report (default 5000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results: dict = {"cpus": os.cpu_count()}
    results["profile"] = profile(args.repeats)
    print(f"profiling: {results['profile']['values_per_s'] / 1e6:.1f}M feature values/s "
          f"({results['profile']['us_per_row']:.2f} us per 32-feature row)", flush=True)
    big, held, small = _reports(args.reports, args.rows), _reports(args.reports * 2, 300), _reports(args.reports * 4, 50)
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        for label, reports, rows, window_rows in (("merge-only", big, args.rows, 0),
                                                  ("with-1000-row-windows", big, args.rows, 1000),
                                                  ("300-row-reports", held, 300, 0),
                                                  ("50-row-reports", small, 50, 0)):
            r = results[f"ingest_{label}"] = ingest(Path(tmp), reports, rows, window_rows, label)
            print(f"ingestion ({label}, {rows}-row reports): {r['values_per_cpu_s'] / 1e6:.1f}M feature values per CPU second "
                  f"({r['values'] / 1e6:.1f}M values in {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU; "
                  f"target >= 5M)", flush=True)
    results["evaluation"] = e = evaluation(args.repeats)
    print(f"evaluation, {e['models']} models x {e['features']} features: {e['sidemesh_s'] * 1e3:.0f} ms "
          f"(p99 {e['sidemesh_p99_s'] * 1e3:.0f} ms) for all four numeric tests + BH; scipy ks_2samp alone on the "
          f"raw rows: {e['scipy_ks_raw_s'] * 1e3:.0f} ms (ratio {e['ratio_to_scipy']:.2f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
