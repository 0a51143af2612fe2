"""Input statistics end to end, with real processes: a model server holding tabular v1-v3,
a sidecar for version 1 with ``--drift`` pointed at a fake drift detector. Every row served
is summarized once, per (model, version, input), with the means of the data sent; with the
detector gone, every request still succeeds and the sidecar drops reports and counts them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from model_server.examples import tabular_data
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from sidecar.config import SidecarConfig
from sidecar.server import Sidecar
from sidecar.table import Cluster, Endpoint, ModelRoute, RoutingTable, Target
from tests.control_plane.peers import free_port, wait_until
from tests.sidecar.peers import ScriptedUpstream, SidecarProcess, http_call, total
from tests.sidecar.stats_peer import StatsPeer, rows_by_input

KEY = ("tabular", "1", "features")


def _rest_json(sidecar: SidecarProcess, rows: np.ndarray) -> int:
    rows = rows.reshape(-1, 8)
    tensor = {"name": "features", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
    body = json.dumps({"inputs": [tensor]}).encode()
    return sidecar.infer(body=body)[0]


def _rest_binary(sidecar: SidecarProcess, row: np.ndarray) -> int:
    header = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 8],
                                     "parameters": {"binary_data_size": 32}}]}).encode()
    return sidecar.call("POST", "/v2/models/tabular/infer", header + row.astype(np.float32).tobytes(),
                        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})[0]


def _grpc_raw(stub, row: np.ndarray) -> int:
    request = pb.ModelInferRequest(model_name="tabular")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 8])
    request.raw_input_contents.append(row.astype(np.float32).tobytes())
    stub.ModelInfer(request, timeout=30)
    return 200


def _means(reports) -> np.ndarray:
    """Per-feature means over the reports, combined by row count."""
    sums, counts = np.zeros(8), np.zeros(8)
    for report in reports:
        for item in report.inputs:
            for f in item.features:
                sums[f.index] += f.mean * f.count
                counts[f.index] += f.count
    return sums / counts


def test_every_row_served_is_summarized_once_with_the_means_sent(server):
    x, _ = tabular_data(21, 90)
    with StatsPeer() as peer, SidecarProcess("tabular", "1", server.http, upstream_grpc=server.grpc,
                                             extra_args=["--drift", peer.address, "--stats-interval", "0.2"]) as sidecar:
        with grpc.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            forms = (lambda row: _rest_json(sidecar, row), lambda row: _rest_binary(sidecar, row), lambda row: _grpc_raw(stub, row))
            statuses = [forms[i % 3](row) for i, row in enumerate(x)]
        assert statuses == [200] * 90
        peer.wait_for(lambda p: rows_by_input(p.reports()).get(KEY, 0) >= 90, what="90 rows")
        reports = peer.reports()
        assert rows_by_input(reports) == {KEY: 90}
        np.testing.assert_allclose(_means(reports), x.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)
        assert len({r.source for r in reports}) == 1 and sorted(r.sequence for r in reports) == list(range(1, len(reports) + 1))
        def acked():  # the acknowledgements are on their way back to the sidecar
            metrics = sidecar.metrics()
            return metrics if total(metrics, "sidemesh_stats_reports_acked_total") == len(reports) else None

        metrics = wait_until(acked, what="every report acknowledged")
        assert total(metrics, "sidemesh_stats_sampled_total", model="tabular", version="1") == 90
        assert total(metrics, "sidemesh_stats_connected") == 1
        stats = json.loads(sidecar.admin("/config_dump")[2])["stats"]
        assert (stats["connected"], stats["dropped_reports"], stats["drift"]) == (True, 0, peer.address)


def test_with_the_detector_gone_every_request_succeeds_and_reports_are_dropped_and_counted(server):
    x, _ = tabular_data(5, 64)
    with StatsPeer() as peer, SidecarProcess("tabular", "1", server.http, extra_args=[
            "--drift", peer.address, "--stats-interval", "0.02", "--stats-queue-bytes", "65536"]) as sidecar:
        assert _rest_json(sidecar, x) == 200
        peer.wait_for(lambda p: p.reports(), what="a first report")
        peer.stop()
        wait_until(lambda: total(sidecar.metrics(), "sidemesh_stats_connected") == 0, what="the stream to be down")
        statuses = []
        # One-row requests until the bounded queue overflows: each 20 ms window is then a
        # report of a few KiB, well under the queue's 64 KiB even when a loaded machine
        # delays the flush (a single report larger than the queue is dropped whole).
        for i in range(5_000):
            statuses.append(_rest_json(sidecar, x[:1]))
            if i % 10 == 9 and total(sidecar.metrics(), "sidemesh_stats_reports_dropped_total") > 0:
                break
        metrics = sidecar.metrics()
        assert statuses == [200] * len(statuses)
        assert total(metrics, "sidemesh_stats_reports_dropped_total") > 0
        assert 0 < total(metrics, "sidemesh_stats_queue_bytes") <= 65536
        dropped = total(metrics, "sidemesh_stats_reports_dropped_total")
        peer.start()  # back: the reports still queued arrive, and the next window's says how many were dropped

        def counted(p) -> bool:
            # A request per check: after the burst the tap's CPU budget may skip a single one,
            # and only a report made after the drops carries their count.
            assert _rest_json(sidecar, x) == 200
            return any(r.dropped_reports >= dropped for r in p.reports())

        wait_until(lambda: counted(peer), 30, "a report counting the dropped ones", every=0.1)


def test_only_requests_served_here_with_a_200_for_this_model_are_tapped_so_nothing_counts_twice():
    """In-process: a request forwarded to version 2 belongs to version 2's sidecar; one
    marked with the hop header (a split or a shadow copy from elsewhere) is served here and
    counts for version 1; error answers and other models are not tapped."""
    local, remote = ScriptedUpstream("1"), ScriptedUpstream("2")
    route = ModelRoute("m", (Target("2", "m|2", 1),))
    table = RoutingTable({"m": route}, {"m|2": Cluster("m|2", (Endpoint("127.0.0.1", remote.port),))}, {}, source="xds")
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]}).encode()

    def scenario(port: int) -> list[int]:
        def infer(path="/v2/models/m/infer", headers=None):
            return http_call(port, "POST", path, body, headers)[0]

        statuses = [infer(), infer(), infer(headers={"x-sidemesh-hop": "1"}), infer(headers={"x-sidemesh-version": "1"}),
                    infer("/v2/models/m/versions/1/infer"), infer("/v2/models/other/infer")]
        local.script(statuses=[500])
        statuses.append(infer(headers={"x-sidemesh-hop": "1"}))
        return statuses

    async def main(peer: StatsPeer):
        config = SidecarConfig(model="m", version="1", upstream=("127.0.0.1", local.port), listen=("127.0.0.1", free_port()),
                               admin=("127.0.0.1", free_port()), drift=("127.0.0.1", peer.port), stats_interval_s=3600)
        async with Sidecar(config) as sidecar:
            sidecar.apply(table)
            statuses = await asyncio.get_running_loop().run_in_executor(None, scenario, sidecar.http_address[1])
        return statuses

    try:
        with StatsPeer() as peer:
            statuses = asyncio.run(asyncio.wait_for(main(peer), 60))
            peer.wait_for(lambda p: p.reports(), what="the last window, sent on shutdown")
    finally:
        local.close()
        remote.close()
    assert statuses == [200] * 6 + [500]
    assert remote.requests == 2 and local.requests == 5
    assert rows_by_input(peer.reports()) == {("m", "1", "x"): 6}  # hop, pinned by header, pinned by path


@pytest.mark.parametrize("args, message", [
    (["--drift", "nowhere"], "--drift: expected HOST:PORT"),
    (["--stats-interval", "0"], "--stats-interval: expected a positive number"),
    (["--stats-sample", "1.5"], "--stats-sample: expected a share between 0 and 1"),
    (["--stats-cpu-budget", "-1"], "--stats-cpu-budget: expected a share of one core"),
    (["--stats-queue-bytes", "100"], "--stats-queue-bytes: expected at least 65536 bytes"),
])
def test_a_bad_stats_flag_exits_2_naming_the_flag(args, message, capsys):
    from sidecar.cli import main

    assert main(["--model", "m", "--version", "1", *args]) == 2
    assert message in capsys.readouterr().err


def test_without_drift_nothing_of_the_tap_is_loaded_or_exported():
    code = ("import sys, asyncio; from sidecar.config import SidecarConfig; from sidecar.server import Sidecar\n"
            "from tests.control_plane.peers import free_port\n"
            "async def main():\n"
            "    c = SidecarConfig(model='m', version='1', listen=('127.0.0.1', free_port()), admin=('127.0.0.1', free_port()))\n"
            "    async with Sidecar(c) as s:\n"
            "        text = s.metrics.exposition().decode()\n"
            "    return text\n"
            "text = asyncio.run(main())\n"
            "print(sorted(m for m in sys.modules if m.startswith(('sidecar.tap', 'sidecar.stats_client', 'drift', 'datasketches'))),"
            " 'sidemesh_stats' in text)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip().splitlines()[-1] == "[] False"
