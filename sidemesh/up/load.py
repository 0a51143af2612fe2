"""The demo's traffic: V2 REST requests at a fixed rate through the entry sidecar.

Requests leave on a schedule (open loop), not when the previous one returns, so a slow
answer does not slow the offered rate; at most ``concurrency`` are in flight. Every answer
names the version that served it (``x-sidemesh-version``), which is the observed split as
a client sees it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import aiohttp
import numpy as np

__all__ = ["Load", "request_bodies", "SHIFTED_FEATURES"]

ROWS_PER_REQUEST = 8
SHIFTED_FEATURES = (0, 1, 2, 3)
_TIMEOUT = aiohttp.ClientTimeout(total=30)


def request_bodies(count: int, seed: int, shift_sigmas: float = 0.0) -> list[bytes]:
    """``count`` V2 JSON bodies of ``ROWS_PER_REQUEST`` rows like the training data; with
    ``shift_sigmas``, the features in ``SHIFTED_FEATURES`` moved by that many of the
    training data's standard deviations."""
    from model_server.examples import FEATURES, tabular_data

    rows, _ = tabular_data(seed, count * ROWS_PER_REQUEST)
    if shift_sigmas:
        sigma = tabular_data(11, 4000)[0].std(axis=0)  # version 1's training features
        rows = rows.copy()
        rows[:, SHIFTED_FEATURES] += np.float32(shift_sigmas) * sigma[list(SHIFTED_FEATURES)]
    out = []
    for chunk in rows.reshape(count, ROWS_PER_REQUEST, FEATURES):
        doc = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [ROWS_PER_REQUEST, FEATURES],
                           "data": [round(float(x), 4) for x in chunk.ravel()]}]}
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out


class Load:
    def __init__(self, session: aiohttp.ClientSession, url: str, rate: float, concurrency: int = 32) -> None:
        self.session, self.url, self.rate, self.concurrency = session, url, rate, concurrency
        self.reset(0)

    def reset(self, target: int) -> None:
        self.target = target
        self.sent = self.answered = self.failed = 0
        self.by_version: Counter[str] = Counter()
        self.last_error = ""
        self.started = time.monotonic()

    def rps(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.answered / elapsed if elapsed > 0 else 0.0

    def split(self) -> str:
        total = sum(self.by_version.values())
        if not total:
            return "no answers yet"
        return ", ".join(f"version {v}: {n / total:.0%}" for v, n in sorted(self.by_version.items()))

    def progress(self, width: int = 24) -> str:
        done = int(width * self.sent / self.target) if self.target else 0
        text = (f"[{'#' * done}{'.' * (width - done)}] {self.sent}/{self.target} requests sent, "
                f"{self.rps():.1f} req/s answered; answered by {self.split()}")
        if self.failed:
            text += f"; {self.failed} failed (last: {self.last_error})"
        return text

    async def _one(self, body: bytes) -> None:
        try:
            async with self.session.post(self.url, data=body, headers={"Content-Type": "application/json"},
                                         timeout=_TIMEOUT) as response:
                text = await response.read()
                if response.status == 200:
                    self.answered += 1
                    self.by_version[response.headers.get("x-sidemesh-version", "?")] += 1
                else:
                    self.failed += 1
                    self.last_error = f"{response.status} {text[:200].decode('utf-8', 'replace')}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.failed += 1
            self.last_error = f"{exc.__class__.__name__}: {exc}"
        finally:
            self._slots.release()

    async def run(self, bodies: list[bytes], target: int) -> None:
        """Send ``target`` requests (cycling through ``bodies``) and wait for their answers;
        cancelling stops sending and abandons those in flight."""
        self.reset(target)
        self._slots = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks: set[asyncio.Task] = set()
        try:
            for i in range(target):
                delay = start + i / self.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)  # the schedule, not a wait for an event
                await self._slots.acquire()
                self.sent += 1
                task = asyncio.ensure_future(self._one(bodies[i % len(bodies)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
