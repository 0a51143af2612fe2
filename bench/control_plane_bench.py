"""Control plane fan-out: N simulated ADS clients (real gRPC streams, each registering
as a sidecar and ACKing every response) on one control plane process.

Measures the time from ``sidemesh split`` until every client has ACKed the new route
configuration (client-side p50/p99 of each ACK, and until the control plane itself sees
all of them ACKed), and the control plane's resident memory per connected client: both
the growth over the idle process divided by N (which also charges grpc's one-time
start-up of its pools to the clients) and the slope between N/2 and N connected clients
(what one more sidecar costs).
Targets: p99 <= 1 s at 500 clients; <= 50 KiB per client. Bounded: each wait times out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from tests.control_plane.peers import ControlPlaneProcess

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.config.core.v3 import Node
    from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
    from envoy_data_plane.google.protobuf import Struct

from control_plane.resources import TYPE_ORDER, ROUTE

__all__ = ["main"]

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class SimClient:
    """One sidecar's ADS stream: subscribes to every type, ACKs every response, and notes
    when each route-configuration version arrived."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.route_versions: dict[str, float] = {}
        self.synced = asyncio.Event()

    async def run(self, address: str, stop: asyncio.Event) -> None:
        import grpc

        node = Node(id=f"sim-{self.index}", metadata=Struct.from_dict({
            "model": "tabular", "version": "v1" if self.index % 2 else "v2",
            "inbound": f"127.0.{1 + self.index // 250}.{1 + self.index % 250}:15001",
        }))
        outbox: asyncio.Queue = asyncio.Queue()
        for i, type_url in enumerate(TYPE_ORDER):
            outbox.put_nowait(DiscoveryRequest(node=node if i == 0 else None, type_url=type_url))

        async def requests():
            while True:
                yield await outbox.get()

        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.stream_stream(METHOD, request_serializer=bytes, response_deserializer=DiscoveryResponse.FromString)(requests())
            reader = asyncio.ensure_future(self._read(call, outbox))
            await stop.wait()
            call.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, call, outbox: asyncio.Queue) -> None:
        seen: set[str] = set()
        async for response in call:
            now = time.monotonic()
            outbox.put_nowait(DiscoveryRequest(type_url=response.type_url, version_info=response.version_info,
                                               response_nonce=response.nonce))
            if response.type_url == ROUTE:
                self.route_versions.setdefault(response.version_info, now)
            seen.add(response.type_url)
            if len(seen) == len(TYPE_ORDER):
                self.synced.set()


async def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="cp-bench-"))
    cp = ControlPlaneProcess(workdir / "cp.db", extra_env=dict(e.split("=", 1) for e in args.env)).start()
    try:
        status, body = cp.api("PUT", "/v1/routes/tabular", {"backends": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]})
        assert status == 200, body
        idle_kib = rss_kib(cp.popen.pid)
        stop = asyncio.Event()
        clients = [SimClient(i) for i in range(args.clients)]
        half = args.clients // 2
        started = time.monotonic()
        tasks = []
        rss: list[int] = []
        for group in (clients[:half], clients[half:]):  # the slope between halves is the marginal cost
            tasks += [asyncio.ensure_future(c.run(f"127.0.0.1:{cp.xds_port}", stop)) for c in group]
            await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in group)), args.timeout)
            await asyncio.sleep(1.0)  # let the last debounced endpoint pushes settle before measuring
            rss.append(rss_kib(cp.popen.pid))
        connect_s = time.monotonic() - started - 2.0
        half_kib, loaded_kib = rss
        before = {c.index: set(c.route_versions) for c in clients}

        split_at = time.monotonic()
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "sidemesh", "split", "tabular", "v1=50", "v2=50", "--control-plane", cp.url],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        new_version = cp.api("GET", "/v1/routes/tabular")[1]["version"]

        def arrived(c: SimClient) -> float | None:
            fresh = [t for v, t in c.route_versions.items() if v not in before[c.index]]
            return min(fresh) if fresh else None

        deadline = time.monotonic() + args.timeout
        while any(arrived(c) is None for c in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("not every client received the new route configuration")
            await asyncio.sleep(0.01)
        latencies = sorted(arrived(c) - split_at for c in clients)
        while True:  # the control plane's own view: every node ACKed the new state
            nodes = await asyncio.to_thread(cp.nodes)
            if sum(1 for n in nodes if (n["acked_state_version"] or 0) >= new_version) >= args.clients:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the control plane never saw every ACK")
            await asyncio.sleep(0.02)
        all_acked_s = time.monotonic() - split_at
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {
            "clients": args.clients, "connect_and_sync_s": round(connect_s, 2),
            "push_p50_ms": round(1000 * statistics.median(latencies), 1),
            "push_p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
            "push_max_ms": round(1000 * latencies[-1], 1),
            "all_acked_on_control_plane_ms": round(1000 * all_acked_s, 1),
            "rss_idle_mib": round(idle_kib / 1024, 1), "rss_loaded_mib": round(loaded_kib / 1024, 1),
            "kib_per_client": round((loaded_kib - idle_kib) / args.clients, 1),
            "kib_per_added_client": round((loaded_kib - half_kib) / (args.clients - half), 1),
        }
    finally:
        cp.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.control_plane_bench", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment for the control plane")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    print(f"# {os.cpu_count()} cores; {args.clients} simulated sidecars (one gRPC stream each) on one control plane process")
    for key, value in result.items():
        print(f"{key:32s} {value}")
    print("targets: push p99 <= 1000 ms at 500 clients; <= 50 KiB per client")
    Path(".bench").mkdir(exist_ok=True)
    Path(".bench/control_plane.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
