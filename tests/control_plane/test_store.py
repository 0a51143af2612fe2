from __future__ import annotations

import pytest

from control_plane.errors import Conflict, NotFound
from control_plane.routing import Route
from control_plane.store import RouteStore


def split(model: str, **weights: int) -> Route:
    return Route.from_dict(model, {"backends": [{"version": v, "weight": w} for v, w in weights.items()]})


@pytest.fixture
def store():
    store = RouteStore(":memory:")
    yield store
    store.close()


def test_an_empty_store_has_version_zero_and_no_routes(store):
    assert store.version == 0
    assert store.routes() == {}
    with pytest.raises(NotFound):
        store.get("m")


def test_versions_increase_monotonically_across_models(store):
    versions = [store.put(split("a", v1=1), "alice").version,
                store.put(split("b", v1=1), "alice").version,
                store.put(split("a", v1=1, v2=1), "alice").version,
                store.delete("b", "alice").version]
    assert versions == sorted(set(versions))
    assert store.version == versions[-1]
    assert {model: version for model, (_, version) in store.routes().items()} == {"a": versions[2]}


def test_history_keeps_every_change_with_its_author_and_diff(store):
    store.put(split("m", v1=100), "alice")
    store.put(split("m", v1=90, v2=10), "bob")
    store.delete("m", "carol")
    store.put(split("other", v1=1), "dave")

    changes = store.history("m")
    assert [(c.action, c.author) for c in changes] == [("delete", "carol"), ("put", "bob"), ("put", "alice")]
    assert changes[1].diff == {"backends.v1.weight": [100, 90], "backends.v2.weight": [None, 10]}
    assert changes[1].route == split("m", v1=90, v2=10).to_dict()
    assert changes[0].route is None and changes[0].diff["backends.v1.weight"] == [90, None]
    assert [c.model for c in store.history()] == ["other", "m", "m", "m"]
    assert len(store.history(limit=2)) == 2


def test_deleting_a_missing_route_is_not_found(store):
    with pytest.raises(NotFound):
        store.delete("m", "alice")
    assert store.version == 0


def test_rollback_restores_the_previous_route_and_twice_returns(store):
    first, second = split("m", v1=100), split("m", v1=50, v2=50)
    store.put(first, "alice")
    store.put(second, "alice")

    change = store.rollback("m", "bob")
    assert (change.action, change.author) == ("rollback", "bob")
    assert store.get("m") == (first, change.version)

    again = store.rollback("m", "bob")
    assert store.get("m") == (second, again.version)
    assert again.version > change.version


def test_rollback_of_a_delete_brings_the_route_back(store):
    store.put(split("m", v1=1), "alice")
    store.delete("m", "alice")
    store.rollback("m", "alice")
    assert store.get("m")[0] == split("m", v1=1)


def test_rollback_with_nothing_earlier_is_a_conflict(store):
    store.put(split("m", v1=1), "alice")
    with pytest.raises(Conflict):
        store.rollback("m", "alice")
    with pytest.raises(NotFound):
        store.rollback("never-seen", "alice")
    assert len(store.history()) == 1


def test_state_and_history_survive_reopening_the_file(tmp_path):
    path = tmp_path / "state" / "routes.db"
    store = RouteStore(path)
    store.put(split("m", v1=100), "alice")
    last = store.put(split("m", v1=90, v2=10), "bob")
    store.close()

    reopened = RouteStore(path)
    try:
        assert reopened.get("m") == (split("m", v1=90, v2=10), last.version)
        assert [(c.version, c.author) for c in reopened.history()] == [(last.version, "bob"), (last.version - 1, "alice")]
        assert reopened.rollback("m", "carol").version > last.version
        assert reopened.get("m")[0] == split("m", v1=100)
    finally:
        reopened.close()


def test_sidecar_registrations_are_replaced_as_a_whole_and_survive_reopening(tmp_path):
    path = tmp_path / "routes.db"
    first = RouteStore(path)
    try:
        assert first.registrations() == {}
        first.save_registrations({"a": {"model": "m", "version": "1", "inbound": "10.0.0.1:15001"},
                                  "b": {"model": "m", "version": "2", "inbound": "10.0.0.2:15001", "grpc": "10.0.0.2:15002"}})
        first.save_registrations({"b": {"model": "m", "version": "2", "inbound": "10.0.0.2:15001", "grpc": "10.0.0.2:15002"}})
    finally:
        first.close()
    again = RouteStore(path)
    try:
        assert again.registrations() == {"b": {"model": "m", "version": "2", "inbound": "10.0.0.2:15001", "grpc": "10.0.0.2:15002"}}
    finally:
        again.close()
