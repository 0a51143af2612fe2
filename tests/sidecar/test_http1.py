"""The lean HTTP/1.1 layer: the inbound server (driven by raw sockets) and the upstream
pool (against aiohttp's server, a third-party peer)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from sidecar.errors import ConnectFailed, UpstreamTimeout
from sidecar.http1 import HttpServer, Request, Response, ServerLimits
from sidecar.upstream import UpstreamPool, encode_request
from tests.control_plane.peers import free_port


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def echo(request: Request) -> Response:
    doc = {"method": request.method.decode(), "target": request.target.decode(), "body": request.body.decode(),
           "headers": {k.decode(): v.decode() for k, v in request.headers}}
    return Response(200, [(b"content-type", b"application/json")], json.dumps(doc).encode())


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    status_line = await reader.readline()
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return int(status_line.split()[1]), headers, body


async def _server(handler=echo, **limits) -> tuple[HttpServer, int]:
    server = HttpServer(handler, ServerLimits(**limits))
    _, port = await server.start("127.0.0.1", 0)
    return server, port


def test_pipelined_requests_are_answered_in_order_on_one_connection():
    async def main():
        server, port = await _server()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(b"POST /r%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % (i, i) for i in range(5)))
        answers = [await read_response(reader) for _ in range(5)]
        writer.close()
        await server.close()
        return answers

    answers = run(main())
    assert [json.loads(body)["target"] for _, _, body in answers] == [f"/r{i}" for i in range(5)]
    assert [json.loads(body)["body"] for _, _, body in answers] == [str(i) for i in range(5)]


def test_a_chunked_body_arrives_whole_and_header_names_are_lower_case():
    async def main():
        server, port = await _server()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nX-Mixed-Case: v\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        answer = await read_response(reader)
        writer.close()
        await server.close()
        return answer

    status, _, body = run(main())
    doc = json.loads(body)
    assert status == 200 and doc["body"] == "abcde" and doc["headers"]["x-mixed-case"] == "v"


@pytest.mark.parametrize("raw, status, words", [
    (b"GARBAGE\r\n\r\n", 400, "malformed HTTP request"),
    (b"POST /x HTTP/1.1\r\nContent-Length: 100\r\n\r\n", 413, "larger than the limit of 10 bytes"),
    (b"GET /x HTTP/1.1\r\nX-Big: " + b"a" * 300 + b"\r\n\r\n", 431, "headers are larger than the limit of 256 bytes"),
    (b"GET /x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", 400, "upgrades are not supported"),
])
def test_requests_the_server_cannot_take_get_a_v2_error_saying_why(raw, status, words):
    async def main():
        server, port = await _server(max_body_bytes=10, max_header_bytes=256)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        answer = await read_response(reader)
        closed = await reader.read() == b""
        writer.close()
        # the server still serves new connections
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        after = await read_response(reader)
        writer.close()
        await server.close()
        return answer, closed, after

    (got, headers, body), closed, after = run(main())
    assert got == status and words in json.loads(body)["error"] and headers["connection"] == "close" and closed
    assert after[0] == 200


def test_a_handler_that_raises_gives_a_500_and_the_connection_keeps_serving():
    async def handler(request: Request) -> Response:
        if request.target == b"/boom":
            raise RuntimeError("kaput")
        return await echo(request)

    async def main():
        server, port = await _server(handler)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [await read_response(reader) for _ in range(2)]
        writer.close()
        await server.close()
        return answers

    (s1, _, b1), (s2, _, _) = run(main())
    assert s1 == 500 and "RuntimeError: kaput" in json.loads(b1)["error"] and s2 == 200


def test_drain_finishes_requests_in_flight_and_refuses_new_ones_with_a_503():
    async def main():
        release = asyncio.Event()
        started = asyncio.Event()

        async def slow(request: Request) -> Response:
            started.set()
            await release.wait()
            return Response(200, [], b"done")

        server, port = await _server(slow)
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await started.wait()
        drained = asyncio.ensure_future(server.drain(10))
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"GET /new HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = await read_response(r2)
        assert not drained.done()
        release.set()
        finished = await read_response(r1)
        ok = await drained
        w1.close()
        w2.close()
        await server.close()
        return refused, finished, ok

    (s_new, h_new, b_new), (s_old, h_old, b_old), ok = run(main())
    assert s_new == 503 and "shutting down" in json.loads(b_new)["error"] and h_new["connection"] == "close"
    assert s_old == 200 and b_old == b"done" and h_old["connection"] == "close" and ok


# --- the upstream pool, against aiohttp ---------------------------------------------------


async def _aiohttp(routes) -> tuple[web.AppRunner, int]:
    app = web.Application(client_max_size=64 << 20)
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def _get(port: int, path: bytes = b"/", body: bytes = b"") -> bytes:
    return encode_request(b"POST" if body else b"GET", path, [(b"host", b"127.0.0.1:%d" % port)], [], body, frozenset())


def test_the_pool_reuses_connections_and_survives_the_upstream_closing_idle_ones():
    async def hello(request):
        return web.Response(body=b"hi " + await request.read())

    async def main():
        runner, port = await _aiohttp([web.post("/", hello), web.get("/", hello)])
        pool = UpstreamPool()
        first = [await pool.request("127.0.0.1", port, _get(port, body=b"%d" % i), 5) for i in range(20)]
        connects_warm = pool.connects_total
        await asyncio.sleep(0.5)  # longer than aiohttp's keep-alive timeout: it closes the idle connection
        later = await pool.request("127.0.0.1", port, _get(port, body=b"x"), 5)
        pool.close()
        await runner.cleanup()
        return first, connects_warm, later, pool.connects_total

    first, warm, later, total = run(main())
    assert [r.body for r in first] == [b"hi %d" % i for i in range(20)] and warm == 1
    assert later.status == 200 and later.body == b"hi x" and total == 2


def test_the_pool_reports_connect_failures_and_timeouts_as_distinct_errors():
    async def slow(request):
        await asyncio.sleep(0.6)  # longer than the pool's 0.2 s timeout; aiohttp's cleanup waits it out
        return web.Response(body=b"late")

    async def main():
        runner, port = await _aiohttp([web.get("/", slow)])
        pool = UpstreamPool()
        with pytest.raises(ConnectFailed, match="cannot connect to 127.0.0.1:"):
            await pool.request("127.0.0.1", free_port(), _get(1), 5)
        with pytest.raises(UpstreamTimeout, match="did not answer within 0.2 s"):
            await pool.request("127.0.0.1", port, _get(port), 0.2)
        pool.close()
        await runner.cleanup()

    run(main())


def test_large_bodies_pass_both_ways_and_the_response_limit_holds():
    payload = bytes(range(256)) * 40_000  # 10 MB

    async def mirror(request):
        return web.Response(body=await request.read())

    async def main():
        runner, port = await _aiohttp([web.post("/", mirror)])
        pool = UpstreamPool(max_body_bytes=len(payload))
        big = await pool.request("127.0.0.1", port, _get(port, body=payload), 30)
        small = UpstreamPool(max_body_bytes=1000)
        with pytest.raises(Exception, match="over the limit of 1000 bytes"):
            await small.request("127.0.0.1", port, _get(port, body=b"x" * 2000), 30)
        pool.close()
        small.close()
        await runner.cleanup()
        return big

    assert run(main()).body == payload
