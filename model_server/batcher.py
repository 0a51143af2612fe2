"""Dynamic batching: join concurrent requests for one model version into one run.

Requests wait in a bounded queue. The worker takes the oldest request, then waits at most
``max_queue_delay`` (counted from that request's arrival) for more requests with the same
*batch key* (input names, dtypes and non-batch dimensions) until ``max_batch_size`` rows are
gathered. Requests with different keys never share a run. Concatenation, the ONNX Runtime
run and the split back into per-caller rows all happen on the worker thread, so the event
loop only moves references. One run at a time per version: while it runs, the next batch
fills, which is what makes batches large under load.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .errors import InferenceFailed, ModelNotReady, Overloaded

__all__ = ["BatchPolicy", "BatchObserver", "DynamicBatcher"]

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchPolicy:
    """``max_batch_size`` 0 runs every request alone, as sent."""

    max_batch_size: int
    max_queue_delay_s: float
    max_queue_size: int

    def __post_init__(self) -> None:
        if self.max_batch_size < 0 or self.max_queue_delay_s < 0 or self.max_queue_size < 1:
            raise ValueError(f"invalid batch policy {self}")


class BatchObserver(Protocol):
    """Where the batcher reports what it measured (metrics, in the server)."""

    def queued(self, seconds: float) -> None: ...

    def ran(self, rows: int, seconds: float) -> None: ...


class _Pending:
    __slots__ = ("feeds", "rows", "key", "enqueued", "future")

    def __init__(self, feeds: dict[str, np.ndarray], rows: int, key: tuple, future: asyncio.Future) -> None:
        self.feeds = feeds
        self.rows = rows
        self.key = key
        self.enqueued = time.monotonic()
        self.future = future


def batch_key(feeds: dict[str, np.ndarray]) -> tuple:
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(feeds.items()))


class DynamicBatcher:
    """Queue and worker for one model version. Start with ``start()``, stop with ``close()``."""

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
        output_names: tuple[str, ...],
        policy: BatchPolicy,
        observer: BatchObserver | None = None,
    ) -> None:
        self._run = run
        self._output_names = output_names
        self._policy = policy
        self._observer = observer
        self._pending: dict[tuple, deque[_Pending]] = {}
        self._rows: dict[tuple, int] = {}
        self._size = 0
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-run")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="batcher")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for queue in self._pending.values():
            for item in queue:
                if not item.future.done():
                    item.future.set_exception(ModelNotReady("the model server is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=True)

    def submit(self, feeds: dict[str, np.ndarray], rows: int) -> asyncio.Future:
        """Queue one request; its future resolves to all the model's outputs for its rows.

        Raises ``Overloaded`` at once when the queue is full.
        """
        if self._size >= self._policy.max_queue_size:
            raise Overloaded(f"the model's queue is full ({self._policy.max_queue_size} requests waiting); retry later")
        key = batch_key(feeds)
        item = _Pending(feeds, rows, key, asyncio.get_running_loop().create_future())
        self._pending.setdefault(key, deque()).append(item)
        self._rows[key] = self._rows.get(key, 0) + rows
        self._size += 1
        self._arrived.set()
        return item.future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            key = min(self._pending, key=lambda k: self._pending[k][0].enqueued)
            limit = self._policy.max_batch_size
            if limit:
                deadline = self._pending[key][0].enqueued + self._policy.max_queue_delay_s
                while self._rows.get(key, 0) < limit and (remaining := deadline - time.monotonic()) > 0:
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except TimeoutError:
                        break
            batch = self._take(key, limit)
            if not batch:
                continue
            started = time.monotonic()
            if self._observer is not None:
                for item in batch:
                    self._observer.queued(started - item.enqueued)
            try:
                results = await loop.run_in_executor(self._executor, self._execute, batch)
            except Exception as exc:  # delivered to every caller of the batch
                err = exc if isinstance(exc, InferenceFailed) else InferenceFailed(str(exc))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            for item, outputs in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(outputs)

    def _take(self, key: tuple, limit: int) -> list[_Pending]:
        """Pop the oldest requests of ``key`` up to ``limit`` rows (one request if 0)."""
        queue = self._pending.get(key)
        if queue is None:
            return []
        batch: list[_Pending] = []
        rows = 0
        while queue and (not batch or (limit and rows + queue[0].rows <= limit)):
            item = queue.popleft()
            self._size -= 1
            self._rows[key] -= item.rows
            if item.future.done():  # the caller went away while it waited
                continue
            batch.append(item)
            rows += item.rows
        if not queue:
            del self._pending[key]
            del self._rows[key]
        return batch

    def _execute(self, batch: list[_Pending]) -> list[Outputs]:
        """Worker thread: stack, run, split. Returns each caller's outputs."""
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {name: np.concatenate([item.feeds[name] for item in batch]) for name in batch[0].feeds}
        started = time.monotonic()
        arrays = self._run(feeds)
        elapsed = time.monotonic() - started
        total = sum(item.rows for item in batch)
        if self._observer is not None:
            self._observer.ran(total, elapsed)
        if len(batch) == 1:
            return [dict(zip(self._output_names, arrays))]
        for name, array in zip(self._output_names, arrays):
            if array.ndim == 0 or array.shape[0] != total:
                raise InferenceFailed(
                    f"output {name!r} has shape {list(array.shape)} for a batch of {total} rows, so it cannot be split "
                    "between requests; set max_batch_size to 0 in this model's config.json"
                )
        results: list[Outputs] = []
        offset = 0
        for item in batch:
            end = offset + item.rows
            results.append({name: array[offset:end] for name, array in zip(self._output_names, arrays)})
            offset = end
        return results
