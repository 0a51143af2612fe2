"""Closed-loop load generator: N concurrent single-row callers, bounded in requests and time.

Runs in its own process (``python -m bench.loadgen ...``) so its CPU use does not share the
server's GIL; it prints one JSON line: rows/s, p50, p99 (ms) and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np

__all__ = ["main"]


def _rest_body(binary: bool, row: np.ndarray) -> tuple[bytes, dict]:
    if not binary:
        doc = {"inputs": [{"name": ("features" if row.size == 8 else "x"), "shape": [1, row.size], "datatype": "FP32", "data": row.tolist()}]}
        return json.dumps(doc).encode(), {"Content-Type": "application/json"}
    doc = {
        "inputs": [{"name": ("features" if row.size == 8 else "x"), "shape": [1, row.size], "datatype": "FP32", "parameters": {"binary_data_size": row.nbytes}}],
        "outputs": [{"name": ("label" if row.size == 8 else "y"), "parameters": {"binary_data": True}}],
    }
    head = json.dumps(doc).encode()
    return head + row.tobytes(), {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


async def _drive(call, concurrency: int, requests: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.monotonic() + seconds

    async def worker():
        nonlocal errors, issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            started = time.perf_counter()
            ok = await call()
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
        "rows_per_s": round((len(latencies) - errors) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


async def _rest(url: str, model: str, binary: bool, width: int, concurrency: int, requests: int, seconds: float, warmup: int) -> dict:
    import aiohttp

    body, headers = _rest_body(binary, np.random.default_rng(0).standard_normal(width).astype(np.float32))
    target = f"http://{url}/v2/models/{model}/infer"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def call() -> bool:
            async with session.post(target, data=body, headers=headers) as response:
                await response.read()
                return response.status == 200

        await _drive(call, concurrency, warmup, 60)
        return await _drive(call, concurrency, requests, seconds)


async def _grpc(url: str, model: str, width: int, concurrency: int, requests: int, seconds: float, warmup: int) -> dict:
    import grpc

    from model_server.proto import grpc_service_pb2 as pb
    from model_server.proto import grpc_service_pb2_grpc as pb_grpc

    row = np.random.default_rng(0).standard_normal(width).astype(np.float32)
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name=("features" if width == 8 else "x"), datatype="FP32", shape=[1, width])
    message.raw_input_contents.append(row.tobytes())
    async with grpc.aio.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def call() -> bool:
            try:
                await stub.ModelInfer(message)
                return True
            except grpc.aio.AioRpcError:
                return False

        await _drive(call, concurrency, warmup, 60)
        return await _drive(call, concurrency, requests, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen")
    p.add_argument("--url", required=True, help="HOST:PORT (REST port for rest-*, gRPC port for grpc)")
    p.add_argument("--protocol", choices=["rest-json", "rest-binary", "grpc"], required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=int, default=256)
    a = p.parse_args(argv)
    if a.protocol == "grpc":
        coro = _grpc(a.url, a.model, a.width, a.concurrency, a.requests, a.seconds, a.warmup)
    else:
        coro = _rest(a.url, a.model, a.protocol == "rest-binary", a.width, a.concurrency, a.requests, a.seconds, a.warmup)
    import uvloop

    result = uvloop.run(coro)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
