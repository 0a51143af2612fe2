"""The sidecar injector's admission webhook over TLS (a real ``sidemesh webhook``): any body
POSTed to either path gets a 200 AdmissionReview or a 400 ``{"error": ...}``, never a 5xx;
the connection is kept across examples, and the process stays healthy and logs no traceback."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.control_plane.injector.peers import TestCA, WebhookProcess

from .admission_inputs import reviews
from .budget import network
from .counts import ran
from .json_values import deeply_nested, encode, json_values, mutated
from .net import Session, check_answer, new_lines


@pytest.fixture(scope="module")
def webhook(tmp_path_factory):
    hook = WebhookProcess(TestCA(tmp_path_factory.mktemp("webhook-tls")))
    session = Session("localhost", hook.port, context=hook.client_context())
    try:
        yield session
        status, _, body = session.request("GET", "/healthz")
        assert status == 200, body
    finally:
        session.close()
        code = hook.stop()
    assert code == 0 and "Traceback" not in new_lines(hook.lines, 0), new_lines(hook.lines, 0)


@network(50)
@given(st.one_of(reviews().map(encode), mutated(reviews()).map(encode), json_values().map(encode), st.binary(max_size=64),
                 deeply_nested(max_depth=5000)), st.sampled_from(["/mutate", "/mutate/namespace-enabled"]))
def test_any_admission_body_gets_a_review_or_a_400_error(webhook, body, path):
    ran("webhook: POST /mutate")
    status, headers, data = webhook.request("POST", path, body, {"Content-Type": "application/json"})
    check_answer(status, headers, data, f"POST {path}")
    if status == 200:
        review = json.loads(data)
        assert review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview"
        assert review["response"]["uid"] == json.loads(body)["request"]["uid"]
