"""Every kustomization under manifests/ renders, and every document it renders validates
strictly: built-in kinds for Kubernetes 1.29 through the newest version kubernetes-validate
ships, custom resources (cert-manager, Prometheus Operator) against their CRDs' schemas."""

from __future__ import annotations

import copy
import json
from functools import cache

import kubernetes_validate
import pytest

from .render import MANIFESTS, find_kustomizations
from .schemas import kubernetes_versions, validation_errors

KUSTOMIZATIONS = find_kustomizations()


@cache
def _errors(doc_json: str, versions: tuple[str, ...]) -> tuple[str, ...]:
    """One validation per distinct document: overlays repeat most of the base's."""
    return tuple(validation_errors(json.loads(doc_json), list(versions)))


def _doc(rendered, directory: str, kind: str, name: str) -> dict:
    docs = rendered[MANIFESTS / directory]
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_the_base_and_every_example_are_found():
    found = {d.relative_to(MANIFESTS).as_posix() for d in KUSTOMIZATIONS}
    assert {"base", "examples/tabular", "examples/self-managed-certs", "examples/drift-alerts"} <= found


def test_versions_run_from_1_29_to_the_newest_kubernetes_validate_ships(versions):
    newest = ".".join(kubernetes_validate.latest_version().split(".")[:2])
    assert versions[0] == "1.29" and versions[-1] == newest
    minors = [int(v.split(".")[1]) for v in versions]
    assert minors == list(range(29, minors[-1] + 1))


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: d.relative_to(MANIFESTS).as_posix())
def test_every_rendered_document_validates_strictly(directory, rendered, versions):
    docs = rendered[directory]
    assert docs, f"{directory} renders no documents"
    identities = [(d.get("apiVersion"), d.get("kind"), (d.get("metadata") or {}).get("namespace"),
                   (d.get("metadata") or {}).get("name")) for d in docs]
    assert len(set(identities)) == len(identities), "a kustomization renders the same object twice"
    errors = [e for doc in docs for e in _errors(json.dumps(doc, sort_keys=True), tuple(versions))]
    assert not errors, "\n".join(errors)


def test_an_unknown_field_fails_at_every_version(rendered, versions):
    deployment = copy.deepcopy(_doc(rendered, "base", "Deployment", "sidemesh-control-plane"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # a typo
    errors = validation_errors(deployment, versions)
    assert len(errors) == len(versions)
    assert all("readOnlyRootFileSystem" in e for e in errors)


def test_a_value_of_the_wrong_type_fails(rendered, versions):
    service = copy.deepcopy(_doc(rendered, "base", "Service", "sidemesh-injector"))
    service["spec"]["ports"][0]["port"] = "443"
    assert validation_errors(service, versions)


def test_a_custom_resource_is_checked_against_its_crd_schema(rendered, versions):
    certificate = copy.deepcopy(_doc(rendered, "base", "Certificate", "sidemesh-injector"))
    assert validation_errors(certificate, versions) == []
    certificate["spec"]["dnsName"] = certificate["spec"].pop("dnsNames")
    certificate["spec"]["privateKey"]["algorithm"] = "DSA"
    errors = validation_errors(certificate, versions)
    assert any("'dnsName' was unexpected" in e for e in errors)
    assert any("spec.privateKey.algorithm: 'DSA' is not one of" in e for e in errors)
    del certificate["spec"]["issuerRef"]
    assert any("'issuerRef' is a required property" in e for e in validation_errors(certificate, versions))


def test_a_monitoring_resource_is_checked_against_its_crd_schema(versions):
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"},
               "spec": {"selector": {}, "endpoints": [{"port": "admin", "pth": "/metrics"}]}}
    assert any("'pth' was unexpected" in e for e in validation_errors(monitor, versions))


def test_a_kind_without_any_schema_fails_instead_of_passing(versions):
    thing = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}}
    with pytest.raises(AssertionError, match="no schema for the custom resource example.com/v1 Thing"):
        validation_errors(thing, versions)


def test_the_versions_helper_refuses_a_range_it_cannot_check():
    with pytest.raises(AssertionError, match="ships schemas up to"):
        kubernetes_versions("1.99")
