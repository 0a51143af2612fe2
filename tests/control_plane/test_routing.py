from __future__ import annotations

import pytest

from control_plane.errors import ValidationError
from control_plane.routing import Backend, Mirror, Route

ONE = [{"version": "v1", "weight": 100}]
WITH_SHADOW = [{"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}]


def rejected_field(doc) -> str:
    with pytest.raises(ValidationError) as info:
        Route.from_dict("m", doc)
    assert str(info.value).startswith(f"{info.value.field}: ")
    return info.value.field


@pytest.mark.parametrize("doc, field", [
    pytest.param({"backends": [{"version": "v1", "weight": -1}]}, "backends[0].weight", id="negative weight"),
    pytest.param({"backends": [{"version": "v1", "weight": 1.5}]}, "backends[0].weight", id="fractional weight"),
    pytest.param({"backends": [{"version": "v1", "weight": 0}, {"version": "v2", "weight": 0}]}, "backends", id="all weights zero"),
    pytest.param({"backends": []}, "backends", id="no backends"),
    pytest.param({}, "backends", id="backends missing"),
    pytest.param({"backends": ONE, "mirrors": [{"version": "v9", "percent": 5}]}, "mirrors[0].version", id="unknown mirror backend"),
    pytest.param({"backends": WITH_SHADOW, "mirrors": [{"version": "v2", "percent": 0}]}, "mirrors[0].percent", id="mirror percent 0"),
    pytest.param({"backends": WITH_SHADOW, "mirrors": [{"version": "v2", "percent": 100.5}]}, "mirrors[0].percent", id="mirror percent 100.5"),
    pytest.param({"backends": WITH_SHADOW, "mirrors": [{"version": "v1", "percent": 5}]}, "mirrors[0].version", id="mirror on a weighted backend"),
    pytest.param({"backends": WITH_SHADOW, "mirrors": [{"version": "v2", "percent": 5}, {"version": "v2", "percent": 1}]},
                 "mirrors[1].version", id="mirrored twice"),
    pytest.param({"backends": [*ONE, {"version": "v1", "weight": 5}]}, "backends[1].version", id="duplicate backend"),
    pytest.param({"backends": [{"version": "v1", "weight": 1, "endpoints": ["no-port"]}]}, "backends[0].endpoints[0]", id="endpoint without port"),
    pytest.param({"backends": [{"version": "v1", "weight": 1, "endpoints": ["h:1", "h:70000"]}]}, "backends[0].endpoints[1]", id="endpoint port too big"),
    pytest.param({"backends": ONE, "colour": "red"}, "colour", id="unknown top-level field"),
    pytest.param({"backends": [{"version": "v1", "weight": 1, "wieght": 2}]}, "backends[0].wieght", id="unknown backend field"),
    pytest.param({"backends": ONE, "retry": {"tries": 3}}, "retry.tries", id="unknown retry field"),
    pytest.param({"backends": ONE, "retry": {"on": ["5xx", "sometimes"]}}, "retry.on[1]", id="bad retry condition"),
    pytest.param({"backends": ONE, "retry": {"attempts": 11}}, "retry.attempts", id="too many attempts"),
    pytest.param({"backends": ONE, "sticky_key": "X User"}, "sticky_key", id="bad sticky key"),
    pytest.param({"backends": ONE, "timeout_ms": 0}, "timeout_ms", id="zero timeout"),
    pytest.param({"backends": ONE, "sidecar": {"stats_sample": 2}}, "sidecar.stats_sample", id="sample share above 1"),
    pytest.param({"backends": [{"version": "v 1", "weight": 1}]}, "backends[0].version", id="bad version name"),
])
def test_an_invalid_document_is_rejected_naming_the_field(doc, field):
    assert rejected_field(doc) == field


def test_a_bad_model_name_is_rejected():
    with pytest.raises(ValidationError) as info:
        Route.from_dict("no/slash", {"backends": ONE})
    assert info.value.field == "model"


def test_a_document_round_trips_through_from_dict_and_to_dict():
    doc = {
        "backends": [{"version": "v1", "weight": 90, "endpoints": ["10.0.0.1:8000", "[::1]:9000"]},
                     {"version": "v2", "weight": 10}, {"version": "v3", "weight": 0}],
        "mirrors": [{"version": "v3", "percent": 2.5}],
        "sticky_key": "x-user",
        "timeout_ms": 5000,
        "retry": {"attempts": 3, "per_try_timeout_ms": 1000, "on": ["5xx", "reset"]},
        "sidecar": {"stats_sample": 0.1, "compare": False},
    }
    route = Route.from_dict("tabular", doc)
    assert route.to_dict() == doc
    assert Route.from_dict("tabular", route.to_dict()) == route


def test_omitted_fields_take_their_defaults():
    route = Route.from_dict("m", {"backends": ONE})
    assert (route.mirrors, route.sticky_key, route.timeout_ms) == ((), None, 30_000)
    assert route.retry.attempts == 1 and route.sidecar.compare is True


def test_a_fractional_mirror_percent_is_accepted():
    route = Route.from_dict("m", {"backends": WITH_SHADOW, "mirrors": [{"version": "v2", "percent": 0.5}]})
    assert route.mirrors == (Mirror("v2", 0.5),)
    assert route.to_dict()["mirrors"] == [{"version": "v2", "percent": 0.5}]


def test_weights_map_each_version_to_its_weight():
    route = Route("m", (Backend("v1", 90), Backend("v2", 10), Backend("v3", 0)))
    assert route.weights == {"v1": 90, "v2": 10, "v3": 0}
