"""The control plane's route documents (``Route.from_dict`` behind ``PUT /v1/routes/{model}``,
with the admin API's body and query parsing): any body is accepted or refused with a
``ValidationError`` naming the field; what is accepted round-trips through JSON and the
store, and always builds into the xDS resources the control plane publishes."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane import admin
from control_plane.errors import ValidationError
from control_plane.routing import Route
from control_plane.snapshot import SharedResources
from control_plane.store import RouteStore

from .budget import share
from .counts import ran
from .json_values import deeply_nested, edge_variants, encode, json_values, mutated
from .oracle import noted, parse_or_refuse
from .route_inputs import NAMES, route_documents

_MODELS = NAMES | st.sampled_from(["", "a/b", "a b", "x" * 64, "é", "..", "-m"])


class _Body:
    """What ``admin.json_body`` reads from an aiohttp request."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self) -> bytes:
        return self._data


def _put(model: str, body: bytes) -> Route | None:
    async def parse() -> Route:
        return Route.from_dict(model, await admin.json_body(_Body(body)))

    route = parse_or_refuse(lambda: asyncio.run(parse()), ValidationError)
    if route is not None:  # whatever is accepted must publish
        SharedResources.build(1, {route.model: route}, {})
    return route


def _field_named(exc: ValidationError) -> None:
    assert str(exc).startswith(f"{exc.field}: ") if exc.field else str(exc)


@given(_MODELS, st.one_of(mutated(route_documents()).map(encode), json_values().map(encode), st.binary(max_size=64),
                          deeply_nested(max_depth=5000)))
def test_any_put_body_is_a_route_or_a_validation_error_naming_the_field(model, body):
    ran("control_plane: PUT /v1/routes body")
    try:
        _put(model, body)
    except ValidationError as exc:  # pragma: no cover - parse_or_refuse returns None instead
        _field_named(exc)


@share(40)
@given(route_documents())
def test_every_field_set_to_every_edge_value_is_accepted_or_refused_naming_that_field(doc):
    for change, variant in edge_variants(doc):
        ran("control_plane: Route.from_dict edge sweep")
        with noted(change):
            try:
                Route.from_dict("m", json.loads(encode(variant)))
            except ValidationError as exc:
                _field_named(exc)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = RouteStore(tmp_path_factory.mktemp("routes") / "routes.db")
    yield store
    store.close()


@given(NAMES, route_documents())
def test_valid_documents_round_trip_through_json_and_the_store(store, model, doc):
    ran("control_plane: Route round trip")
    route = Route.from_dict(model, json.loads(json.dumps(doc)))
    assert Route.from_dict(model, json.loads(json.dumps(route.to_dict()))) == route
    store.put(route, "fuzz")
    assert store.get(model)[0] == route
    SharedResources.build(1, {model: route}, {})


@given(st.text(max_size=8) | st.integers(-5, 2000).map(str) | st.sampled_from(["٣", "²", "1_0", " 7 ", "0" * 5000 + "1"]))
def test_any_history_limit_is_a_number_in_range_or_a_validation_error(text):
    ran("control_plane: ?limit=")
    limit = parse_or_refuse(lambda: admin._limit(text), ValidationError)
    assert limit is None or 1 <= limit <= admin.MAX_HISTORY


# --- regressions found by the properties above -------------------------------------------

def test_a_mirror_percent_too_large_for_a_float_is_refused_naming_the_field():
    doc = json.loads(json.dumps({"backends": [{"version": "a", "weight": 1}, {"version": "b", "weight": 0}],
                                 "mirrors": [{"version": "b", "percent": 10**400}]}))
    with pytest.raises(ValidationError, match=r"^mirrors\[0\]\.percent: expected a number greater than 0 and at most 100"):
        Route.from_dict("m", doc)


def test_a_body_nested_past_the_recursion_limit_is_refused_as_invalid_json():
    with pytest.raises(ValidationError, match="the request body is not valid JSON .*send a route document such as"):
        asyncio.run(admin.json_body(_Body(b"[" * 100_000)))
