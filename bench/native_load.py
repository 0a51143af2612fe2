"""Native load generators, so the load's own CPU does not crowd the server on a small box:
wrk (HTTP/1.1, V2 REST) and h2load (HTTP/2 with gRPC framing, V2 gRPC), both from Debian.

Same shape of load as ``bench.loadgen``: a fixed number of concurrent callers, each with one
request in flight, for a fixed time. Latency percentiles come from wrk's histogram and
from h2load's per-request log.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["available", "wrk", "h2load", "grpc_frame"]


def available() -> bool:
    return shutil.which("wrk") is not None and shutil.which("h2load") is not None


_LUA = """
wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float, warmup: float = 1.0,
        wait_idle: Callable[[], None] = lambda: None) -> dict:
    """``wait_idle`` runs between warm-up and measurement: wrk abandons its in-flight
    requests when a run ends, and the server finishes them before it is idle again."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body").write_bytes(body)
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script = Path(tmp) / "post.lua"
        script.write_text(_LUA.format(body=Path(tmp) / "body", headers=lines))
        base = ["wrk", "-t1", f"-c{concurrency}", "--timeout", "30s", "-s", str(script)]
        subprocess.run([*base, f"-d{max(1, int(warmup))}s", url], capture_output=True, check=True, timeout=warmup + 60)
        wait_idle()
        out = subprocess.run([*base, f"-d{int(seconds)}s", url], capture_output=True, text=True, check=True, timeout=seconds + 60)
    fields = next(line for line in out.stdout.splitlines() if line.startswith("RESULT")).split()[1:]
    requests, errors, duration_us, p50_us, p99_us = map(int, fields)
    return {
        "requests": requests, "errors": errors, "seconds": round(duration_us / 1e6, 3),
        "rows_per_s": round((requests - errors) / (duration_us / 1e6), 1),
        "p50_ms": round(p50_us / 1000, 2), "p99_ms": round(p99_us / 1000, 2), "client": "wrk",
    }


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: no compression flag, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def h2load(url: str, path: str, frame: bytes, concurrency: int, seconds: float, warmup: float = 1.0) -> dict:
    connections = min(8, concurrency)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body").write_bytes(frame)
        log = Path(tmp) / "log.tsv"
        cmd = [
            "h2load", "-t1", f"-c{connections}", f"-m{concurrency // connections}", "-d", str(Path(tmp) / "body"),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"-D{int(seconds)}", f"--warm-up-time={max(1, int(warmup))}", "--log-file", str(log), f"http://{url}{path}",
        ]
        subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + warmup + 60)
        rows = np.loadtxt(log, dtype=np.int64, ndmin=2)
    start_us, status, duration_us = rows[:, 0], rows[:, 1], rows[:, 2]
    elapsed = (start_us.max() + duration_us[start_us.argmax()] - start_us.min()) / 1e6
    ok = int((status == 200).sum())
    return {
        "requests": len(rows), "errors": len(rows) - ok, "seconds": round(float(elapsed), 3),
        "rows_per_s": round(ok / elapsed, 1),
        "p50_ms": round(float(np.percentile(duration_us, 50)) / 1000, 2),
        "p99_ms": round(float(np.percentile(duration_us, 99)) / 1000, 2), "client": "h2load",
    }
