"""The webhook's serving certificate, re-read when its files change.

cert-manager (or any rotation) replaces the certificate and key files in place; a
Kubernetes Secret volume swaps a symlink. On every TLS handshake the server's context
checks the files' identity (inode, size, mtime; two ``stat`` calls) and, when it changed,
loads them into a fresh ``SSLContext`` that this and later handshakes use. A pair that
does not load (a half-written rotation) keeps the previous certificate in service until the
files change again.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Callable

__all__ = ["ReloadingCertificate"]

log = logging.getLogger("sidemesh.injector")


def _load(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class ReloadingCertificate:
    """``context`` is what the server listens with; ``on_reload(ok)`` is told of each
    reload attempt (for metrics)."""

    def __init__(self, cert: Path, key: Path, on_reload: Callable[[bool], None] = lambda ok: None) -> None:
        self._cert, self._key = Path(cert), Path(key)
        self._on_reload = on_reload
        try:
            self._stamp = self._identity()
            self._current = _load(self._cert, self._key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--tls-cert/--tls-key: cannot load a certificate and key from {cert} and {key} ({exc})") from None
        self.context = _load(self._cert, self._key)
        self.context.sni_callback = self._on_hello

    def _identity(self) -> tuple:
        a, b = os.stat(self._cert), os.stat(self._key)
        return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)

    def current(self) -> ssl.SSLContext:
        """The context with the files' latest loadable certificate."""
        try:
            stamp = self._identity()
        except OSError as exc:
            stamp = ("unreadable", str(exc))
        if stamp == self._stamp:
            return self._current
        self._stamp = stamp  # tried once per change: a half-written pair is retried when the rest lands
        try:
            current = _load(self._cert, self._key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("the serving certificate changed but does not load (%s); keeping the previous one", exc)
            self._on_reload(False)
        else:
            self._current = current
            log.info("serving certificate reloaded from %s", self._cert)
            self._on_reload(True)
        return self._current

    def _on_hello(self, connection, server_name: str | None, context: ssl.SSLContext) -> None:
        connection.context = self.current()
