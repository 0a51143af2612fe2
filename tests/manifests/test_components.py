"""Every pod the manifests describe runs: each container starts from the manifest's own
command line (on loopback, with its volumes as directories) and answers the probes the
manifest points the kubelet at. Then what each component is there for is checked: the
control plane wants its token, the injector serves the certificate make-certs.sh makes and
injects the example pods at the webhook configuration's paths into pods that validate
strictly, and each model server serves only its own version."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from control_plane.cli import build_parser as control_plane_parser
from control_plane.injector.cli import build_webhook_parser
from drift.cli import build_parser as drift_parser
from model_server.cli import build_parser as model_server_parser

from .pod_security import restricted_violations
from .pods import LocalContainer, expand, http_status, running_pod
from .render import MANIFESTS, rendered_all
from .schemas import validation_errors

CERTS_SCRIPT = MANIFESTS / "examples" / "self-managed-certs" / "make-certs.sh"
TOKEN = "manifests-test-token-5c1e"
PARSERS = {"control-plane": control_plane_parser, "drift": drift_parser, "model-server": model_server_parser,
           "webhook": build_webhook_parser}


def _deployments() -> list[tuple[str, dict]]:
    """Each distinct Deployment of all kustomizations (overlays repeat the base's)."""
    seen: dict[str, tuple[str, dict]] = {}
    for directory, docs in rendered_all().items():
        for doc in docs:
            if doc["kind"] == "Deployment":
                key = json.dumps(doc["spec"]["template"], sort_keys=True)
                seen.setdefault(key, (f"{directory.relative_to(MANIFESTS).as_posix()}/{doc['metadata']['name']}", doc))
    return list(seen.values())


DEPLOYMENTS = _deployments()


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(["sh", str(CERTS_SCRIPT), str(out)], check=True, capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def secrets(certs) -> dict[str, dict[str, str]]:
    """The Secrets docs/kubernetes.md tells users to create (or cert-manager makes)."""
    return {
        "sidemesh-control-plane-tokens": {"tokens": f"ci {TOKEN} admin\n"},
        "sidemesh-injector-tls": {name: (certs / name).read_text() for name in ("tls.crt", "tls.key", "ca.crt")},
        "sidemesh-drift-webhook": {"secret": "a-shared-secret\n"},
    }


@pytest.fixture(scope="module")
def configmaps() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for docs in rendered_all().values() for d in docs if d["kind"] == "ConfigMap"}


def _doc(directory: str, kind: str, name: str) -> dict:
    return next(d for d in rendered_all()[MANIFESTS / directory] if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("where, deployment", DEPLOYMENTS, ids=[w for w, _ in DEPLOYMENTS])
def test_every_sidemesh_command_line_is_accepted_by_its_parser(where, deployment):
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert container["command"][0] == "sidemesh" and container["command"][1] in PARSERS, container["command"]
        env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        args = [expand(a, env) for a in container["args"]]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                PARSERS[container["command"][1]]().parse_args(args)
            except SystemExit:
                pytest.fail(f"{where}/{container['name']}: {stderr.getvalue()}")


@pytest.mark.parametrize("where, deployment", DEPLOYMENTS, ids=[w for w, _ in DEPLOYMENTS])
def test_every_pod_starts_from_its_manifest_and_passes_its_probes(where, deployment, tmp_path, secrets, configmaps, certs,
                                                                  versions):
    template = deployment["spec"]["template"]
    with running_pod(template, tmp_path, secrets, configmaps) as (_, containers):
        for container in containers.values():
            check = CHECKS.get(container.spec["command"][1])
            if check:
                check(container, template, certs=certs, versions=versions)


def _check_control_plane(container: LocalContainer, template: dict, **_) -> None:
    port = container.ports["admin"]
    assert http_status(port, "/v1/routes") == 401

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/v1/routes", headers={"Authorization": f"Bearer {TOKEN}"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def _check_model_server(container: LocalContainer, template: dict, **_) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", container.ports["http"], timeout=10)
    try:
        conn.request("GET", "/v2/models/tabular")
        metadata = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert metadata["versions"] == [template["metadata"]["annotations"]["sidemesh.io/version"]]


class _ServiceConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that checks the certificate against the Service's DNS name."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _post(port: int, hostname: str, ca: ssl.SSLContext, path: str, doc: dict) -> dict:
    conn = _ServiceConnection(hostname, port, context=ca, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(doc), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        return json.loads(response.read())
    finally:
        conn.close()


def _apply_adds(doc: dict, patch: list[dict]) -> dict:
    """RFC 6902 ``add`` operations (all the injector sends), applied to a copy."""
    result = json.loads(json.dumps(doc))
    for op in patch:
        assert op["op"] == "add", op
        *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        target = result
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        if isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), op["value"])
        else:
            target[last] = op["value"]
    return result


def _review(pod: dict, uid: str) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
                        "namespace": pod["metadata"]["namespace"], "object": pod, "dryRun": False}}


def _check_injector(container: LocalContainer, template: dict, certs: Path, versions: list[str]) -> None:
    port = container.ports["https"]
    ca = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    for name in _doc("base", "Certificate", "sidemesh-injector")["spec"]["dnsNames"]:
        assert http_status(port, "/healthz", ca, server_hostname=name) == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        http_status(port, "/healthz", ca, server_hostname="somewhere-else.example.com")

    service = _doc("base", "Service", "sidemesh-injector")["metadata"]
    hostname = f"{service['name']}.{service['namespace']}.svc"
    webhooks = {w["clientConfig"]["service"]["path"]: w for w in _doc("base", "MutatingWebhookConfiguration", "sidemesh-injector")["webhooks"]}
    examples = [d for d in rendered_all()[MANIFESTS / "examples" / "tabular"] if d["kind"] == "Deployment"]
    for deployment in examples:
        t = deployment["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", "spec": t["spec"],
               "metadata": {**t["metadata"], "name": f"{deployment['metadata']['name']}-abc12",
                            "namespace": deployment["metadata"]["namespace"]}}
        unannotated = {**pod, "metadata": {**pod["metadata"], "annotations": {
            k: v for k, v in pod["metadata"]["annotations"].items() if k != "sidemesh.io/inject"}}}
        for path in webhooks:
            answer = _post(port, hostname, ca, path, _review(pod, f"uid-{path}"))["response"]
            assert answer["uid"] == f"uid-{path}" and answer["allowed"] is True and answer["patchType"] == "JSONPatch"
            injected = _apply_adds(pod, json.loads(base64.b64decode(answer["patch"])))
            assert validation_errors(injected, versions) == []
            assert restricted_violations(injected["spec"]) == []
            expected_role = "shadow" if pod["metadata"]["annotations"].get("sidemesh.io/shadow") == "true" else "primary"
            assert injected["metadata"]["labels"]["sidemesh.io/role"] == expected_role
            again = _post(port, hostname, ca, path, _review(injected, "uid-again"))["response"]
            assert again["allowed"] is True and "patch" not in again  # reinvocation changes nothing
            plain = _post(port, hostname, ca, path, _review(unannotated, "uid-plain"))["response"]
            assert ("patch" in plain) is (path == "/mutate/namespace-enabled")


CHECKS = {"control-plane": _check_control_plane, "model-server": _check_model_server, "webhook": _check_injector}
