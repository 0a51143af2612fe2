"""Annotation parsing: every error names the annotation and the form it expects."""

from __future__ import annotations

import pytest

from control_plane.errors import ValidationError
from control_plane.injector.annotations import parse_settings, wants_injection
from control_plane.injector.config import Resources

BASE = {"sidemesh.io/inject": "true", "sidemesh.io/model": "tabular", "sidemesh.io/version": "1"}


def settings(**annotations):
    return parse_settings({"annotations": {**BASE, **annotations}}, Resources())


@pytest.mark.parametrize("annotation, namespace_enabled, wanted", [
    (None, False, False), (None, True, True), ("true", False, True), ("True", False, True),
    ("false", True, False), ("false", False, False),
])
def test_the_pod_annotation_decides_and_the_namespace_label_is_the_default(annotation, namespace_enabled, wanted):
    annotations = {} if annotation is None else {"sidemesh.io/inject": annotation}
    assert wants_injection(annotations, namespace_enabled) is wanted


@pytest.mark.parametrize("value", ["yes", "1", "enabled", True])
def test_an_inject_value_other_than_true_or_false_is_an_error(value):
    with pytest.raises(ValidationError) as err:
        wants_injection({"sidemesh.io/inject": value}, False)
    assert err.value.field == "sidemesh.io/inject"
    assert '"true" or "false"' in str(err.value) or "quote it in YAML" in str(err.value)


def test_defaults_when_only_model_and_version_are_given():
    s = settings()
    assert (s.model, s.version, s.port, s.grpc_port, s.stats_sample, s.shadow, s.role) == ("tabular", "1", 8000, None, None, False, "primary")
    assert s.resources == Resources()


def test_every_annotation_is_read():
    s = settings(**{"sidemesh.io/port": "9000", "sidemesh.io/grpc-port": "9001", "sidemesh.io/stats-sample": "0.25",
                    "sidemesh.io/shadow": "true", "sidemesh.io/cpu-request": "250m", "sidemesh.io/memory-limit": "1Gi"})
    assert (s.port, s.grpc_port, s.stats_sample, s.role) == (9000, 9001, 0.25, "shadow")
    assert (s.resources.cpu_request, s.resources.memory_limit) == ("250m", "1Gi")


@pytest.mark.parametrize("annotation, value, expected", [
    ("sidemesh.io/model", "no spaces", "letters, digits"),
    ("sidemesh.io/model", "", "letters, digits"),
    ("sidemesh.io/version", "v/1", "letters, digits"),
    ("sidemesh.io/port", "http", 'e.g. "8000"'),
    ("sidemesh.io/port", "0", "port 1-65535"),
    ("sidemesh.io/port", "70000", "port 1-65535"),
    ("sidemesh.io/port", "15001", "sidecar's own port"),
    ("sidemesh.io/grpc-port", "15020", "sidecar's own port"),
    ("sidemesh.io/grpc-port", "8000", "a different one"),
    ("sidemesh.io/port", 8000, "quote it in YAML"),
    ("sidemesh.io/stats-sample", "1.5", "between 0 and 1"),
    ("sidemesh.io/stats-sample", "nan", "between 0 and 1"),
    ("sidemesh.io/stats-sample", "ten percent", "between 0 and 1"),
    ("sidemesh.io/shadow", "maybe", '"true" or "false"'),
    ("sidemesh.io/cpu-request", "lots", "Kubernetes quantity"),
    ("sidemesh.io/memory-limit", "512MB", "Kubernetes quantity"),
    ("sidemesh.io/memory-limit", "0", "above 0"),
    ("sidemesh.io/port-number", "8000", "unknown annotation; expected one of sidemesh.io/inject"),
])
def test_a_broken_annotation_names_itself_and_the_expected_form(annotation, value, expected):
    with pytest.raises(ValidationError) as err:
        settings(**{annotation: value})
    assert err.value.field == annotation
    assert str(err.value).startswith(f"{annotation}: ") and expected in str(err.value)


def test_a_missing_model_says_how_to_give_one_or_opt_out():
    with pytest.raises(ValidationError) as err:
        parse_settings({"annotations": {"sidemesh.io/version": "1"}}, Resources())
    assert err.value.field == "sidemesh.io/model"
    assert "app.kubernetes.io/name" in str(err.value) and 'sidemesh.io/inject: "false"' in str(err.value)


def test_the_recommended_labels_stand_in_for_model_and_version():
    s = parse_settings({"labels": {"app.kubernetes.io/name": "tabular", "app.kubernetes.io/version": "3"}}, Resources())
    assert (s.model, s.version) == ("tabular", "3")
    s = parse_settings({"labels": {"app.kubernetes.io/name": "other"}, "annotations": BASE}, Resources())
    assert s.model == "tabular"  # the annotation wins


def test_a_request_above_the_default_limit_takes_the_limit_with_it():
    r = settings(**{"sidemesh.io/memory-request": "1Gi"}).resources
    assert (r.memory_request, r.memory_limit) == ("1Gi", "1Gi")


def test_a_limit_below_the_default_request_takes_the_request_with_it():
    r = settings(**{"sidemesh.io/cpu-limit": "50m"}).resources
    assert (r.cpu_request, r.cpu_limit) == ("50m", "50m")


def test_a_request_above_a_given_limit_is_an_error():
    with pytest.raises(ValidationError) as err:
        settings(**{"sidemesh.io/cpu-request": "2", "sidemesh.io/cpu-limit": "500m"})
    assert err.value.field == "sidemesh.io/cpu-limit" and "at least the request" in str(err.value)
