"""The sidecar injector's AdmissionReview path (``review``, the annotations, the JSON
Patch): any body is decided or refused with a ``ValidationError`` naming the field; an
injected pod's patch applies (by an RFC 6902 applier written from the RFC) and reviewing
the patched pod again changes nothing."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.errors import ValidationError
from control_plane.injector.annotations import parse_settings
from control_plane.injector.config import InjectorConfig, Resources
from control_plane.injector.container import CONTAINER_NAME
from control_plane.injector.patch import ALREADY_INJECTED, INJECTED
from control_plane.injector.quantity import parse_quantity
from control_plane.injector.review import review
from tests.control_plane.injector.pods import admission_review, apply_json_patch

from .admission_inputs import reviews
from .budget import share
from .counts import ran
from .json_values import deeply_nested, edge_variants, encode, json_values, mutated
from .oracle import noted, parse_or_refuse

CONFIG = InjectorConfig(image="registry.test/sidemesh:1")


def _review(body: bytes, namespace_enabled: bool = False):
    result = parse_or_refuse(lambda: review(body, CONFIG, namespace_enabled), ValidationError)
    if result is None:
        return None
    response = result.response
    assert response["apiVersion"] == "admission.k8s.io/v1" and response["kind"] == "AdmissionReview"
    assert isinstance(response["response"]["uid"], str) and response["response"]["uid"]
    if not response["response"]["allowed"]:
        assert response["response"]["status"]["code"] == 400 and response["response"]["status"]["message"]
    if "patch" in response["response"]:
        assert result.outcome == INJECTED
        pod = json.loads(body)["request"]["object"]
        patched = apply_json_patch(pod, json.loads(base64.b64decode(response["response"]["patch"])))
        sidecars = [c for c in patched["spec"].get("initContainers", []) + patched["spec"]["containers"]
                    if c.get("name") == CONTAINER_NAME]
        assert len(sidecars) == 1
        again = review(encode(admission_review(patched, uid="u-2")), CONFIG, namespace_enabled)
        assert again.outcome == ALREADY_INJECTED and "patch" not in again.response["response"]
    return result


@given(st.one_of(mutated(reviews()).map(encode), reviews().map(encode), json_values().map(encode),
                 st.binary(max_size=64), deeply_nested(max_depth=5000)), st.booleans())
def test_any_admission_body_is_decided_or_refused_naming_the_field(body, namespace_enabled):
    ran("injector: AdmissionReview body")
    _review(body, namespace_enabled)


@share(8)
@given(reviews(opted_in=True).filter(lambda r: r["request"]["operation"] == "CREATE"))
def test_every_field_of_a_review_set_to_every_edge_value_is_decided_or_refused(doc):
    for change, variant in edge_variants(doc):
        ran("injector: AdmissionReview edge sweep")
        with noted(change):
            _review(encode(variant))


@given(st.dictionaries(st.text(max_size=3).map(lambda s: "sidemesh.io/" + s) | st.sampled_from(
    ["sidemesh.io/port", "sidemesh.io/cpu-limit", "sidemesh.io/memory-request", "sidemesh.io/stats-sample"]),
    json_values(4), max_size=5), json_values(4))
def test_any_annotations_parse_into_settings_or_a_validation_error(annotations, labels):
    ran("injector: annotations")
    metadata = {"annotations": {"sidemesh.io/model": "m", "sidemesh.io/version": "1", **annotations}, "labels": labels}
    parse_or_refuse(lambda: parse_settings(metadata, Resources()), ValidationError)


@given(st.text(max_size=12) | st.from_regex(r"\A[+-]?[0-9]{0,30}(\.[0-9]{0,30})?([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]{1,4})?\Z"))
def test_any_quantity_text_parses_or_is_a_value_error(text):
    ran("injector: resource quantity")
    value = parse_or_refuse(lambda: parse_quantity(text), ValueError)
    assert value is None or 0 <= value < 2**63


# --- regressions found by the properties above -------------------------------------------

def _pod(containers: list, **metadata) -> dict:
    annotations = {"sidemesh.io/inject": "true", "sidemesh.io/model": "m", "sidemesh.io/version": "1"}
    return {"metadata": {"annotations": annotations, **metadata}, "spec": {"containers": containers}}


@pytest.mark.parametrize("pod, message", [
    (_pod([{"name": ["model"]}]), "spec.containers[0].name: expected the container's name, a string, got ['model']"),
    (_pod([{"name": "model", "ports": 5}]), "spec.containers[0].ports: expected a list of container ports, got 5"),
    ({"metadata": {"annotations": {"sidemesh.io/inject": "true", "sidemesh.io/model": "m", "sidemesh.io/version": "1",
                                   "sidemesh.io/port": "9" * 5000}}, "spec": {"containers": [{"name": "model"}]}},
     'sidemesh.io/port: expected a port 1-65535 as a string (e.g. "8000"), got \'9999'),
])
def test_a_malformed_pod_is_denied_naming_the_field_instead_of_failing_the_webhook(pod, message):
    response = review(encode(admission_review(pod, uid="u")), CONFIG, False).response["response"]
    assert response["allowed"] is False and response["status"]["message"].startswith(f"sidemesh injector: {message}")


def test_a_port_whose_name_is_not_a_string_is_not_mistaken_for_a_sidecar_port():
    result = _review(encode(admission_review(_pod([{"name": "model", "ports": [{"name": ["x"], "containerPort": 8000}]}]))))
    assert result.outcome == INJECTED


@pytest.mark.parametrize("empty", ["", [], 0, False])
def test_empty_labels_or_annotations_of_another_type_get_a_patch_that_applies(empty):
    pod = _pod([{"name": "model"}], labels=empty)
    assert _review(encode(admission_review(pod, uid="u"))).outcome == INJECTED  # _review applies the patch


def test_a_review_nested_past_the_recursion_limit_is_refused_as_invalid_json():
    with pytest.raises(ValidationError, match="^body: expected an AdmissionReview JSON document, got invalid JSON"):
        review(b"[" * 100_000, CONFIG, False)
