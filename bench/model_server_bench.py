"""Model server throughput against raw ONNX Runtime, on the compute-heavy example.

- Raw ONNX Runtime in this process (default session options, all cores): rows/s at batch
  sizes 1..256; the best is the limit of these cores.
- The server (a subprocess) under concurrent single-row requests, batching on and off, over
  REST JSON, REST binary and gRPC. Load comes from wrk and h2load when installed (native,
  so the load's own CPU barely competes on a small machine), else from ``bench.loadgen``.

Shared machines are noisy, so raw ONNX Runtime is measured again right before each round
of server runs and each ratio is taken within its round; the report gives medians over
``--repeats`` rounds. Targets: batched server >= 0.80 of raw best, and >= 4x unbatched.
Every load run is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench import native_load
from bench.loadgen import _rest_body
from model_server.examples import HEAVY_INPUTS, HEAVY_WIDTH, heavy_model
from tests.servers import ModelServerProcess, write_config

__all__ = ["main"]

PROTOCOLS = ("rest-json", "rest-binary", "grpc")
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


def build_repo(root: Path, width: int) -> Path:
    model = root / "heavy_batched" / "1" / "model.onnx"
    stamp = root / "width"
    if not model.exists() or not stamp.exists() or stamp.read_text() != str(width):
        blob = heavy_model(width).SerializeToString()
        for name in ("heavy_batched", "heavy_unbatched"):
            (root / name / "1").mkdir(parents=True, exist_ok=True)
            (root / name / "1" / "model.onnx").write_bytes(blob)
        stamp.write_text(str(width))
    write_config(root, "heavy_batched", max_batch_size=128, max_queue_delay_us=2000, max_queue_size=4096)
    write_config(root, "heavy_unbatched", max_batch_size=0, max_queue_size=4096)
    return root


class RawOnnxRuntime:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.x = np.random.default_rng(0).standard_normal((256, HEAVY_INPUTS)).astype(np.float32)

    def rows_per_s(self, batch: int, seconds: float) -> float:
        feed = {"x": self.x[:batch]}
        self.session.run(None, feed)
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self.session.run(None, feed)
            n += 1
        return n * batch / (time.perf_counter() - started)


def _grpc_message(model: str) -> bytes:
    from model_server.proto import grpc_service_pb2 as pb

    row = np.random.default_rng(0).standard_normal(HEAVY_INPUTS).astype(np.float32)
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="x", datatype="FP32", shape=[1, HEAVY_INPUTS])
    message.raw_input_contents.append(row.tobytes())
    return message.SerializeToString()


def wait_idle(server: ModelServerProcess, timeout: float = 120.0) -> None:
    """Until no request is queued or running (abandoned warm-up requests still run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://{server.http}/metrics", timeout=30).read().decode()
        if not any(line.startswith("sidemesh_model_inflight_requests") and not line.endswith(" 0.0") for line in text.splitlines()):
            return
        time.sleep(0.1)
    raise TimeoutError("the server did not go idle")


def run_load(server: ModelServerProcess, protocol: str, model: str, concurrency: int, args) -> dict:
    if native_load.available():
        if protocol == "grpc":
            return native_load.h2load(server.grpc, GRPC_PATH, native_load.grpc_frame(_grpc_message(model)), concurrency, args.seconds)
        row = np.random.default_rng(0).standard_normal(HEAVY_INPUTS).astype(np.float32)
        body, headers = _rest_body(protocol == "rest-binary", row)
        return native_load.wrk(f"http://{server.http}/v2/models/{model}/infer", body, headers, concurrency, args.seconds,
                               wait_idle=lambda: wait_idle(server))
    url = server.grpc if protocol == "grpc" else server.http
    cmd = [sys.executable, "-m", "bench.loadgen", "--url", url, "--protocol", protocol, "--model", model,
           "--width", str(HEAVY_INPUTS), "--concurrency", str(concurrency), "--seconds", str(args.seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "client": "bench.loadgen"}


def _line(label: str, r: dict) -> str:
    return (f"{label:24s} {r['rows_per_s']:8.0f} rows/s  p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  "
            f"errors {r['errors']}  ({r['requests']} requests, {r['client']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.model_server_bench", description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path(".bench/model_server"))
    p.add_argument("--concurrency", type=int, default=256, help="concurrent single-row callers, batching on")
    p.add_argument("--unbatched-concurrency", type=int, default=16,
                   help="callers with batching off (more only lengthens the queue: one row runs at a time)")
    p.add_argument("--seconds", type=float, default=6.0, help="length of each load run")
    p.add_argument("--repeats", type=int, default=3, help="rounds of raw + batched runs")
    p.add_argument("--width", type=int, default=HEAVY_WIDTH, help="hidden width of the heavy MLP (default: the example's)")
    args = p.parse_args(argv)

    repo = build_repo(args.dir, args.width)
    raw = RawOnnxRuntime(repo / "heavy_batched" / "1" / "model.onnx")
    client = "wrk + h2load" if native_load.available() else "bench.loadgen (Python; install wrk and nghttp2-client for native load)"
    print(f"# {platform.machine()}, {os.cpu_count()} cores, onnxruntime on CPU, heavy MLP 512-{args.width}x3-16, "
          f"{args.concurrency} concurrent single-row callers, {args.seconds:.0f} s per run, load from {client}", flush=True)
    by_batch = {b: raw.rows_per_s(b, 1.5) for b in (1, 8, 32, 64, 128, 256)}
    print("raw ONNX Runtime rows/s by batch: " + ", ".join(f"{b}: {r:.0f}" for b, r in by_batch.items()), flush=True)

    rounds: list[dict] = []
    unbatched: dict[str, dict] = {}
    with ModelServerProcess(repo) as server:
        for rep in range(args.repeats):
            best = max(raw.rows_per_s(b, 1.5) for b in (64, 128, 256))
            print(f"round {rep + 1}: raw best {best:.0f} rows/s", flush=True)
            entry = {"raw_best": best}
            for protocol in PROTOCOLS:
                r = run_load(server, protocol, "heavy_batched", args.concurrency, args)
                wait_idle(server)
                entry[protocol] = r
                print("  " + _line(f"{protocol} batched", r) + f"  -> {r['rows_per_s'] / best:.2f} of raw", flush=True)
            rounds.append(entry)
        for protocol in PROTOCOLS:
            unbatched[protocol] = run_load(server, protocol, "heavy_unbatched", args.unbatched_concurrency, args)
            wait_idle(server)
            print("  " + _line(f"{protocol} unbatched", unbatched[protocol]), flush=True)

    print("\nmedians over rounds")
    print(f"{'protocol':12s} {'rows/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'of raw':>7s} {'vs unbatched':>13s}")
    summary = {}
    for protocol in PROTOCOLS:
        rates = [r[protocol]["rows_per_s"] for r in rounds]
        ratios = [r[protocol]["rows_per_s"] / r["raw_best"] for r in rounds]
        row = {
            "rows_per_s": statistics.median(rates),
            "p50_ms": statistics.median(r[protocol]["p50_ms"] for r in rounds),
            "p99_ms": statistics.median(r[protocol]["p99_ms"] for r in rounds),
            "of_raw": statistics.median(ratios),
            "vs_unbatched": statistics.median(rates) / unbatched[protocol]["rows_per_s"],
        }
        summary[protocol] = row
        print(f"{protocol:12s} {row['rows_per_s']:8.0f} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} {row['of_raw']:7.2f} {row['vs_unbatched']:12.1f}x")
    args.dir.mkdir(parents=True, exist_ok=True)
    (args.dir / "results.json").write_text(json.dumps(
        {"raw_by_batch": by_batch, "rounds": rounds, "unbatched": unbatched, "summary": summary}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
