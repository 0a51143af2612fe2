"""Steady traffic through one sidecar from a thread, as clients would send it, until stopped.

Rates over a minute are only meaningful for traffic that keeps flowing while Prometheus
scrapes: a burst between two scrapes shows as one step, and the first value of a counter
that the burst created is not counted at all. So the live test runs this load for its
whole length and changes what the rows look like (``shift``) instead of sending bursts.
"""

from __future__ import annotations

import json
import threading
from collections import Counter

from model_server.examples import tabular_data
from tests.sidecar.peers import http_call

__all__ = ["SteadyLoad", "BAD_INPUT"]

# A shape the model does not take: the model server answers 400.
BAD_INPUT = json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 7], "data": [0.5] * 7}]}).encode()


class SteadyLoad:
    """Inference requests of ``rows`` rows each, one at a time, ``pause_s`` apart; every
    ``bad_every``-th request is malformed. ``shift`` is added to every feature from the next
    request on. ``statuses`` counts the answers; ``errors`` holds requests that got none."""

    def __init__(self, port: int, model: str, rows: int = 10, pause_s: float = 0.03, bad_every: int = 10) -> None:
        if rows < 1 or pause_s < 0 or bad_every < 2:
            raise ValueError("SteadyLoad: expected rows >= 1, pause_s >= 0 and bad_every >= 2")
        self.port, self.path, self.rows, self.pause_s, self.bad_every = port, f"/v2/models/{model}/infer", rows, pause_s, bad_every
        self.shift = 0.0
        self.statuses: Counter = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def start(self) -> "SteadyLoad":
        self._thread.start()
        return self

    def _body(self, i: int) -> bytes:
        if i % self.bad_every == self.bad_every - 1:
            return BAD_INPUT
        rows, _ = tabular_data(1000 + i, self.rows)
        rows = rows + self.shift
        return json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape),
                                       "data": rows.ravel().tolist()}]}).encode()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                status, _, _ = http_call(self.port, "POST", self.path, self._body(i), {"Content-Type": "application/json"})
                self.statuses[status] += 1
            except OSError as exc:
                self.errors.append(f"request {i}: {type(exc).__name__}: {exc}")
            i += 1
            self._stop.wait(self.pause_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
