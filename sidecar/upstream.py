"""Pooled HTTP/1.1 connections to upstreams (the local model server, other sidecars).

A call writes one pre-encoded request and waits for one complete response; connections
are kept per (host, port) and reused last-in first-out, so a warm pool costs no connect
and no handshake per request. A connection that the upstream closed while idle is noticed
when the next call on it fails before any byte of response, and that call is re-sent once
on a fresh connection (the request never reached the model).
"""

from __future__ import annotations

import asyncio
import errno
import time

import httptools

from .errors import ConnectFailed, UpstreamReset, UpstreamTimeout

__all__ = ["UpstreamResponse", "UpstreamPool", "encode_request"]


class UpstreamResponse:
    __slots__ = ("status", "headers", "body", "elapsed")

    def __init__(self, status: int, headers: list, body: bytes, elapsed: float) -> None:
        self.status = status
        self.headers = headers  # (lower-case name, value) pairs
        self.body = body
        self.elapsed = elapsed  # seconds from write to complete response

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def encode_request(method: bytes, target: bytes, headers, extra, body: bytes, skip: frozenset) -> bytes:
    """Request head and body in one buffer. ``headers`` are forwarded except names in
    ``skip`` (hop-by-hop ones and those ``extra`` replaces)."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if name not in skip:
            parts += (name, b": ", value, b"\r\n")
    for name, value in extra:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"content-length: %d\r\n\r\n" % len(body))
    parts.append(body)
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: "UpstreamPool", key: tuple[str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self._received = False
        self._head_only = False
        self.reusable = True
        self._headers: list = []
        self._body: list = []
        self._size = 0
        self._started = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._pool._open.add(self)

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.reusable = False
        self._pool._open.discard(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if not self._received:
                waiter.set_exception(_Unanswered(f"{self.key[0]}:{self.key[1]} closed the connection before answering"))
            else:
                detail = f": {exc}" if exc else ""
                waiter.set_exception(UpstreamReset(f"{self.key[0]}:{self.key[1]} closed the connection mid-answer{detail}"))

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._abort(UpstreamReset(f"{self.key[0]}:{self.key[1]} sent a malformed response: {exc}"))

    def send(self, data: bytes, head_only: bool) -> asyncio.Future:
        self._waiter = self._pool.loop.create_future()
        self._received = False
        self._head_only = head_only
        self._headers = []
        self._body = []
        self._size = 0
        self._started = time.perf_counter()
        self.transport.write(data)
        return self._waiter

    def _abort(self, exc: Exception) -> None:
        self.reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # --- httptools callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 100:
            self._headers = []
            return
        if self._head_only:
            # llhttp cannot be told the response to HEAD has no body: finish here and
            # never reuse the connection.
            self.reusable = False
            self._finish()
            if self.transport is not None:
                self.transport.close()

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._pool.max_body_bytes:
            self._abort(UpstreamReset(f"{self.key[0]}:{self.key[1]} answered with a body over the limit of {self._pool.max_body_bytes} bytes"))
            return
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() == 100:
            return
        if not self._parser.should_keep_alive():
            self.reusable = False
        self._finish()

    def _finish(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        waiter.set_result(UpstreamResponse(self._parser.get_status_code(), self._headers, body, time.perf_counter() - self._started))


class _Unanswered(UpstreamReset):
    """The connection closed before any byte of the response (an idle close raced us)."""


class UpstreamPool:
    """Keep-alive connections to any number of upstreams."""

    def __init__(self, max_idle_per_upstream: int = 256, max_body_bytes: int = 64 << 20) -> None:
        self.loop = asyncio.get_event_loop()
        self.max_idle = max_idle_per_upstream
        self.max_body_bytes = max_body_bytes
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()  # idle or busy, until the connection is lost
        self.connects_total = 0

    async def _connect(self, key: tuple[str, int], connect_timeout: float, remaining: float) -> _Connection:
        """A new connection. When the request's own time runs out first, that is the
        request timing out (UpstreamTimeout), not a connect failure."""
        timeout = min(connect_timeout, remaining)
        try:
            async with asyncio.timeout(timeout):
                _, conn = await self.loop.create_connection(lambda: _Connection(self, key), key[0], key[1])
        except TimeoutError:
            if remaining <= connect_timeout:
                raise UpstreamTimeout(f"{key[0]}:{key[1]} did not answer within {remaining:g} s (still connecting)") from None
            raise ConnectFailed(f"connecting to {key[0]}:{key[1]} timed out after {timeout:g} s") from None
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno, "") if exc.errno else ""
            raise ConnectFailed(f"cannot connect to {key[0]}:{key[1]}: {reason or exc.strerror or exc}") from None
        self.connects_total += 1
        return conn

    async def request(self, host: str, port: int, data: bytes, timeout: float, connect_timeout: float = 1.0,
                      head_only: bool = False) -> UpstreamResponse:
        """Send ``data`` (from ``encode_request``) and return the complete response.
        Raises ``ConnectFailed``, ``UpstreamReset`` or ``UpstreamTimeout``."""
        key = (host, port)
        idle = self._idle.get(key)
        conn = None
        while idle:
            candidate = idle.pop()
            if candidate.transport is not None and candidate.reusable:
                conn = candidate
                break
        reused = conn is not None
        deadline = self.loop.time() + timeout
        if conn is None:
            conn = await self._connect(key, connect_timeout, timeout)
        while True:
            waiter = conn.send(data, head_only)
            timer = self.loop.call_at(deadline, _expire, conn, waiter, timeout)
            try:
                response = await waiter
            except _Unanswered:
                if not reused:
                    raise
                reused = False  # a stale idle connection: once more on a fresh one
                conn = await self._connect(key, connect_timeout, max(deadline - self.loop.time(), 0.001))
                continue
            finally:
                timer.cancel()
            break
        if conn.reusable and conn.transport is not None:
            bucket = self._idle.setdefault(key, [])
            if len(bucket) < self.max_idle:
                bucket.append(conn)
            else:
                conn.transport.close()
        elif conn.transport is not None:
            conn.transport.close()
        return response

    def close(self) -> None:
        """Close every connection, idle or busy (a call still waiting gets UpstreamReset)."""
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()

    async def aclose(self) -> None:
        """``close()``, then one loop turn so the transports finish closing (their
        connection_lost runs) before the loop may end."""
        self.close()
        await asyncio.sleep(0)


def _expire(conn: _Connection, waiter: asyncio.Future, timeout: float) -> None:
    if not waiter.done():
        conn._abort(UpstreamTimeout(f"{conn.key[0]}:{conn.key[1]} did not answer within {timeout:g} s"))
