"""HTTP/1.1 request streams for the sidecar's server: well-formed requests (any method,
target, header set, body, Content-Length or chunked framing), pipelined, cut into arbitrary
segments the way TCP may deliver them, and the same streams with bytes flipped, dropped or
inserted."""

from __future__ import annotations

import string
from dataclasses import dataclass

from hypothesis import strategies as st

__all__ = ["HttpRequest", "damaged", "requests", "segments", "serialize"]

_TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
_FRAMING = {"content-length", "transfer-encoding", "connection", "upgrade", "expect", "te", "trailer", "keep-alive"}
TOKENS = st.text(_TCHAR, min_size=1, max_size=10)
FIELD_VALUES = st.text(string.ascii_letters + string.digits + " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\t", max_size=16).map(
    lambda v: v.strip(" \t"))
TARGETS = st.text(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/%?", max_size=24).map(lambda p: "/" + p)


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]  # as sent; framing added by ``serialize``
    body: bytes
    chunks: tuple[int, ...] | None  # chunk sizes when chunked, else None (Content-Length)

    def expected_headers(self) -> list[tuple[bytes, bytes]]:
        framing = ("Transfer-Encoding", "chunked") if self.chunks is not None else ("Content-Length", str(len(self.body)))
        return [(n.lower().encode(), v.encode()) for n, v in (*self.headers, framing)]


@st.composite
def requests(draw, max_body: int = 96) -> HttpRequest:
    # HEAD is left out: its answer has a Content-Length but no body, which a stream parser
    # cannot tell without pairing answers with requests.
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]) | TOKENS.map(str.upper).filter(
        lambda m: m in ("GET", "POST", "PUT")))
    headers = draw(st.lists(st.tuples(TOKENS.filter(lambda n: n.lower() not in _FRAMING), FIELD_VALUES), max_size=4))
    body = draw(st.binary(max_size=max_body))
    chunks = None
    if draw(st.booleans()):
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
        chunks = tuple(b - a for a, b in zip([0, *cuts], [*cuts, len(body)]) if b > a)
    return HttpRequest(method, draw(TARGETS), tuple(headers), body, chunks)


def serialize(request: HttpRequest) -> bytes:
    lines = [f"{request.method} {request.target} HTTP/1.1".encode()]
    lines += [f"{n}: {v}".encode() for n, v in request.headers]
    if request.chunks is None:
        lines.append(b"Content-Length: %d" % len(request.body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + request.body
    lines.append(b"Transfer-Encoding: chunked")
    out, offset = [b"\r\n".join(lines) + b"\r\n\r\n"], 0
    for size in request.chunks:
        out.append(b"%x\r\n%s\r\n" % (size, request.body[offset:offset + size]))
        offset += size
    out.append(b"0\r\n\r\n")
    return b"".join(out)


@st.composite
def segments(draw, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points, as TCP may deliver it."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)]) if b > a] or [data]


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` with a few bytes replaced, removed or inserted (CR, LF, ':' and digits
    often, where they change the framing)."""
    buf = bytearray(data)
    special = st.sampled_from(list(b"\r\n: 0123456789abcdefxX;\t\x00\x7f\xff-+"))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(buf)))
        byte = draw(special | st.integers(0, 255))
        action = draw(st.sampled_from(["replace", "remove", "insert"]))
        if action == "insert" or not buf or at == len(buf):
            buf.insert(at, byte)
        elif action == "replace":
            buf[at] = byte
        else:
            del buf[at]
    return bytes(buf)
