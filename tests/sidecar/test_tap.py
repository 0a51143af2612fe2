"""The statistics tap: bodies offered on the request path are decoded later with the model
server's codecs (JSON, the binary extension, gRPC raw and typed contents) into per-feature
statistics; sampling, the CPU budget and the pending bound refuse and count, never fail."""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np
import pytest

from model_server.proto import grpc_service_pb2 as v2
from sidecar.instruments import StatsInstruments
from sidecar.metrics import MetricSet
from sidecar.router import Router
from sidecar.table import Cluster, ModelRoute, RoutingTable, Target, static_table
from sidecar.tap import StatsTap, TapConfig

HEADER = b"inference-header-content-length"


def _tap(config: TapConfig | None = None, stats_sample: float | None = None, sink=None, seed: int = 7) -> StatsTap:
    router = Router("m", "1")
    router.table = static_table("m", "1")
    if stats_sample is not None:
        route = ModelRoute("m", (Target("1", "m|1", 1),), stats_sample=stats_sample)
        router.table = RoutingTable({"m": route}, {"m|1": Cluster("m|1")}, {}, source="xds")
    return StatsTap(config or TapConfig(), router, StatsInstruments(MetricSet()), sink, rand=random.Random(seed).random)


def json_body(x: np.ndarray, name: str = "features", datatype: str = "FP32") -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}]}).encode()


def binary_body(x: np.ndarray, name: str = "features") -> tuple[bytes, list]:
    header = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    return header + x.astype(np.float32).tobytes(), [(b"content-type", b"application/octet-stream"), (HEADER, str(len(header)).encode())]


def grpc_body(x: np.ndarray, raw: bool = True, name: str = "features") -> bytes:
    request = v2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
    if raw:
        request.raw_input_contents.append(x.astype(np.float32).tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return request.SerializeToString()


def _stats(tap: StatsTap) -> dict:
    inputs, _, _ = tap.take()
    return {(i.model, i.version, i.input, i.datatype): i for i in inputs}


def _counts(tap: StatsTap) -> dict:
    m = tap.instruments
    return {"sampled": sum(m.sampled.values.values()), **{k[2]: v for k, v in m.skipped.values.items()}}


def test_json_binary_and_grpc_bodies_decode_to_the_rows_and_means_sent():
    tap = _tap()
    rng = np.random.default_rng(3)
    parts = [rng.normal(loc=np.arange(8), scale=1.0, size=(n, 8)).astype(np.float32) for n in (1, 3, 2, 4)]
    tap.offer(json_body(parts[0]), [(b"content-type", b"application/json")])
    body, headers = binary_body(parts[1])
    tap.offer(body, headers)
    tap.offer(grpc_body(parts[2], raw=True), None)
    tap.offer(grpc_body(parts[3], raw=False), None)
    assert tap.process() == 4
    stats = _stats(tap)
    assert list(stats) == [("m", "1", "features", "FP32")]
    item = stats[("m", "1", "features", "FP32")]
    everything = np.concatenate(parts).astype(np.float64)
    assert item.rows == 10
    assert [f.index for f in item.features] == list(range(8))
    assert [f.count for f in item.features] == [10] * 8
    np.testing.assert_allclose([f.mean for f in item.features], everything.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose([f.min for f in item.features], everything.min(axis=0))
    assert _counts(tap) == {"sampled": 4}


def test_inputs_are_kept_apart_and_rows_with_other_trailing_shapes_still_count():
    tap = _tap()
    tap.offer(json_body(np.ones((2, 4))), [])
    tap.offer(json_body(np.ones((3, 2)) * 5), [])  # another trailing shape: summarized separately, same sketch
    tap.offer(json_body(np.array([1, 2, 2]), name="ids", datatype="INT64"), [])
    tap.process()
    stats = _stats(tap)
    assert stats[("m", "1", "features", "FP32")].rows == 5
    assert [f.count for f in stats[("m", "1", "features", "FP32")].features] == [5, 5, 2, 2]
    ids = stats[("m", "1", "ids", "INT64")]
    assert ids.rows == 3 and dict(ids.features[0].categories) == {"1": 1, "2": 2}


def test_a_window_is_taken_once_and_the_next_starts_empty():
    tap = _tap()
    tap.offer(json_body(np.ones((1, 8))), [])
    tap.process()
    inputs, start, end = tap.take()
    assert len(inputs) == 1 and 0 < start <= end
    assert tap.take()[0] == []


def test_undecodable_bodies_are_counted_not_raised():
    tap = _tap()
    tap.offer(b"{not json", [])
    tap.offer(b"\xff\x00garbage", None)
    tap.offer(json_body(np.ones((1, 8))), [(HEADER, b"9999")])  # header length past the body
    tap.offer(json_body(np.ones((1, 8))), [])
    assert tap.process() == 4
    assert _counts(tap) == {"sampled": 1, "undecodable": 3}
    assert _stats(tap)[("m", "1", "features", "FP32")].rows == 1


def test_the_sampled_share_is_roughly_honoured_and_the_route_can_lower_it():
    body = json_body(np.ones((1, 8)))
    for config, route_share, expected in ((TapConfig(sample=0.3), None, 0.3), (TapConfig(sample=0.5), 0.2, 0.2),
                                          (TapConfig(sample=0.1), 0.9, 0.1)):
        tap = _tap(TapConfig(sample=config.sample, max_pending=10_000), stats_sample=route_share)
        for _ in range(4000):
            tap.offer(body, [])
        counts = _counts(tap)
        accepted = tap.pending()
        assert accepted + counts["sample"] == 4000
        assert abs(accepted / 4000 - expected) < 0.03, (config, route_share, accepted)


def test_a_zero_cpu_budget_skips_every_request_and_counts_it():
    tap = _tap(TapConfig(cpu_budget=0.0))
    body = json_body(np.ones((1, 8)))
    for _ in range(5):
        assert tap.offer(body, []) is None
    assert tap.pending() == 0 and tap.pending_bytes == 0
    assert _counts(tap) == {"sampled": 0, "cpu_budget": 5}


def test_spending_past_the_budget_stops_offers_until_the_budget_refills():
    tap = _tap(TapConfig(cpu_budget=0.01))
    tap._charge(0.02)
    assert tap.over_budget
    tap.offer(json_body(np.ones((1, 8))), [])
    assert _counts(tap) == {"sampled": 0, "cpu_budget": 1}
    tap._refilled_at -= 2.5  # 2.5 s later: 25 ms earned back, at most 10 ms kept
    tap._charge(0.0)
    assert not tap.over_budget


def test_over_a_long_run_the_worker_spends_its_budget_exactly(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("sidecar.tap.time.monotonic", lambda: clock[0])
    tap = _tap(TapConfig(cpu_budget=0.01))
    accepted = 0
    for _ in range(10_000):  # 10 s of one request per ms, each costing 100 us when taken
        clock[0] += 0.001
        tap._charge(0.0)
        if not tap.over_budget:
            accepted += 1
            tap._charge(0.0001)
    # 10 s x 0.01 earned plus the 0.01 s held at the start: 1,100 requests, no more, no fewer.
    assert abs(accepted - 1100) <= 2


def test_a_full_pending_list_skips_and_counts_without_blocking():
    body = json_body(np.ones((1, 8)))
    tap = _tap(TapConfig(max_pending=2))
    for _ in range(5):
        tap.offer(body, [])
    assert tap.pending() == 2
    small = _tap(TapConfig(max_pending_bytes=len(body) * 2 + 1))
    for _ in range(3):
        small.offer(body, [])
    small.offer(b"x" * (len(body) * 3), [])
    assert small.pending() == 2 and small.pending_bytes == len(body) * 2
    assert _counts(tap) == {"sampled": 0, "queue_full": 3}
    assert _counts(small) == {"sampled": 0, "queue_full": 1, "too_large": 1}


def test_the_worker_decodes_off_the_request_path_and_hands_windows_to_the_sink():
    async def main():
        windows: asyncio.Queue = asyncio.Queue()
        tap = _tap(TapConfig(interval_s=0.05, tick_s=0.01), sink=lambda inputs, start, end: windows.put_nowait(inputs))
        tap.start()
        try:
            for i in range(10):
                tap.offer(json_body(np.full((1, 8), float(i))), [])
            rows = 0
            while rows < 10:
                inputs = await asyncio.wait_for(windows.get(), 10)
                rows += sum(i.rows for i in inputs)
        finally:
            await tap.stop()
        assert rows == 10
        assert tap.instruments.tap_seconds.values[()] > 0

    asyncio.run(main())


def test_a_worker_over_budget_retries_by_itself_and_resumes_when_the_budget_refills():
    async def main():
        tap = _tap(TapConfig(cpu_budget=0.01, tick_s=0.01))
        tap.start()
        try:
            tap.offer(json_body(np.ones((1, 8))), [])
            tap._charge(0.05)  # as if the last batches had been expensive
            for _ in range(5):  # several ticks pass: over budget, nothing is decoded
                await asyncio.sleep(0.01)
            assert tap.over_budget and tap.pending() == 1
            tap._refilled_at -= 5.0  # 5 s later: the 50 ms spent are earned back
            for _ in range(500):  # no offer wakes it: its own timer must
                if not tap.pending():
                    break
                await asyncio.sleep(0.01)
            assert tap.pending() == 0 and not tap.over_budget
        finally:
            await tap.stop()
        return _counts(tap)

    assert asyncio.run(main()) == {"sampled": 1}


def test_a_report_that_empties_the_budget_does_not_leave_offers_refused_until_the_next():
    async def main():
        windows: asyncio.Queue = asyncio.Queue()
        tap = _tap(TapConfig(cpu_budget=0.01, interval_s=3600, tick_s=0.01), sink=lambda *window: windows.put_nowait(window))
        tap.start()
        try:
            tap.offer(json_body(np.ones((1, 8))), [])
            tap.process()
            tap._charge(0.012)  # as if building the report had cost more than the bucket held
            tap.flush()
            assert tap.over_budget and tap.pending() == 0
            tap._refilled_at -= 1.0  # a second later the bucket is full again ...
            for _ in range(500):  # ... and the worker's own timer has noticed, with nothing pending
                if not tap.over_budget:
                    break
                await asyncio.sleep(0.01)
            tap.offer(json_body(np.ones((1, 8))), [])
        finally:
            await tap.stop()
        return _counts(tap)

    assert asyncio.run(main()) == {"sampled": 2}


def test_a_quiet_window_is_held_for_several_intervals_and_a_busy_one_goes_at_the_next():
    async def window_after(rows: int) -> float:
        loop = asyncio.get_running_loop()
        arrived = loop.create_future()
        tap = _tap(TapConfig(interval_s=0.2, tick_s=0.01, min_report_values=800, hold_intervals=5),
                   sink=lambda inputs, start, end: arrived.done() or arrived.set_result(loop.time()))
        tap.start()
        try:
            offered = loop.time()
            tap.offer(json_body(np.ones((rows, 8))), [])  # 8 features: rows x 8 values
            return await asyncio.wait_for(arrived, 10) - offered
        finally:
            await tap.stop()

    assert asyncio.run(window_after(1)) >= 5 * 0.2  # 8 values: held for five intervals
    assert asyncio.run(window_after(100)) < 5 * 0.2  # 800 values: sent at the first interval


def test_stop_decodes_what_is_pending_and_flushes_a_last_window():
    async def main():
        windows = []
        tap = _tap(TapConfig(interval_s=3600, tick_s=3600), sink=lambda inputs, start, end: windows.append(inputs))
        tap.start()
        tap.offer(json_body(np.ones((2, 8))), [])
        await tap.stop()
        return windows

    windows = asyncio.run(main())
    assert [[i.rows for i in w] for w in windows] == [[2]]


@pytest.mark.parametrize("field, value", [("sample", 1.5), ("cpu_budget", -0.1), ("interval_s", 0), ("max_pending", 0)])
def test_the_config_refuses_values_out_of_range(field, value):
    with pytest.raises(ValueError, match=field):
        TapConfig(**{field: value})


def test_a_batch_is_bounded_in_bodies_and_bytes_but_always_takes_one():
    tap = _tap()
    body = json_body(np.ones((1, 8)))
    for _ in range(5):
        tap.offer(body, [])
    assert tap.process(limit=2) == 2
    assert tap.process(limit_bytes=len(body) * 2 + 1) == 2
    assert tap.process(limit_bytes=1) == 1
    assert tap.pending() == 0 and tap.pending_bytes == 0


def test_an_input_keeps_one_datatype_per_window():
    tap = _tap()
    tap.offer(json_body(np.ones((2, 2))), [])
    tap.offer(json_body(np.ones((1, 2), dtype=np.int64), datatype="INT64"), [])  # the model server would refuse it
    tap.process()
    stats = _stats(tap)
    assert list(stats) == [("m", "1", "features", "FP32")] and stats[("m", "1", "features", "FP32")].rows == 2
    assert _counts(tap) == {"sampled": 1, "undecodable": 1}
