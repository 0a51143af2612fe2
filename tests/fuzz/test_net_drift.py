"""The drift detector over the network (a real ``sidemesh drift``): reference uploads,
capture requests, window closes, evaluation and report queries get a 2xx or a 4xx
``{"error": ...}``, never a 5xx; every report or garbage message on the stats stream gets an
ack (applied, or the reason it was refused) on the same stream; checkpoints run throughout,
and the process stays healthy, logs no traceback and exits cleanly."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from drift.proto import stats_pb2 as pb
from tests.drift.peers import DriftProcess, StatsStream

from .budget import network
from .counts import ran
from .json_values import EDGE_SCALARS, encode, json_values
from .net import Session, check_answer, new_lines
from .stats_inputs import input_stats, reports, valid_input_stats
from .v2_inputs import v2_bodies

_NAMES = st.sampled_from(["m", "1", "2"]) | st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=5)
# Kept under aiohttp's 8,190-byte request line (its own plain-text 400 answers longer ones).
_QUERY = st.text(max_size=6) | st.integers(-3, 20000).map(str) | st.sampled_from(["²", "0" * 50 + "7", "1e3", "true", "1"])


@pytest.fixture(scope="module")
def drift(tmp_path_factory):
    proc = DriftProcess(tmp_path_factory.mktemp("drift") / "state.db",
                        ["--window-rows", "40", "--min-rows", "5", "--checkpoint-interval", "0.2"]).start()
    session = Session("127.0.0.1", proc.port)
    try:
        yield proc, session
        status, _, body = session.request("GET", "/healthz/ready")
        assert status == 200, body
    finally:
        session.close()
        code = proc.stop()
    assert code == 0 and "Traceback" not in new_lines(proc.lines, 0), new_lines(proc.lines, 0)


@network(30)
@given(_NAMES, _NAMES, st.none() | st.sampled_from(["x", "y", ""]), st.one_of(
    st.tuples(valid_input_stats().map(lambda m: m.SerializeToString()), st.just("application/x-protobuf")),
    st.tuples(input_stats().map(lambda m: m.SerializeToString()), st.just("application/octet-stream")),
    st.tuples(v2_bodies().map(lambda c: c[0]), st.just("application/json")),
    st.tuples(st.binary(max_size=100), st.sampled_from(["application/x-protobuf", "text/csv", "application/json"]))))
def test_any_reference_upload_gets_a_2xx_or_a_4xx_error(drift, model, version, input_name, case):
    ran("drift HTTP: PUT /v1/references")
    _, session = drift
    body, content_type = case
    path = f"/v1/references/{quote(model, safe='')}/{quote(version, safe='')}" + (
        f"?input={quote(input_name)}" if input_name is not None else "")
    status, headers, data = session.request("PUT", path, body, {"Content-Type": content_type})
    check_answer(status, headers, data, f"PUT {path}")


@network(30)
@given(_NAMES, st.one_of(st.fixed_dictionaries({"rows": EDGE_SCALARS | st.integers()}).map(encode),
                         json_values().map(encode), st.binary(max_size=20), st.just(b"")), _QUERY, _QUERY)
def test_any_capture_close_or_query_gets_a_2xx_or_a_4xx_error(drift, model, capture, wait, limit):
    ran("drift HTTP: capture, windows, queries")
    _, session = drift
    m = quote(model, safe="")
    for method, path, body in (("POST", f"/v1/references/{m}/1/capture", capture),
                               ("POST", f"/v1/windows/close?wait={quote(wait)}", None),
                               ("GET", f"/v1/models/{m}/versions/1/evaluations?limit={quote(limit)}", None),
                               ("GET", f"/v1/alerts?limit={quote(limit)}", None),
                               ("GET", f"/report/{m}?history={quote(limit)}&window={quote(wait)}", None)):
        status, headers, data = session.request(method, path, body, {"Content-Type": "application/json"})
        if not path.startswith("/report") or status >= 400:  # the report page is HTML
            check_answer(status, headers, data, f"{method} {path}")


@pytest.fixture(scope="module")
def stream(drift):
    proc, _ = drift
    with StatsStream(proc.stats_port) as stream:
        yield stream


@network(40)
@given(st.lists(reports().map(lambda r: r.SerializeToString()) | st.binary(max_size=60), min_size=1, max_size=4))
def test_every_message_on_the_stats_stream_gets_an_ack_on_the_same_stream(stream, messages):
    ran("drift gRPC: StatsService/Report messages")
    acks = stream.send(*messages)
    assert len(acks) == len(messages)
    for ack, data in zip(acks, messages):
        assert isinstance(ack, pb.ReportAck)
        try:
            report = pb.StatsReport.FromString(data)
        except DecodeError:
            assert ack.error.startswith("not a sidemesh.drift.v1.StatsReport message"), ack
        else:
            assert ack.error or ack.sequence == report.sequence


# --- regressions found by the properties above -------------------------------------------

@pytest.mark.parametrize("rows", [2**63, 2**40 + 1])
def test_a_capture_of_more_rows_than_the_store_can_count_is_a_400(drift, rows):
    _, session = drift
    status, headers, data = session.request("POST", "/v1/references/m/9/capture", encode({"rows": rows}),
                                            {"Content-Type": "application/json"})
    check_answer(status, headers, data)
    assert status == 400 and b"rows: expected a whole number of rows from 1 to 2**40" in data
