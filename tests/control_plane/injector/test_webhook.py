"""The real ``sidemesh webhook`` process, over TLS with a verified certificate, answering
AdmissionReview v1 requests as the API server sends them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .peers import TestCA, WebhookProcess
from .pods import admission_review, apply_json_patch, decode_patch, model_pod, plain_pod


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("webhook-ca"))


@pytest.fixture(scope="module")
def webhook(ca):
    hook = WebhookProcess(ca, "--image", "registry.test/sidemesh:9.9", "--control-plane", "cp.test:15010")
    yield hook
    assert hook.stop() == 0, "".join(hook.lines)
    assert any(": stopping" in line for line in hook.lines)


def _sidecar(pod: dict) -> dict:
    found = [c for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"] if c["name"] == "sidemesh-proxy"]
    assert len(found) == 1, pod["spec"]
    return found[0]


def test_a_pod_that_opted_in_gets_the_sidecar_as_a_json_patch(webhook):
    pod = model_pod(**{"sidemesh.io/port": "8000", "sidemesh.io/grpc-port": "8001"})
    response = webhook.review(admission_review(pod))
    assert response["allowed"] is True
    injected = apply_json_patch(pod, decode_patch(response))
    sidecar = _sidecar(injected)
    assert sidecar in injected["spec"]["initContainers"] and sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "registry.test/sidemesh:9.9"
    assert sidecar["command"] == ["sidemesh", "sidecar"]
    args = sidecar["args"]
    assert args[args.index("--control-plane") + 1] == "cp.test:15010"
    assert args[args.index("--upstream-grpc") + 1] == "127.0.0.1:8001"
    status = json.loads(injected["metadata"]["annotations"]["sidemesh.io/status"])
    assert status["container"] == "sidemesh-proxy" and status["image"] == "registry.test/sidemesh:9.9"
    assert injected["metadata"]["labels"] == {"app": "tabular", "sidemesh.io/role": "primary"}
    assert injected["spec"]["containers"] == pod["spec"]["containers"]  # the app is left as it was


def test_an_already_injected_pod_gets_no_patch(webhook):
    pod = model_pod()
    injected = apply_json_patch(pod, decode_patch(webhook.review(admission_review(pod))))
    response = webhook.review(admission_review(injected))
    assert response == {"uid": response["uid"], "allowed": True}


def test_a_pod_that_did_not_opt_in_is_left_alone(webhook):
    assert webhook.review(admission_review(plain_pod()))["allowed"] is True
    assert "patch" not in webhook.review(admission_review(plain_pod()))
    opted_out = model_pod(**{"sidemesh.io/inject": "false"})
    assert "patch" not in webhook.review(admission_review(opted_out), "/mutate/namespace-enabled")


def test_in_an_enabled_namespace_a_pod_without_the_annotation_is_injected(webhook):
    pod = plain_pod(**{"app.kubernetes.io/name": "tabular", "app.kubernetes.io/version": "2"})
    response = webhook.review(admission_review(pod), "/mutate/namespace-enabled")
    injected = apply_json_patch(pod, decode_patch(response))
    args = _sidecar(injected)["args"]
    assert args[:4] == ["--model", "tabular", "--version", "2"]
    assert "sidemesh.io/status" in injected["metadata"]["annotations"]  # the map was absent: added whole


def test_broken_annotations_are_denied_with_the_annotation_and_the_expected_form(webhook):
    response = webhook.review(admission_review(model_pod(**{"sidemesh.io/port": "http"})))
    assert response["allowed"] is False and "patch" not in response
    assert response["status"]["code"] == 400
    message = response["status"]["message"]
    assert "sidemesh.io/port" in message and '"8000"' in message and "'http'" in message


def test_a_dry_run_gets_the_same_answer_and_counts_apart(webhook):
    injected_before = webhook.metric("sidemesh_injector_reviews_total", outcome="injected")
    dry_before = webhook.metric("sidemesh_injector_dry_run_reviews_total", outcome="injected")
    pod = model_pod()
    dry = webhook.review(admission_review(pod, dry_run=True))
    assert dry["allowed"] is True
    assert webhook.metric("sidemesh_injector_reviews_total", outcome="injected") == injected_before
    assert webhook.metric("sidemesh_injector_dry_run_reviews_total", outcome="injected") == dry_before + 1
    real = webhook.review(admission_review(pod))
    assert decode_patch(dry) == decode_patch(real)
    assert webhook.metric("sidemesh_injector_reviews_total", outcome="injected") == injected_before + 1


def test_only_pod_creation_is_mutated(webhook):
    response = webhook.review(admission_review(model_pod(), operation="UPDATE"))
    assert response["allowed"] is True and "patch" not in response


@pytest.mark.parametrize("body, field", [
    (b"{not json", "invalid JSON"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}).encode(), "apiVersion"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"object": {}}}).encode(), "request.uid"),
])
def test_a_malformed_review_is_a_400_and_the_server_keeps_serving(webhook, body, field):
    before = webhook.metric("sidemesh_injector_bad_requests_total")
    reply = webhook.request("POST", "/mutate", body)
    assert reply.status == 400 and field in reply.body["error"]
    assert webhook.metric("sidemesh_injector_bad_requests_total") == before + 1
    assert webhook.review(admission_review(model_pod()))["allowed"] is True


def test_health_and_unknown_paths_answer_json(webhook):
    assert webhook.request("GET", "/healthz").body == {"ok": True}
    missing = webhook.request("GET", "/nope")
    assert missing.status == 404 and "/mutate" in missing.body["error"]


def test_a_rotated_certificate_is_served_from_the_next_handshake(tmp_path):
    ca = TestCA(tmp_path)
    hook = WebhookProcess(ca, common_name="before-rotation")
    try:
        assert hook.request("GET", "/healthz").peer_common_name == "before-rotation"
        ca.write("after-rotation", hook.cert, hook.key)
        assert hook.request("GET", "/healthz").peer_common_name == "after-rotation"
        assert hook.metric("sidemesh_injector_certificate_reloads_total", result="ok") == 1
        hook.cert.write_text("half-written")  # a rotation caught half-way keeps the last good certificate
        assert hook.request("GET", "/healthz").peer_common_name == "after-rotation"
        assert hook.metric("sidemesh_injector_certificate_reloads_total", result="error") == 1
    finally:
        assert hook.stop() == 0


def test_unreadable_certificate_files_stop_the_webhook_with_a_message(tmp_path):
    (tmp_path / "tls.crt").write_text("not a certificate")
    (tmp_path / "tls.key").write_text("not a key")
    done = subprocess.run([sys.executable, "-m", "sidemesh", "webhook", "--listen", "127.0.0.1:0",
                           "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--tls-cert" in done.stderr and str(tmp_path / "tls.crt") in done.stderr
