"""The tabular example: each version's Deployment is annotated as the injector expects,
`sidemesh inject` turns the rendered example into manifests that still validate strictly
and meet the namespace's restricted profile, and the Service reaches injected primaries'
sidecars only."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from control_plane.injector.annotations import SIDECAR_PORTS, parse_settings
from control_plane.injector.config import Resources
from sidecar.cli import build_parser as sidecar_parser

from .labels import matches
from .pod_security import restricted_violations
from .render import MANIFESTS, ROOT, documents
from .schemas import validation_errors

TABULAR = MANIFESTS / "examples" / "tabular"


@pytest.fixture(scope="module")
def example(rendered) -> list[dict]:
    return rendered[TABULAR]


@pytest.fixture(scope="module")
def injected(example) -> list[dict]:
    """The rendered example through `sidemesh inject`, as bound for its labelled namespace."""
    result = subprocess.run([sys.executable, "-m", "sidemesh", "inject", "-f", "-", "--namespace-enabled"],
                            input=yaml.safe_dump_all(example, sort_keys=False), capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "3 injected" in result.stderr
    return documents(result.stdout)


def _deployments(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def _sidecar(template: dict) -> dict:
    found = [c for c in template["spec"].get("initContainers", []) + template["spec"]["containers"] if c["name"] == "sidemesh-proxy"]
    assert len(found) == 1
    return found[0]


def test_the_namespace_asks_for_injection_and_the_restricted_profile(example):
    labels = next(d for d in example if d["kind"] == "Namespace")["metadata"]["labels"]
    assert labels["sidemesh.io/inject"] == "enabled"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("name, version, role", [("tabular-v1", "1", "primary"), ("tabular-v2", "2", "primary"),
                                                 ("tabular-v3", "3", "shadow")])
def test_each_version_is_annotated_with_what_it_serves(example, name, version, role):
    template = _deployments(example)[name]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["sidemesh.io/inject"] == "true"
    assert template["metadata"]["labels"]["app.kubernetes.io/version"] == version
    settings = parse_settings(template["metadata"], Resources())
    assert (settings.model, settings.version, settings.role) == ("tabular", version, role)
    server = next(c for c in template["spec"]["containers"] if c["name"] == "model-server")
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    args = dict(a.removeprefix("--").split("=", 1) for a in server["args"])
    assert settings.port == ports["http"] == int(args["http-port"])
    assert settings.grpc_port == ports["grpc"] == int(args["grpc-port"])


def test_injected_manifests_validate_strictly_for_every_version(injected, versions):
    errors = [e for doc in injected for e in validation_errors(doc, versions)]
    assert not errors, "\n".join(errors)


def test_injected_pods_meet_the_restricted_profile(injected):
    for name, deployment in _deployments(injected).items():
        assert restricted_violations(deployment["spec"]["template"]["spec"]) == [], name


def test_injected_sidecars_run_a_command_line_the_sidecar_accepts(injected, rendered):
    base = rendered[MANIFESTS / "base"]
    service = next(d for d in base if d["kind"] == "Service" and d["metadata"]["name"] == "sidemesh-control-plane")
    xds = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "xds")
    for deployment in _deployments(injected).values():
        template = deployment["spec"]["template"]
        sidecar = _sidecar(template)
        assert sidecar["image"] == next(c["image"] for c in template["spec"]["containers"] if c["name"] == "model-server")
        args = sidecar_parser().parse_args(sidecar["args"])
        assert args.version == template["metadata"]["annotations"]["sidemesh.io/version"]
        assert args.control_plane == f"sidemesh-control-plane.sidemesh-system.svc:{xds}"


def test_injecting_twice_changes_nothing(injected):
    text = yaml.safe_dump_all(injected, sort_keys=False)
    result = subprocess.run([sys.executable, "-m", "sidemesh", "inject", "-f", "-", "--namespace-enabled"],
                            input=text, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert documents(result.stdout) == injected


def test_the_service_reaches_the_sidecars_of_injected_primaries_only(example, injected):
    service = next(d for d in example if d["kind"] == "Service")
    selector = {"matchLabels": service["spec"]["selector"]}
    selected = {name for name, d in _deployments(injected).items() if matches(selector, d["spec"]["template"]["metadata"]["labels"])}
    assert selected == {"tabular-v1", "tabular-v2"}
    assert not [d for d in _deployments(example).values() if matches(selector, d["spec"]["template"]["metadata"]["labels"])]
    for name in selected:
        declared = {p["name"]: p["containerPort"] for p in _sidecar(_deployments(injected)[name]["spec"]["template"])["ports"]}
        targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
        assert targets == {"http": declared["sidemesh-http"], "grpc": declared["sidemesh-grpc"]}
        assert declared["sidemesh-http"] == SIDECAR_PORTS["sidemesh-http"]
