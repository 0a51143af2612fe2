"""make-certs.sh, the documented way to run the injector without cert-manager: it makes a CA
and a serving certificate for the injector's Service names, keeps the CA on renewal, and
with --apply stores the certificate in the Secret the injector mounts and the CA in every
webhook's caBundle. (test_components serves the certificate from the running injector.)"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from .render import MANIFESTS

SCRIPT = MANIFESTS / "examples" / "self-managed-certs" / "make-certs.sh"
FAKE_KUBECTL = """#!{python}
import json, os, sys
stdin = sys.stdin.read()
with open(os.environ["KUBECTL_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "stdin": stdin}}) + "\\n")
if "create" in sys.argv:
    print("kind: Secret")
"""


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _doc(rendered, kind: str, name: str) -> dict:
    return next(d for d in rendered[MANIFESTS / "base"] if d["kind"] == kind and d["metadata"]["name"] == name)


def test_the_certificate_names_the_injector_service_and_is_signed_by_the_ca(tmp_path, rendered):
    result = _run(str(tmp_path / "out"), env={"DAYS": "30"})
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    ca, cert = _cert(out / "ca.crt"), _cert(out / "tls.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == _doc(rendered, "Certificate", "sidemesh-injector")["spec"]["dnsNames"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)
    for key in ("ca.key", "tls.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600, key


def test_a_second_run_renews_the_certificate_and_keeps_the_ca(tmp_path):
    assert _run(str(tmp_path)).returncode == 0
    ca, cert = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "tls.crt").read_bytes()
    again = _run(str(tmp_path))
    assert again.returncode == 0 and "keeping the CA" in again.stdout
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert (tmp_path / "tls.crt").read_bytes() != cert
    _cert(tmp_path / "tls.crt").verify_directly_issued_by(_cert(tmp_path / "ca.crt"))


def test_apply_stores_the_secret_and_patches_every_webhooks_ca_bundle(tmp_path, rendered):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    kubectl.chmod(0o755)
    log = tmp_path / "kubectl.log"
    result = _run(str(tmp_path / "out"), "--apply",
                  env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "KUBECTL_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    out = tmp_path / "out"

    injector = _doc(rendered, "Deployment", "sidemesh-injector")
    secret = next(v["secret"]["secretName"] for v in injector["spec"]["template"]["spec"]["volumes"] if "secret" in v)
    create = next(c for c in calls if "create" in c["argv"])
    assert create["argv"] == ["-n", injector["metadata"]["namespace"], "create", "secret", "tls", secret,
                              f"--cert={out}/tls.crt", f"--key={out}/tls.key", "--dry-run=client", "-o", "yaml"]
    assert next(c for c in calls if c["argv"][:1] == ["apply"]) == {"argv": ["apply", "-f", "-"], "stdin": "kind: Secret\n"}

    patch = next(c for c in calls if c["argv"][:1] == ["patch"])
    assert patch["argv"][:4] == ["patch", "mutatingwebhookconfiguration", "sidemesh-injector", "--type=json"]
    ops = json.loads(patch["argv"][patch["argv"].index("-p") + 1])
    bundle = base64.b64encode((out / "ca.crt").read_bytes()).decode()
    webhooks = _doc(rendered, "MutatingWebhookConfiguration", "sidemesh-injector")["webhooks"]
    assert ops == [{"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle} for i in range(len(webhooks))]


@pytest.mark.parametrize("args, env, message", [
    ((), {}, "usage:"),
    (("DIR", "--aply"), {}, "usage:"),
    (("DIR",), {"DAYS": "ninety"}, "DAYS: expected a whole number of days, got 'ninety'"),
])
def test_bad_usage_is_refused_with_the_reason(tmp_path, args, env, message):
    result = _run(*[str(tmp_path / a) if a == "DIR" else a for a in args], env=env)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "DIR").exists()
