"""Clients for the network properties: one kept-alive HTTP(S) connection per test, raw TCP
exchanges for the sidecar's own HTTP/1.1 server, and the check every answer must pass:
2xx, or a 4xx whose body is the documented ``{"error": "..."}``; never a 5xx."""

from __future__ import annotations

import http.client
import json
import socket
import ssl

import grpc
import httptools

from tests.model_server.models import ECHO_TYPES

__all__ = ["CALLER_CODES", "MODELS", "Session", "check_answer", "new_lines", "parse_responses", "raw_exchange"]

# The session's model server holds one echo model per V2 datatype and the tabular example.
MODELS = [f"echo_{t.lower()}" for t in ECHO_TYPES] + ["tabular"]
# gRPC codes a caller's mistake may get; INTERNAL and UNKNOWN are a server's own failures.
CALLER_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}


class Session:
    """One HTTP/1.1 connection, reused across examples and reopened when the server closed it."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None = None, server_hostname: str | None = None) -> None:
        self._args = (server_hostname or host, port)
        self._context = context
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._context is not None:
            return http.client.HTTPSConnection(*self._args, context=self._context, timeout=30)
        return http.client.HTTPConnection(*self._args, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                data = response.read()
                result = response.status, {k.lower(): v for k, v in response.getheaders()}, data
                if response.will_close:
                    self.close()
                return result
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()  # a kept-alive connection the server had closed: once more on a new one
                if attempt == 2:
                    raise
            except BaseException:
                self.close()  # a connection left half-way through a request is of no further use
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def check_answer(status: int, headers: dict, body: bytes, what: str = "") -> None:
    """2xx, or a 4xx with ``{"error": "<message>"}``; a 5xx (or any other shape) fails."""
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    if status >= 400:
        assert "json" in headers.get("content-type", ""), f"{what}: {status} with {headers.get('content-type')!r}: {body[:200]!r}"
        doc = json.loads(body)
        assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"].strip(), f"{what}: {status} {doc!r}"


class _Responses:
    def __init__(self) -> None:
        self.items: list[tuple[int, dict, bytes]] = []
        self._parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._headers, self._body = {}, b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.items.append((self._parser.get_status_code(), self._headers, self._body))


def parse_responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    """Every complete HTTP/1.1 response in ``data`` (which must be a valid response stream)."""
    responses = _Responses()
    responses._parser.feed_data(data)
    return responses.items


def raw_exchange(port: int, pieces: list[bytes], half_close: bool, timeout: float = 30.0) -> bytes:
    """Send ``pieces`` on a new connection and read until the server closes it. ``half_close``
    ends the request stream (for input that may leave the server waiting for more)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server refused and closed already: read what it said
        if half_close:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        out = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)


def new_lines(lines: list[str], since: int) -> str:
    return "".join(lines[since:])
