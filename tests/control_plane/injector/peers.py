"""The webhook as a real ``sidemesh webhook`` process over TLS, and the certificates it
serves: a test CA and leaf certificates for ``localhost`` / ``127.0.0.1``, made with
``cryptography``; the client verifies the served certificate against the CA."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCA", "WebhookProcess"]

_SERVING = re.compile(r"serving https://127\.0\.0\.1:(\d+)/mutate")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class TestCA:
    """A CA whose leaf certificates the webhook serves; ``cafile`` is what clients trust."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        public = self._key.public_key()
        self.certificate = (
            x509.CertificateBuilder().subject_name(_name("sidemesh test CA")).issuer_name(_name("sidemesh test CA"))
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cafile = directory / "ca.pem"
        self.cafile.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM) for localhost and 127.0.0.1."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def write(self, common_name: str, cert_path: Path, key_path: Path) -> None:
        """Replace the pair the way a Secret volume does: new files renamed into place."""
        cert, key = self.issue(common_name)
        for path, data in ((key_path, key), (cert_path, cert)):
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)


@dataclass(frozen=True)
class Reply:
    status: int
    body: object
    peer_common_name: str  # the CN of the certificate the server presented


class WebhookProcess:
    """``sidemesh webhook --listen 127.0.0.1:0`` with a certificate from ``ca``; waits for
    its "ready" line (an event, not a sleep); ``stop()`` sends SIGTERM and returns the exit code."""

    def __init__(self, ca: TestCA, *args: str, common_name: str = "webhook-1") -> None:
        self.ca = ca
        self.cert, self.key = ca.directory / "tls.crt", ca.directory / "tls.key"
        ca.write(common_name, self.cert, self.key)
        cmd = [sys.executable, "-m", "sidemesh", "webhook", "--listen", "127.0.0.1:0", "--tls-cert", str(self.cert),
               "--tls-key", str(self.key), *args]
        self.popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []
        self.port = 0
        for line in self.popen.stdout:
            self.lines.append(line)
            if match := _SERVING.search(line):
                self.port = int(match.group(1))
            if line.rstrip().endswith("sidemesh webhook: ready"):
                break
        else:
            code = self.popen.wait()
            self.popen.stdout.close()
            raise AssertionError(f"sidemesh webhook exited ({code}):\n{''.join(self.lines)}")
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.cafile))

    def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        """One HTTPS request on a new connection (a new TLS handshake), verifying the certificate."""
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.client_context(), timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body is not None else {})
            response = conn.getresponse()
            data = response.read()
            peer = x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True))
            cn = peer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            ctype = response.getheader("Content-Type", "")
            return Reply(response.status, json.loads(data) if "json" in ctype else data.decode(), cn)
        finally:
            conn.close()

    def review(self, review: dict, path: str = "/mutate") -> dict:
        reply = self.request("POST", path, json.dumps(review).encode())
        assert reply.status == 200, reply
        assert reply.body["apiVersion"] == "admission.k8s.io/v1" and reply.body["kind"] == "AdmissionReview", reply.body
        assert reply.body["response"]["uid"] == review["request"]["uid"]
        return reply.body["response"]

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from /metrics (0 when the series does not exist yet)."""
        text = self.request("GET", "/metrics").body
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series == want:
                return float(value)
        return 0.0

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        code = self.popen.wait()
        self._drain.join(timeout=10)
        self.popen.stdout.close()
        return code
