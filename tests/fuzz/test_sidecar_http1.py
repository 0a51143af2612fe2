"""The sidecar's own HTTP/1.1 server (``sidecar.http1``), driven through its asyncio
protocol with a recording transport: whatever bytes arrive, in whatever segments, it never
raises, answers only with complete HTTP/1.1 responses in request order (the handler's, or a
V2 ``{"error": ...}`` 400/413/431 that ends the connection, written last), and well-formed
requests reach the handler exactly as sent."""

from __future__ import annotations

import asyncio

import httptools
import orjson
from hypothesis import given
from hypothesis import strategies as st

from sidecar.http1 import HttpServer, Request, Response, ServerLimits, _Connection

from .counts import ran
from .http_inputs import damaged, requests, segments, serialize

# Small limits, so generated requests cross them.
LIMITS = ServerLimits(max_body_bytes=64, max_header_bytes=256, max_pipelined=3)
ERRORS = {400, 413, 431}


class _Transport(asyncio.Transport):
    """Records what the server writes and whether it asked to close or pause."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.paused = False
        self.written_after_close = b""

    def write(self, data) -> None:
        if self.closed:
            self.written_after_close += bytes(data)
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


async def _exchange(pieces: list[bytes]) -> tuple[_Transport, list[Request]]:
    seen: list[Request] = []

    async def echo(request: Request) -> Response:
        seen.append(request)
        return Response(200, [(b"content-type", b"application/octet-stream")], b"%d" % len(seen))

    conn = _Connection(HttpServer(echo, LIMITS))
    transport = _Transport()
    conn.connection_made(transport)
    for piece in pieces:
        if transport.closed:
            break
        conn.data_received(piece)  # must never raise
        for _ in range(1000):  # let every queued request be answered (each answer takes a few loop turns)
            if not conn.busy or transport.closed:
                break
            await asyncio.sleep(0)
        assert not conn.busy or transport.closed, "requests still unanswered after 1000 loop turns"
    for _ in range(100):
        if not conn.busy:
            break
        await asyncio.sleep(0)
    conn.connection_lost(None)
    return transport, seen


class _Responses:
    """httptools' response parser collecting (status, headers, body)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, dict, bytes]] = []
        self._parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._headers, self._body = {}, b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.items.append((self._parser.get_status_code(), self._headers, self._body))

    def feed(self, data: bytes) -> list[tuple[int, dict, bytes]]:
        self._parser.feed_data(data)
        return self.items


def _check_answers(transport: _Transport, seen: list[Request]) -> list[tuple[int, dict, bytes]]:
    assert not transport.written_after_close, f"wrote after closing: {bytes(transport.written_after_close)[:200]!r}"
    answers = _Responses().feed(bytes(transport.out))
    statuses = [status for status, _, _ in answers]
    assert all(s == 200 for s in statuses[:-1]) and (not statuses or statuses[-1] in ERRORS | {200}), statuses
    ok = [body for status, _, body in answers if status == 200]
    assert ok == [b"%d" % (i + 1) for i in range(len(ok))], "answers out of request order"
    assert len(ok) == len(seen), f"{len(seen)} requests reached the handler, {len(ok)} answers were written"
    if statuses and statuses[-1] in ERRORS:
        error = orjson.loads(answers[-1][2])
        assert isinstance(error["error"], str) and error["error"], error
        assert answers[-1][1].get(b"connection") == b"close" and transport.closed
    return answers


@given(st.lists(requests(), min_size=1, max_size=4).flatmap(
    lambda reqs: st.tuples(st.just(reqs), segments(b"".join(map(serialize, reqs))))))
def test_pipelined_requests_in_any_segments_reach_the_handler_as_sent(case):
    ran("sidecar.http1: round trip")
    sent, pieces = case
    transport, seen = asyncio.run(_exchange(pieces))
    answers = _check_answers(transport, seen)
    fits = [r for r in sent if len(r.body) <= LIMITS.max_body_bytes]
    if len(fits) < len(sent) or sum(len(serialize(r)) for r in sent) > 10**6:
        return  # a body over the limit ends the connection with a 413; the ones before it were answered
    assert [s for s, _, _ in answers] == [200] * len(sent)
    for request, got in zip(sent, seen):
        assert (got.method, got.target, got.body) == (request.method.encode(), request.target.encode(), request.body)
        assert got.headers == request.expected_headers()


@given(st.lists(requests(), min_size=1, max_size=3).flatmap(lambda reqs: damaged(b"".join(map(serialize, reqs))))
       .flatmap(lambda data: segments(data)))
def test_damaged_request_streams_get_ordered_answers_or_a_v2_error(pieces):
    ran("sidecar.http1: damaged streams")
    _check_answers(*asyncio.run(_exchange(pieces)))


@given(st.binary(max_size=300).flatmap(segments))
def test_arbitrary_bytes_get_ordered_answers_or_a_v2_error(pieces):
    ran("sidecar.http1: any bytes")
    _check_answers(*asyncio.run(_exchange(pieces)))


# --- regressions found by the properties above -------------------------------------------

def test_a_malformed_request_after_a_valid_one_is_refused_only_after_the_valid_one_is_answered():
    transport, seen = asyncio.run(_exchange([b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n\rET / HTTP/1.1\r\n\r\n"]))
    answers = _check_answers(transport, seen)
    assert [status for status, _, _ in answers] == [200, 400] and len(seen) == 1
    assert "malformed HTTP request" in orjson.loads(answers[1][2])["error"]


def test_a_request_asking_for_a_protocol_upgrade_never_reaches_the_handler():
    transport, seen = asyncio.run(_exchange([b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"]))
    answers = _check_answers(transport, seen)
    assert seen == [] and [status for status, _, _ in answers] == [400]
    assert "upgrades are not supported" in orjson.loads(answers[0][2])["error"]
