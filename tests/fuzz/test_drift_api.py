"""The drift detector's HTTP API parsers: reference uploads (``InputStats`` protobuf or V2
JSON tensors), ``?limit=`` and the report page's query string: any input is accepted or
refused with ``InvalidInput``/``SketchError`` (a 400 naming the field)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from drift import api
from drift.errors import InvalidInput, SketchError
from drift.report import ReportQuery

from .counts import ran
from .oracle import parse_or_refuse
from .stats_inputs import input_stats, valid_input_stats
from .v2_inputs import v2_bodies

_PROTOBUF = st.sampled_from(["application/x-protobuf", "application/protobuf", "application/octet-stream"])
_BODIES = st.one_of(
    st.tuples(input_stats().map(lambda m: m.SerializeToString()), _PROTOBUF),
    st.tuples(valid_input_stats().map(lambda m: m.SerializeToString()), _PROTOBUF),
    st.tuples(st.binary(max_size=200), _PROTOBUF | st.sampled_from(["text/csv", "", "application/json"])),
    st.tuples(v2_bodies().map(lambda case: case[0]), st.just("application/json")),
)
_QUERY_TEXT = st.text(max_size=6) | st.integers(-3, 20000).map(str) | st.sampled_from(["²", "٣", "0" * 5000 + "7", "1e3", " 5"])


class _Query:
    def __init__(self, limit: str | None) -> None:
        self.query = MultiDict() if limit is None else MultiDict(limit=limit)


@given(_BODIES, st.none() | st.sampled_from(["x", "y", ""]))
def test_any_reference_upload_is_statistics_or_a_400_naming_the_field(case, input_name):
    ran("drift API: PUT /v1/references body")
    body, content_type = case
    refs = parse_or_refuse(lambda: api._parse_reference(body, content_type, "m", "1", input_name), (InvalidInput, SketchError))
    for sketch in (refs or {}).values():
        sketch.to_proto("m", "1", "x").SerializeToString()


@given(st.none() | _QUERY_TEXT)
def test_any_limit_is_a_number_in_range_or_a_400(text):
    ran("drift API: ?limit=")
    limit = parse_or_refuse(lambda: api._limit(_Query(text)), InvalidInput)
    assert limit is None or 1 <= limit <= 10000


@given(st.lists(st.tuples(st.sampled_from(["version", "features", "limit", "history", "window"]) | st.text(max_size=4),
                          _QUERY_TEXT | st.sampled_from(["open", "evaluated", "1", "a,b", ",", ""])), max_size=5))
def test_any_report_query_string_parses_or_is_a_400(pairs):
    ran("drift API: /report query")
    parse_or_refuse(lambda: ReportQuery.parse(MultiDict(pairs)), InvalidInput)


# --- regressions found by the properties above -------------------------------------------

@pytest.mark.parametrize("text", ["²", "0" * 5000 + "7"])
def test_a_limit_of_digits_int_cannot_read_is_a_400(text):
    with pytest.raises(InvalidInput, match="^limit: expected a whole number 1-10000"):
        api._limit(_Query(text))
    with pytest.raises(InvalidInput, match="^history: expected a whole number 1-1000"):
        ReportQuery.parse(MultiDict(history=text))
