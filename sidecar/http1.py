"""A lean HTTP/1.1 server: asyncio protocol, httptools (llhttp) parser, bodies as bytes.

The sidecar answers every request from a complete body (V2 requests and answers are
bounded), so a request is parsed once into a ``Request`` (method, raw target, lower-cased
header pairs, body) and handed to one handler coroutine; the handler's ``Response`` is
written with ``Content-Length``. Nothing else is parsed. Pipelined requests are answered
in order. Errors the server itself raises (malformed request, body or headers too large,
draining) are V2-shaped JSON bodies that say why.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Awaitable, Callable

import httptools
import orjson

__all__ = ["Request", "Response", "ServerLimits", "HttpServer", "error_response", "HOP_BY_HOP"]

# Connection-scoped headers a proxy must not forward (RFC 9110 7.6.1), plus the framing
# the server rewrites itself.
HOP_BY_HOP = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
    b"te", b"trailer", b"transfer-encoding", b"upgrade", b"content-length",
))


class Request:
    """One parsed request. ``headers`` keep arrival order, names lower-case."""

    __slots__ = ("method", "target", "headers", "body", "keep_alive", "received")

    def __init__(self, method: bytes, target: bytes, headers: list, body: bytes, keep_alive: bool, received: float) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.received = received  # perf_counter() when the request was complete

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def path(self) -> bytes:
        return self.target.partition(b"?")[0]


class Response:
    """``headers`` must not hold hop-by-hop headers or Content-Length; the server adds them."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


_JSON = [(b"content-type", b"application/json")]


def error_response(status: int, message: str, headers: list | None = None) -> Response:
    """The V2 error shape, ``{"error": "..."}``."""
    return Response(status, _JSON + (headers or []), orjson.dumps({"error": message}))


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = 64 << 20
    max_header_bytes: int = 64 << 10
    idle_timeout_s: float = 75.0  # close keep-alive connections idle this long
    max_pipelined: int = 32  # stop reading a connection with this many requests waiting

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_header_bytes", "max_pipelined"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if not self.idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s: expected a positive number, got {self.idle_timeout_s}")


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode()
    return line


def encode_response(response: Response, keep_alive: bool, head_only: bool = False) -> bytes:
    parts = [_status_line(response.status)]
    for name, value in response.headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(response.body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(response.body)
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One client connection: parse, queue, answer in order."""

    def __init__(self, server: "HttpServer") -> None:
        self._server = server
        self._limits = server.limits
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[Request] = deque()
        self._busy = False
        self._closing = False
        self._paused = False
        self._error: Response | None = None  # the answer to a request the parser could not finish
        self.last_active = time.monotonic()
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: list = []
        self._header_bytes = 0
        self._body: list = []
        self._body_size = 0
        self._refused = False

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self._transport = transport
        self._server._connections.add(self)

    def connection_lost(self, exc) -> None:
        self._closing = True
        self._transport = None
        self._server._connections.discard(self)
        if self._server.draining:
            self._server._check_drained()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported; send HTTP/1.1 requests (gRPC goes to the gRPC port)")
        except httptools.HttpParserError as exc:
            if not self._refused:
                self._fail(400, f"malformed HTTP request: {exc}")

    # --- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._limits.max_header_bytes:
            self._refuse(431, f"request headers are larger than the limit of {self._limits.max_header_bytes} bytes")
            raise httptools.HttpParserError("headers too large")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            if name == b"content-length" and value.isdigit() and int(value) > self._limits.max_body_bytes:
                self._refuse(413, f"request body of {int(value)} bytes is larger than the limit of {self._limits.max_body_bytes} bytes")
                raise httptools.HttpParserError("body too large")
            if name == b"expect" and value.lower() == b"100-continue" and self._transport is not None:
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self._limits.max_body_bytes:
            self._refuse(413, f"request body is larger than the limit of {self._limits.max_body_bytes} bytes")
            raise httptools.HttpParserError("body too large")
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        if self._parser.should_upgrade():
            return  # refused with a 400 when the parser stops at the upgrade, never handled
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(
            self._parser.get_method(), self._url, self._headers, body, self._parser.should_keep_alive(), time.perf_counter(),
        )
        self._queue.append(request)
        if len(self._queue) >= self._limits.max_pipelined and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        if not self._busy:
            self._next()

    # --- answering ---------------------------------------------------------------------

    def _next(self) -> None:
        if not self._queue or self._closing:
            if self._error is not None:
                self._send_error()
            self._idle()
            return
        self._busy = True
        request = self._queue.popleft()
        if self._paused and self._transport is not None and len(self._queue) < self._limits.max_pipelined // 2:
            self._paused = False
            self._transport.resume_reading()
        if self._server.draining:
            self._respond(request, error_response(503, "the sidecar is shutting down; retry on another replica"), keep_alive=False)
            return
        task = asyncio.ensure_future(self._server.handler(request))
        task.add_done_callback(lambda t, r=request: self._done(r, t))

    def _done(self, request: Request, task: asyncio.Task) -> None:
        if task.cancelled():
            response = error_response(503, "the request was cancelled while the sidecar shut down")
        elif task.exception() is not None:
            exc = task.exception()
            self._server.on_handler_error(exc)
            response = error_response(500, f"internal sidecar error: {type(exc).__name__}: {exc}")
        else:
            response = task.result()
        self._respond(request, response, request.keep_alive and not self._server.draining)

    def _respond(self, request: Request, response: Response, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            self._idle()
            return
        transport.write(encode_response(response, keep_alive, request.method == b"HEAD"))
        self.last_active = time.monotonic()
        if not keep_alive:
            self._closing = True
            self._queue.clear()
            transport.close()
            self._idle()
            return
        self._next()

    def _idle(self) -> None:
        self._busy = False
        if self._server.draining:
            self._server._check_drained()

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request the parser cannot finish, then close (the stream is unusable)."""
        self._refused = True
        self._fail(status, message)

    def _fail(self, status: int, message: str) -> None:
        """Answer the requests that arrived before the broken one first (pipelining: answers
        go in request order), then the error, then close."""
        if self._transport is None or self._closing or self._error is not None:
            return
        self._error = error_response(status, message)
        if not self._busy:
            self._next()

    def _send_error(self) -> None:
        if self._transport is None or self._closing:
            return
        self._closing = True
        self._transport.write(encode_response(self._error, keep_alive=False))
        self._transport.close()

    def close_if_idle(self, now: float) -> None:
        if self._transport is not None and not self._busy and not self._queue and (
            self._server.draining or now - self.last_active > self._limits.idle_timeout_s
        ):
            self._closing = True
            self._transport.close()

    @property
    def busy(self) -> bool:
        return self._busy or bool(self._queue)


class HttpServer:
    """Serves ``handler`` on one address until ``drain()`` and ``close()``."""

    def __init__(self, handler: Handler, limits: ServerLimits = ServerLimits(),
                 on_handler_error: Callable[[BaseException], None] = lambda exc: None) -> None:
        self.handler = handler
        self.limits = limits
        self.on_handler_error = on_handler_error
        self.draining = False
        self._connections: set[_Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None
        self._drained: asyncio.Event | None = None

    async def start(self, host: str, port: int, backlog: int = 1024) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=backlog, reuse_address=True)
        self._sweeper = asyncio.ensure_future(self._sweep())
        return self._server.sockets[0].getsockname()[:2]

    async def _sweep(self) -> None:
        period = min(5.0, self.limits.idle_timeout_s / 2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self._connections):
                conn.close_if_idle(now)

    def in_flight(self) -> int:
        return sum(1 for c in self._connections if c.busy)

    async def drain(self, timeout_s: float) -> bool:
        """Answer what is in flight; refuse new requests with a V2 503 that says why (the
        listener stays open, so a client gets that answer rather than a refused connection)
        and close connections as they go idle. Waits at most ``timeout_s``; True when
        everything in flight was answered."""
        self.draining = True
        self._drained = asyncio.Event()
        now = time.monotonic()
        for conn in list(self._connections):
            conn.close_if_idle(now)
        self._check_drained()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    def _check_drained(self) -> None:
        if self._drained is not None and not any(c.busy for c in self._connections):
            self._drained.set()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            if conn._transport is not None:
                conn._transport.close()
        if self._server is not None:
            await self._server.wait_closed()
