"""The control plane's admin API over the network (a real ``sidemesh control-plane`` with a
token file): any route body, model name, query string and Authorization header gets a 2xx
or a 4xx ``{"error": ...}``, never a 5xx (an accepted change that failed to build into the xDS
snapshot would be one), and the process stays healthy and logs no traceback."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.control_plane.peers import ControlPlaneProcess

from .budget import network
from .counts import ran
from .json_values import deeply_nested, encode, json_values, mutated
from .net import Session, check_answer, new_lines
from .route_inputs import NAMES, route_documents

TOKEN, READ_TOKEN = "fuzz-admin-token", "fuzz-read-token"
_MODELS = NAMES | st.sampled_from(["", "a/b", "a b", "x" * 64, "é", "..", "%", "m?x=1", "m#f"])
_AUTH = st.sampled_from([f"Bearer {TOKEN}"] * 6 + [f"Bearer {READ_TOKEN}", "", "Bearer", "Basic eA==", f"bearer  {TOKEN} ",
                         f"Bearer {TOKEN}x"]) | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory):
    state = tmp_path_factory.mktemp("control-plane")
    tokens = state / "tokens"
    tokens.write_text(f"fuzz {TOKEN} admin\nviewer {READ_TOKEN} read\n")
    proc = ControlPlaneProcess(state / "state.db", token_file=tokens).start()
    session = Session("127.0.0.1", proc.admin_port)
    try:
        yield session
        status, _, body = session.request("GET", "/healthz")
        assert status == 200, body
    finally:
        session.close()
        code = proc.stop()
    assert code == 0 and "Traceback" not in new_lines(proc.lines, 0), new_lines(proc.lines, 0)


@network(50)
@given(_MODELS, st.one_of(route_documents().map(encode), mutated(route_documents()).map(encode), json_values().map(encode),
                          st.binary(max_size=64), deeply_nested(max_depth=5000)), _AUTH)
def test_any_route_put_gets_a_2xx_or_a_4xx_error(control_plane, model, body, auth):
    ran("control plane admin: PUT /v1/routes/{model}")
    path = f"/v1/routes/{quote(model, safe='')}"
    status, headers, data = control_plane.request("PUT", path, body, {"Content-Type": "application/json", "Authorization": auth})
    check_answer(status, headers, data, f"PUT {path}")


@network(30)
@given(st.sampled_from(["GET", "DELETE", "POST", "PATCH"]), _MODELS,
       st.sampled_from(["", "/rollback", "/x"]), st.text(max_size=8) | st.sampled_from(["limit=²", "limit=0", "limit=5", "model=m"]))
def test_any_other_admin_call_gets_a_2xx_or_a_4xx_error(control_plane, method, model, suffix, query):
    ran("control plane admin: other calls")
    for path in (f"/v1/routes/{quote(model, safe='')}{suffix}", f"/v1/history?{quote(query, safe='=&')}", "/v1/routes", "/v1/nodes"):
        status, headers, data = control_plane.request(method, path, None, {"Authorization": f"Bearer {TOKEN}"})
        check_answer(status, headers, data, f"{method} {path}")
