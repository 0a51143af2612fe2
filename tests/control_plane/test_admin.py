from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.control_plane.conftest import READ_TOKEN

SPLIT = {"backends": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]}
ONLY_V1 = {"backends": [{"version": "v1", "weight": 100}]}


@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["no token", "unknown token"])
def test_a_request_without_a_valid_token_is_401_with_a_bearer_challenge(admin, token):
    for method, path, body in [("GET", "/v1/routes", None), ("PUT", "/v1/routes/m", SPLIT), ("GET", "/v1/nodes", None)]:
        reply = admin.call(method, path, body, token=token)
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in reply.body["error"]
    assert admin.store.version == 0 and admin.changes == []


def test_a_non_bearer_authorization_header_is_401(admin):
    request = urllib.request.Request(admin.url + "/v1/routes", headers={"Authorization": "Basic YWxpY2U6eA=="})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    with info.value as exc:
        assert exc.code == 401 and "Bearer" in json.loads(exc.read())["error"]


def test_a_read_token_may_read_but_not_write(admin):
    admin.call("PUT", "/v1/routes/m", SPLIT)
    assert admin.call("GET", "/v1/routes/m", token=READ_TOKEN).status == 200
    assert admin.call("GET", "/v1/history", token=READ_TOKEN).status == 200
    for method, path, body in [("PUT", "/v1/routes/m", ONLY_V1), ("DELETE", "/v1/routes/m", None),
                               ("POST", "/v1/routes/m/rollback", None)]:
        reply = admin.call(method, path, body, token=READ_TOKEN)
        assert reply.status == 403
        assert "'viewer'" in reply.body["error"] and "admin" in reply.body["error"]
    assert admin.store.get("m")[0].weights == {"v1": 90, "v2": 10}
    assert len(admin.changes) == 1


def test_an_invalid_route_is_400_naming_the_field(admin):
    reply = admin.call("PUT", "/v1/routes/m", {"backends": [{"version": "v1", "weight": -3}]})
    assert reply.status == 400
    assert reply.body["error"].startswith("backends[0].weight: ")
    reply = admin.call("PUT", "/v1/routes/m", {**SPLIT, "mirrors": [{"version": "v2", "percent": 5}]})
    assert reply.status == 400 and reply.body["error"].startswith("mirrors[0].version: ")
    assert admin.store.version == 0 and admin.changes == []


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe"], ids=["truncated", "empty", "not UTF-8"])
def test_a_malformed_json_body_is_400(admin, raw):
    reply = admin.call("PUT", "/v1/routes/m", raw=raw)
    assert reply.status == 400
    assert "not valid JSON" in reply.body["error"]
    assert admin.changes == []


def test_an_unknown_model_is_404(admin):
    for method, path in [("GET", "/v1/routes/nope"), ("DELETE", "/v1/routes/nope"), ("POST", "/v1/routes/nope/rollback")]:
        reply = admin.call(method, path)
        assert reply.status == 404 and "'nope'" in reply.body["error"]
    assert admin.changes == []


def test_an_unknown_path_or_method_answers_the_error_shape(admin):
    reply = admin.call("GET", "/v1/nothing-here", token=None)
    assert reply.status == 404 and "/openapi.json" in reply.body["error"]
    reply = admin.call("PATCH", "/v1/routes/m", SPLIT)
    assert reply.status == 405 and "PUT" in reply.headers["Allow"]


def test_rolling_back_with_nothing_earlier_is_409(admin):
    admin.call("PUT", "/v1/routes/m", SPLIT)
    reply = admin.call("POST", "/v1/routes/m/rollback")
    assert reply.status == 409 and "roll back" in reply.body["error"]
    assert len(admin.changes) == 1


def test_put_get_delete_rollback_and_history_round_trip(admin):
    put = admin.call("PUT", "/v1/routes/m", ONLY_V1)
    assert put.status == 200
    assert (put.body["model"], put.body["route"]["backends"]) == ("m", ONLY_V1["backends"])
    changed = admin.call("PUT", "/v1/routes/m", SPLIT).body
    assert changed["diff"] == {"backends.v1.weight": [100, 90], "backends.v2.weight": [None, 10]}
    assert changed["version"] > put.body["version"]

    got = admin.call("GET", "/v1/routes/m", token=READ_TOKEN).body
    assert got == {"model": "m", "version": changed["version"], "route": changed["route"]}
    listed = admin.call("GET", "/v1/routes", token=READ_TOKEN).body
    assert listed == {"version": changed["version"], "routes": {"m": {"version": changed["version"], "route": changed["route"]}}}

    rolled = admin.call("POST", "/v1/routes/m/rollback").body
    assert rolled["route"]["backends"] == ONLY_V1["backends"] and rolled["diff"]["backends.v2.weight"] == [10, None]
    deleted = admin.call("DELETE", "/v1/routes/m")
    assert deleted.status == 200 and deleted.body == {"model": "m", "version": rolled["version"] + 1}
    assert admin.call("GET", "/v1/routes/m").status == 404

    history = admin.call("GET", "/v1/history?model=m&limit=10", token=READ_TOKEN).body["changes"]
    assert [(c["action"], c["author"]) for c in history] == [("delete", "alice"), ("rollback", "alice"), ("put", "alice"), ("put", "alice")]
    assert [c["version"] for c in history] == [deleted.body["version"], rolled["version"], changed["version"], put.body["version"]]
    assert len(admin.call("GET", "/v1/history?limit=1").body["changes"]) == 1


def test_on_change_is_called_once_per_accepted_change_and_never_for_a_rejected_one(admin):
    admin.call("PUT", "/v1/routes/m", ONLY_V1)
    admin.call("PUT", "/v1/routes/m", {"backends": []})
    admin.call("PUT", "/v1/routes/m", SPLIT, token=READ_TOKEN)
    admin.call("PUT", "/v1/routes/m", SPLIT)
    admin.call("POST", "/v1/routes/other/rollback")
    admin.call("POST", "/v1/routes/m/rollback")
    admin.call("DELETE", "/v1/routes/m")
    assert admin.changes == [1, 2, 3, 4]  # called after each change was stored


@pytest.mark.parametrize("limit", ["0", "1001", "ten", "-1"])
def test_a_history_limit_outside_1_to_1000_is_400(admin, limit):
    reply = admin.call("GET", f"/v1/history?limit={limit}")
    assert reply.status == 400 and reply.body["error"].startswith("limit: ")


def test_nodes_are_passed_through(admin):
    node = {"id": "sc-1", "model": "m", "version": "v1", "address": "127.0.0.1:15001", "connected": True,
            "connected_at": 1.5, "acked_state_version": 3, "last_nack": None}
    admin.nodes.append(node)
    assert admin.call("GET", "/v1/nodes", token=READ_TOKEN).body == {"nodes": [node]}


def test_openapi_and_healthz_need_no_token(admin):
    assert admin.call("GET", "/healthz", token=None).body == {"ok": True}
    reply = admin.call("GET", "/openapi.json", token=None)
    assert reply.status == 200 and reply.body["openapi"].startswith("3.1")
    assert set(reply.body["paths"]) == {"/v1/routes", "/v1/routes/{model}", "/v1/routes/{model}/rollback",
                                        "/v1/history", "/v1/nodes", "/v1/canaries", "/v1/canaries/{model}",
                                        "/v1/canaries/{model}/abort", "/healthz", "/openapi.json"}
    assert set(reply.body["paths"]["/v1/routes/{model}"]) >= {"get", "put", "delete"}
    assert reply.body["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    route = reply.body["components"]["schemas"]["Route"]["properties"]
    assert set(route) == {"backends", "mirrors", "sticky_key", "timeout_ms", "retry", "sidecar"}
    assert set(route["retry"]["properties"]) == {"attempts", "per_try_timeout_ms", "on"}


def test_open_mode_needs_no_token_and_records_anonymous(open_admin):
    assert open_admin.call("PUT", "/v1/routes/m", SPLIT, token=None).status == 200
    assert open_admin.call("GET", "/v1/routes/m", token=None).status == 200
    assert open_admin.call("GET", "/v1/history", token=None).body["changes"][0]["author"] == "anonymous"
    assert open_admin.changes == [1]
