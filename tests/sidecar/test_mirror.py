"""Mirroring off the request path, in-process: a dead or slow shadow costs the primary
nothing (no error, no wait), a full queue drops and counts, and large bodies are copied."""

from __future__ import annotations

import asyncio

from sidecar.config import SidecarConfig
from sidecar.mirror import MirrorConfig
from sidecar.server import Sidecar
from sidecar.table import Cluster, Endpoint, MirrorTarget, ModelRoute, RoutingTable, Target
from tests.control_plane.peers import free_port
from tests.sidecar.peers import INFER_BODY, ScriptedUpstream, http_call


def _table(shadow_port: int) -> RoutingTable:
    route = ModelRoute("m", (Target("1", "m|1", 1),), mirrors=(MirrorTarget("3", "m|3", 1_000_000),))
    clusters = {"m|1": Cluster("m|1"), "m|3": Cluster("m|3", (Endpoint("127.0.0.1", shadow_port),))}
    return RoutingTable({"m": route}, clusters, {}, source="static")


def _run(shadow_port: int, scenario, mirror: MirrorConfig = MirrorConfig(), wait_idle: bool = True):
    local = ScriptedUpstream("1")
    config = SidecarConfig(model="m", version="1", upstream=("127.0.0.1", local.port), listen=("127.0.0.1", free_port()),
                           admin=("127.0.0.1", free_port()), mirror=mirror)

    async def main():
        async with Sidecar(config) as sidecar:
            sidecar.apply(_table(shadow_port))
            result = await asyncio.get_running_loop().run_in_executor(None, scenario, sidecar.http_address[1])
            if wait_idle:
                await sidecar.mirror.wait_idle()
            return result, {k: v for k, v in sidecar.instruments.mirror.values.items()}

    try:
        return asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        local.close()


def _infer_many(n: int, body: bytes = INFER_BODY):
    return lambda port: [http_call(port, "POST", "/v2/models/m/infer", body)[0] for _ in range(n)]


def test_a_dead_shadow_never_fails_the_primary_and_its_errors_are_counted():
    statuses, outcomes = _run(free_port(), _infer_many(30))
    assert statuses == [200] * 30
    assert outcomes == {("m", "1", "3", "shadow_error"): 30.0}


def test_a_slow_shadow_fills_the_bounded_queue_and_further_copies_are_dropped_not_waited_for():
    shadow = ScriptedUpstream("3")
    shadow.script(delay_s=2.0)
    try:
        statuses, outcomes = _run(shadow.port, _infer_many(20), MirrorConfig(workers=1, queue_size=2, timeout_s=5), wait_idle=False)
    finally:
        shadow.close()
    assert statuses == [200] * 20
    assert outcomes[("m", "1", "3", "dropped_queue_full")] >= 20 - 1 - 2  # one in flight, two queued


def test_a_large_body_is_mirrored_whole():
    shadow = ScriptedUpstream("3")
    big = b'{"inputs": [], "padding": "' + b"x" * (8 << 20) + b'"}'
    try:
        statuses, outcomes = _run(shadow.port, _infer_many(2, big))
    finally:
        shadow.close()
    assert statuses == [200, 200]
    assert shadow.body_sizes == [len(big), len(big)]
    assert outcomes[("m", "1", "3", "ok")] == 2
