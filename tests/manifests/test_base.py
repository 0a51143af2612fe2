"""manifests/base holds together: names, ports, volumes and certificates refer to each
other correctly, every pod meets the restricted Pod Security profile, and the webhook
configuration sends each kind of namespace to the right place."""

from __future__ import annotations

import os
import tomllib

import pytest

from control_plane.injector.annotations import INJECT

from .labels import matches
from .pod_security import restricted_violations
from .render import MANIFESTS, ROOT, documents, render

BASE = MANIFESTS / "base"
IMAGE = "ghcr.io/sidemesh/sidemesh"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
STATEFUL = {"sidemesh-control-plane": "sidemesh-control-plane-state", "sidemesh-drift": "sidemesh-drift-state"}


@pytest.fixture(scope="module")
def base(rendered) -> list[dict]:
    return rendered[BASE]


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _pod_templates(rendered) -> list[tuple[str, dict]]:
    return [(f"{directory.relative_to(MANIFESTS)}: {d['metadata']['name']}", d["spec"]["template"])
            for directory, docs in rendered.items() for d in docs if d["kind"] == "Deployment"]


def _args(container: dict) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in container.get("args", []))


def test_the_namespace_enforces_the_restricted_profile_and_is_never_injected(base):
    labels = _one(base, "Namespace", "sidemesh-system")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["sidemesh.io/inject"] == "disabled"
    namespaced = [d for d in base if d["kind"] not in ("Namespace", "MutatingWebhookConfiguration")]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"sidemesh-system"}


def test_every_pod_meets_the_restricted_profile(rendered):
    problems = [f"{where}: {p}" for where, template in _pod_templates(rendered) for p in restricted_violations(template["spec"])]
    assert not problems, "\n".join(problems)


def test_every_container_has_limits_probes_a_read_only_root_and_a_writable_tmp(rendered):
    for where, template in _pod_templates(rendered):
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            name = f"{where}/{container['name']}"
            for side in ("requests", "limits"):
                assert set(container["resources"][side]) >= {"cpu", "memory"}, f"{name}: resources.{side}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            volume = next(v for v in spec["volumes"] if v["name"] == tmp[0]["name"]) if tmp else {}
            assert "emptyDir" in volume, f"{name}: /tmp is not an emptyDir"
            if container in spec["containers"]:
                assert container["readinessProbe"]["httpGet"] and container["livenessProbe"]["httpGet"], name


def test_one_image_everywhere_at_the_project_version(rendered):
    images = {c["image"] for _, t in _pod_templates(rendered)
              for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]}
    assert images == {f"{IMAGE}:{VERSION}"}


def test_an_overlay_moves_every_component_and_the_injected_sidecar_to_another_image(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        f"resources:\n  - {os.path.relpath(BASE, tmp_path)}\n"
        f"images:\n  - name: {IMAGE}\n    newName: registry.example.com/mirror/sidemesh\n    newTag: 9.9.9\n")
    docs = documents(render(tmp_path))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {c["image"] for d in deployments for c in d["spec"]["template"]["spec"]["containers"]} == {
        "registry.example.com/mirror/sidemesh:9.9.9"}
    injector = _one(docs, "Deployment", "sidemesh-injector")["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e["value"] for e in injector["env"]}["SIDEMESH_SIDECAR_IMAGE"] == "registry.example.com/mirror/sidemesh:9.9.9"
    assert _args(injector)["image"] == "$(SIDEMESH_SIDECAR_IMAGE)"


def test_sqlite_components_keep_state_on_their_volume_one_replica_at_a_time(base):
    for name, claim in STATEFUL.items():
        deployment = _one(base, "Deployment", name)
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
        _one(base, "PersistentVolumeClaim", claim)
        spec = deployment["spec"]["template"]["spec"]
        volume = next(v["name"] for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim)
        container = spec["containers"][0]
        mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume)
        assert _args(container)["state"].startswith(mount + "/"), f"{name}: --state is not on the volume"


def test_no_component_gets_kubernetes_api_access(base):
    assert not {d["kind"] for d in base} & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
    for account in (d for d in base if d["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    for deployment in (d for d in base if d["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        _one(base, "ServiceAccount", spec["serviceAccountName"])
        assert spec["automountServiceAccountToken"] is False


def test_services_select_their_deployment_and_target_declared_ports(base):
    for service in (d for d in base if d["kind"] == "Service"):
        selected = [d for d in base if d["kind"] == "Deployment"
                    and matches({"matchLabels": service["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])]
        assert len(selected) == 1, service["metadata"]["name"]
        declared = {p["name"] for c in selected[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= declared


def test_the_injector_points_sidecars_at_the_control_plane_and_drift_services(base):
    args = _args(_one(base, "Deployment", "sidemesh-injector")["spec"]["template"]["spec"]["containers"][0])
    for flag, service, port in (("control-plane", "sidemesh-control-plane", "xds"), ("drift", "sidemesh-drift", "stats")):
        svc = _one(base, "Service", service)
        number = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == port)
        assert args[flag] == f"{service}.{svc['metadata']['namespace']}.svc:{number}"


def test_the_control_plane_reads_its_tokens_from_the_secret(base):
    spec = _one(base, "Deployment", "sidemesh-control-plane")["spec"]["template"]["spec"]
    token_file = _args(spec["containers"][0])["token-file"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if token_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "sidemesh-control-plane-tokens"
    assert token_file == f"{mount['mountPath']}/tokens" and mount["readOnly"] is True


def test_the_webhook_fails_open_is_dry_run_safe_and_reaches_the_injector_service(base):
    config = _one(base, "MutatingWebhookConfiguration", "sidemesh-injector")
    service = _one(base, "Service", "sidemesh-injector")
    container = _one(base, "Deployment", "sidemesh-injector")["spec"]["template"]["spec"]["containers"][0]
    assert [w["clientConfig"]["service"]["path"] for w in config["webhooks"]] == ["/mutate", "/mutate/namespace-enabled"]
    for webhook in config["webhooks"]:
        assert webhook["failurePolicy"] == "Ignore" and webhook["sideEffects"] == "None"
        assert webhook["admissionReviewVersions"] == ["v1"] and webhook["reinvocationPolicy"] == "IfNeeded"
        assert webhook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                     "resources": ["pods"], "scope": "Namespaced"}]
        ref = webhook["clientConfig"]["service"]
        assert (ref["name"], ref["namespace"]) == (service["metadata"]["name"], service["metadata"]["namespace"])
        port = next(p for p in service["spec"]["ports"] if p["port"] == ref["port"])
        number = next(p["containerPort"] for p in container["ports"] if p["name"] == port["targetPort"])
        assert _args(container)["listen"] == f"0.0.0.0:{number}"


@pytest.mark.parametrize("labels, expected", [
    ({"sidemesh.io/inject": "enabled"}, ["/mutate/namespace-enabled"]),
    ({}, ["/mutate"]),
    ({"team": "ml"}, ["/mutate"]),
    ({"sidemesh.io/inject": "disabled"}, []),
    ({"sidemesh.io/inject": "enabled", "NAME": "kube-system"}, []),
    ({"NAME": "kube-system"}, []),
    ({"sidemesh.io/inject": "enabled", "NAME": "sidemesh-system"}, []),
], ids=["labelled", "plain", "other-labels", "disabled", "kube-system-labelled", "kube-system", "sidemesh-system-labelled"])
def test_each_kind_of_namespace_reaches_one_webhook_path_or_none(base, labels, expected):
    name = labels.pop("NAME", "models")
    namespace = {**labels, "kubernetes.io/metadata.name": name}  # the API server sets this label on every namespace
    webhooks = _one(base, "MutatingWebhookConfiguration", "sidemesh-injector")["webhooks"]
    paths = [w["clientConfig"]["service"]["path"] for w in webhooks if matches(w["namespaceSelector"], namespace)]
    assert paths == expected


def test_sidemesh_system_as_rendered_reaches_no_webhook(base):
    labels = {**_one(base, "Namespace", "sidemesh-system")["metadata"]["labels"], "kubernetes.io/metadata.name": "sidemesh-system"}
    webhooks = _one(base, "MutatingWebhookConfiguration", "sidemesh-injector")["webhooks"]
    assert not [w for w in webhooks if matches(w["namespaceSelector"], labels)]


def test_outside_labelled_namespaces_only_annotated_pods_are_sent(base):
    webhook = next(w for w in _one(base, "MutatingWebhookConfiguration", "sidemesh-injector")["webhooks"]
                   if w["clientConfig"]["service"]["path"] == "/mutate")
    (condition,) = webhook["matchConditions"]
    assert condition["expression"] == f"has(object.metadata.annotations) && '{INJECT}' in object.metadata.annotations"


def test_a_pod_labelled_not_to_be_injected_skips_the_webhook(base):
    for webhook in _one(base, "MutatingWebhookConfiguration", "sidemesh-injector")["webhooks"]:
        assert not matches(webhook["objectSelector"], {"sidemesh.io/inject": "false"})
        assert matches(webhook["objectSelector"], {"app": "tabular"})


def test_cert_manager_issues_the_injectors_certificate_and_fills_in_the_ca_bundle(base):
    config = _one(base, "MutatingWebhookConfiguration", "sidemesh-injector")
    namespace, name = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split("/")
    certificate = _one(base, "Certificate", name)
    assert certificate["metadata"]["namespace"] == namespace
    service = _one(base, "Service", "sidemesh-injector")
    assert f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc" in certificate["spec"]["dnsNames"]
    spec = _one(base, "Deployment", "sidemesh-injector")["spec"]["template"]["spec"]
    assert certificate["spec"]["secretName"] in {v.get("secret", {}).get("secretName") for v in spec["volumes"]}
    issuer = _one(base, "Issuer", certificate["spec"]["issuerRef"]["name"])
    ca = next(d for d in base if d["kind"] == "Certificate" and d["spec"].get("secretName") == issuer["spec"]["ca"]["secretName"])
    assert ca["spec"]["isCA"] is True
    assert "selfSigned" in _one(base, "Issuer", ca["spec"]["issuerRef"]["name"])["spec"]
