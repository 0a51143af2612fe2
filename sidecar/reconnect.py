"""What the sidecar's long-lived gRPC clients (xDS, statistics) share when a stream drops:
a jittered backoff and an honest answer to "was I cancelled?"."""

from __future__ import annotations

import asyncio
import random
from typing import Callable

__all__ = ["backoff_delay", "raise_if_cancelled"]


def backoff_delay(attempt: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max_s, base_s * 2**attempt)),
    so sidecars that lost the same server do not come back in step."""
    return rand() * min(max_s, base_s * 2.0 ** min(attempt, 60))


def raise_if_cancelled() -> None:
    """grpc.aio can swallow a cancellation: one that meets a stream the server has just
    ended comes out as UNAVAILABLE, one that lands during set-up is absorbed by the call's
    preparation task. Honour a requested cancellation all the same, or a reconnect loop
    would go on forever after being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
