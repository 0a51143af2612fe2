"""The local alert receiver: where the drift detector's webhooks and Alertmanager's
notifications land while ``up`` runs, each printed as one readable line.

The detector signs its body with the secret ``up`` generated (``X-Sidemesh-Signature:
sha256=<HMAC of the raw body>``, docs/drift.md); a request whose signature does not verify
is refused with 401 and said so. Deliveries are at least once, so a notification id seen
before is acknowledged and not printed again. Alertmanager's webhook is not signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from aiohttp import web

from .configs import RECEIVER_PATHS

__all__ = ["Alert", "AlertReceiver", "verify_signature"]

_KEEP = 50


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


@dataclass(frozen=True)
class Alert:
    at: float  # when it arrived (unix seconds)
    via: str  # "detector" or "control-plane" (signed sidemesh body), or "alertmanager"
    status: str  # firing or resolved; a canary event's name (started, step, promoted, rolled_back, aborted)
    name: str  # SidemeshInputDrift for the detector's, SidemeshCanary for the control plane's
    model: str
    version: str
    summary: str

    def line(self) -> str:
        if self.via == "control-plane":
            return f"CANARY {self.status.upper()} model {self.model} version {self.version}: {self.summary} [signature verified]"
        origin = "from the drift detector, signature verified" if self.via == "detector" else "via Alertmanager"
        return f"ALERT {self.status.upper()} {self.name} model {self.model} version {self.version}: {self.summary} [{origin}]"

    def to_dict(self) -> dict:
        return {"at": self.at, "via": self.via, "status": self.status, "name": self.name, "model": self.model,
                "version": self.version, "summary": self.summary}


def _text(value: object) -> str:
    return str(value) if value is not None else "?"


class AlertReceiver:
    """An aiohttp server on ``host:port``; ``on_alert`` sees each new alert, ``on_refused`` each
    refusal (as a line)."""

    def __init__(self, host: str, port: int, secret: bytes, on_alert: Callable[[Alert], None],
                 on_refused: Callable[[str], None]) -> None:
        self.host, self.port, self.secret = host, port, secret
        self.on_alert, self.on_refused = on_alert, on_refused
        self.alerts: deque[Alert] = deque(maxlen=_KEEP)
        self.refused = 0
        self._seen: deque[str] = deque(maxlen=1000)
        self._runner: web.AppRunner | None = None

    def url(self, via: str) -> str:
        return f"http://{self.host}:{self.port}{RECEIVER_PATHS[via]}"

    async def start(self) -> None:
        app = web.Application(client_max_size=4 << 20)
        app.router.add_post(RECEIVER_PATHS["detector"], self._detector)
        app.router.add_post(RECEIVER_PATHS["alertmanager"], self._alertmanager)
        app.router.add_get(RECEIVER_PATHS["detector"], self._list)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _refuse(self, status: int, why: str) -> web.Response:
        self.refused += 1
        self.on_refused(f"alert receiver: refused a notification ({status}): {why}")
        return web.json_response({"error": why}, status=status)

    def _accept(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self.on_alert(alert)

    async def _detector(self, request: web.Request) -> web.Response:
        body = await request.read()  # the raw bytes: the signature is over them, not over re-encoded JSON
        if not verify_signature(self.secret, body, request.headers.get("X-Sidemesh-Signature")):
            return self._refuse(401, "X-Sidemesh-Signature: missing or not the HMAC-SHA256 of the body with "
                                     "this mesh's webhook secret")
        try:
            doc = json.loads(body)
            event_id, status = str(doc["id"]), str(doc["status"])
        except (ValueError, KeyError, TypeError):
            return self._refuse(400, "body: expected the sidemesh alert JSON (docs/drift.md) with 'id' and 'status'")
        if event_id in self._seen:
            return web.json_response({"duplicate": True})
        self._seen.append(event_id)
        # The control plane's canary events come in the same signed envelope (kind "canary").
        name = "SidemeshCanary" if doc.get("kind") == "canary" else "SidemeshInputDrift"
        source = "control-plane" if doc.get("kind") == "canary" else "detector"
        self._accept(Alert(time.time(), source, status, name, _text(doc.get("model")),
                           _text(doc.get("modelVersion")), _text(doc.get("summary"))))
        return web.json_response({"received": True})

    async def _alertmanager(self, request: web.Request) -> web.Response:
        try:
            doc = json.loads(await request.read())
            alerts = list(doc["alerts"])
        except (ValueError, KeyError, TypeError):
            return self._refuse(400, "body: expected Alertmanager's webhook JSON (version 4) with 'alerts'")
        for item in alerts:
            if not isinstance(item, dict):
                continue
            labels, notes = item.get("labels") or {}, item.get("annotations") or {}
            self._accept(Alert(time.time(), "alertmanager", _text(item.get("status")), _text(labels.get("alertname")),
                               _text(labels.get("model")), _text(labels.get("version")),
                               _text(notes.get("summary") or notes.get("description"))))
        return web.json_response({"received": len(alerts)})

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"alerts": [a.to_dict() for a in self.alerts], "refused": self.refused})
