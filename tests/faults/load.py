"""Load for the fault tests: bounded in requests and time, recording every answer.

``ClosedLoop`` keeps a few keep-alive connections busy from threads (a fault must meet
requests in flight); ``OpenLoop`` sends at a fixed rate from one asyncio loop whatever the
answers do, and times each request from the moment it was due, so a slow answer cannot
hide the requests queued behind it (coordinated omission) and two runs at the same rate
are comparable.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import threading
import time
from dataclasses import dataclass

__all__ = ["Answer", "ClosedLoop", "OpenLoop", "infer_body", "percentile", "post"]


def infer_body(rows: int = 1, value: float = 0.5) -> bytes:
    """A V2 JSON request for the tabular model: ``rows`` rows of 8 FP32 features."""
    return json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 8],
                                   "data": [value] * (rows * 8)}]}).encode()


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0-100) of a non-empty list."""
    if not values:
        raise ValueError("percentile: expected at least one value")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


@dataclass(frozen=True, slots=True)
class Answer:
    sent: float      # time.monotonic() when the request was sent (or due, for OpenLoop)
    done: float      # time.monotonic() when the answer was read
    status: int      # HTTP status; 0 when no answer came (connection refused, reset, timeout)
    version: str     # x-sidemesh-version, "" when absent
    body: bytes      # kept only for answers other than 200

    @property
    def seconds(self) -> float:
        return self.done - self.sent


def post(conn: http.client.HTTPConnection | None, port: int, path: str, body: bytes, headers: dict,
         timeout_s: float) -> tuple[Answer, http.client.HTTPConnection | None]:
    """One POST on a keep-alive connection (opened when ``conn`` is None): the answer, and the
    connection to use next (None once it is closed)."""
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    sent = time.monotonic()
    try:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        data = response.read()
        answer = Answer(sent, time.monotonic(), response.status, response.getheader("x-sidemesh-version") or "",
                        b"" if response.status == 200 else data)
        if response.getheader("connection", "").lower() == "close":
            conn.close()
            conn = None
    except (OSError, http.client.HTTPException) as exc:
        answer = Answer(sent, time.monotonic(), 0, "", f"{type(exc).__name__}: {exc}".encode())
        conn.close()
        conn = None
    return answer, conn


class ClosedLoop:
    """``threads`` clients, each sending the next request when its answer is in, until
    ``stop()``, ``max_requests`` in all, or ``max_seconds``, whichever comes first."""

    def __init__(self, port: int, path: str, body: bytes | list[bytes], threads: int = 3, max_requests: int = 20_000,
                 max_seconds: float = 60.0, timeout_s: float = 10.0) -> None:
        if threads < 1 or max_requests < 1 or max_seconds <= 0 or timeout_s <= 0:
            raise ValueError("ClosedLoop: expected threads >= 1, max_requests >= 1, max_seconds > 0 and timeout_s > 0")
        self.port, self.path, self.timeout_s = port, path, timeout_s
        self.bodies = [body] if isinstance(body, bytes) else list(body)  # sent in turn; may be replaced while running
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.answers: list[Answer] = []
        self._turn = itertools.count()  # shared by the threads: each body in turn, not each thread's own
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"closed-loop-{i}", daemon=True) for i in range(threads)]

    def __enter__(self) -> "ClosedLoop":
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> list[Answer]:
        self._stop.set()
        for t in self._threads:
            if t.ident is not None:  # started
                t.join(self.timeout_s + 5)
        return self.answers

    def count(self) -> int:
        return len(self.answers)

    def wait_for(self, n: int, timeout: float = 30.0, what: str = "answers") -> None:
        """Wait until at least ``n`` answers are in (bounded)."""
        deadline = time.monotonic() + timeout
        while len(self.answers) < n:
            if time.monotonic() > deadline or self._stop.is_set():
                raise AssertionError(f"load: {len(self.answers)} of {n} {what} after {timeout:.0f} s")
            time.sleep(0.01)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        headers = {"Content-Type": "application/json"}
        try:
            while not self._stop.is_set() and time.monotonic() - self._started < self.max_seconds:
                with self._lock:
                    if len(self.answers) >= self.max_requests:
                        return
                bodies = self.bodies
                body = bodies[next(self._turn) % len(bodies)]
                answer, conn = post(conn, self.port, self.path, body, headers, self.timeout_s)
                with self._lock:
                    self.answers.append(answer)
        finally:
            if conn is not None:
                conn.close()


class OpenLoop:
    """``n`` requests at ``rate`` per second over up to ``connections`` keep-alive
    connections (a request due while all are busy opens no new one: it waits, and the wait
    counts in its latency). A minimal HTTP/1.1 client on asyncio streams keeps the client's
    own cost per request small and steady."""

    def __init__(self, port: int, path: str, body: bytes, rate: float, n: int, connections: int = 16,
                 timeout_s: float = 10.0) -> None:
        if rate <= 0 or n < 1 or connections < 1:
            raise ValueError("OpenLoop: expected rate > 0, n >= 1 and connections >= 1")
        self.port, self.rate, self.n, self.connections, self.timeout_s = port, rate, n, connections, timeout_s
        self.request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def run(self) -> list[Answer]:
        return asyncio.run(self._main())

    async def _main(self) -> list[Answer]:
        idle: asyncio.Queue = asyncio.Queue()
        opened = []
        for _ in range(self.connections):
            pair = await asyncio.open_connection("127.0.0.1", self.port)
            opened.append(pair[1])
            idle.put_nowait(pair)
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        to_monotonic = time.monotonic() - loop.time()
        answers: list[Answer] = []

        async def one(due: float) -> None:
            pair = await idle.get()
            try:
                status, version, data = await asyncio.wait_for(self._exchange(*pair), self.timeout_s)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                answers.append(Answer(due + to_monotonic, time.monotonic(), 0, "", f"{type(exc).__name__}: {exc}".encode()))
                pair[1].close()
                pair = await asyncio.open_connection("127.0.0.1", self.port)
                opened.append(pair[1])
            else:
                answers.append(Answer(due + to_monotonic, time.monotonic(), status, version, b"" if status == 200 else data))
            idle.put_nowait(pair)

        tasks = []
        try:
            for i in range(self.n):
                due = start + i / self.rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(due)))
            await asyncio.gather(*tasks)
        finally:
            for writer in opened:
                writer.close()
            for writer in opened:
                try:
                    await writer.wait_closed()
                except OSError:
                    pass
        return answers

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, str, bytes]:
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(fields.get("content-length", "0")))
        return status, fields.get("x-sidemesh-version", ""), body
