"""The dynamic batcher in-process, with a fake model whose runs are recorded and gated by
events, so each test controls exactly what is queued when a run starts."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from model_server.batcher import BatchPolicy, DynamicBatcher
from model_server.errors import InferenceFailed, Overloaded


class FakeModel:
    """``y = 2x`` and ``idx`` = the row's own first value; records each run's feeds."""

    output_names = ("y", "idx")

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.runs: list[dict[str, np.ndarray]] = []
        self.started = threading.Event()
        self.gate = gate

    def run(self, feeds):
        self.runs.append(feeds)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        x = feeds["x"]
        if np.isnan(x).any():
            raise InferenceFailed("NaN in the batch")
        return [x * 2, x[:, 0].copy()]


def rows(start: int, count: int = 1, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + count * width, dtype=np.float32).reshape(count, width)}


def run_async(coro):
    return asyncio.run(coro)


async def _with_batcher(model, policy, body):
    batcher = DynamicBatcher(model.run, model.output_names, policy)
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.close()


def test_concurrent_requests_share_one_run_and_get_their_own_rows():
    model = FakeModel()

    async def body(batcher):
        futures = [batcher.submit(rows(10 * i), 1) for i in range(4)]
        return await asyncio.gather(*futures)

    # A long delay: the run may only start because max_batch_size rows arrived.
    results = run_async(_with_batcher(model, BatchPolicy(4, 30.0, 100), body))
    assert [len(r["x"]) for r in model.runs] == [4]
    for i, out in enumerate(results):
        assert np.array_equal(out["y"], rows(10 * i)["x"] * 2)
        assert out["idx"].tolist() == [10 * i]


def test_requests_with_different_trailing_dimensions_never_share_a_run():
    model = FakeModel()

    async def body(batcher):
        futures = [batcher.submit(rows(i, width=3 if i % 2 else 4), 1) for i in range(6)]
        return await asyncio.gather(*futures)

    results = run_async(_with_batcher(model, BatchPolicy(8, 0.005, 100), body))
    assert sorted(len(r["x"]) for r in model.runs) == [3, 3]
    assert {r["x"].shape[1] for r in model.runs} == {3, 4}
    for i, out in enumerate(results):
        assert out["y"].shape == (1, 3 if i % 2 else 4)


def test_a_batch_never_exceeds_max_batch_size_rows():
    model = FakeModel()

    async def body(batcher):
        return await asyncio.gather(*[batcher.submit(rows(i, count=2), 2) for i in range(5)])

    results = run_async(_with_batcher(model, BatchPolicy(4, 0.001, 100), body))
    assert [len(r["x"]) for r in model.runs] == [4, 4, 2]
    assert all(out["y"].shape == (2, 3) for out in results)


def test_a_full_queue_is_refused_at_once():
    gate = threading.Event()
    model = FakeModel(gate)

    async def body(batcher):
        running = batcher.submit(rows(0), 1)
        await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 30)
        queued = [batcher.submit(rows(1), 1), batcher.submit(rows(2), 1)]
        with pytest.raises(Overloaded, match="queue is full"):
            batcher.submit(rows(3), 1)
        gate.set()
        return await asyncio.gather(running, *queued)

    results = run_async(_with_batcher(model, BatchPolicy(0, 0.0, 2), body))
    assert [out["idx"].tolist() for out in results] == [[0], [1], [2]]


def test_batching_off_runs_every_request_alone_as_sent():
    model = FakeModel()

    async def body(batcher):
        return await asyncio.gather(*[batcher.submit(rows(i, count=2), 2) for i in range(3)])

    run_async(_with_batcher(model, BatchPolicy(0, 1.0, 100), body))
    assert [len(r["x"]) for r in model.runs] == [2, 2, 2]


def test_a_failed_run_fails_its_own_batch_only():
    model = FakeModel()

    async def body(batcher):
        bad = rows(0)
        bad["x"][0, 0] = np.nan
        first = await asyncio.gather(batcher.submit(bad, 1), batcher.submit(rows(5), 1), return_exceptions=True)
        second = await batcher.submit(rows(9), 1)
        return first, second

    (first, second) = run_async(_with_batcher(model, BatchPolicy(2, 0.01, 100), body))
    assert all(isinstance(r, InferenceFailed) for r in first)
    assert second["idx"].tolist() == [9]


def test_an_output_without_a_batch_dimension_cannot_be_split():
    def run(feeds):
        return [feeds["x"].sum(keepdims=True)[0]]

    async def body(batcher):
        return await asyncio.gather(*[batcher.submit(rows(i), 1) for i in range(2)], return_exceptions=True)

    async def main():
        batcher = DynamicBatcher(run, ("total",), BatchPolicy(2, 30.0, 10))
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.close()

    results = run_async(main())
    assert all(isinstance(r, InferenceFailed) and "set max_batch_size to 0" in str(r) for r in results)
