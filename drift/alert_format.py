"""Alert bodies on the wire, and their signature.

Three bodies, one per kind of receiver (docs/drift.md, "Alerts", documents each):

- ``sidemesh_body``: our own JSON, format version "1", for generic webhooks.
- ``alertmanager_webhook_body``: the body Alertmanager's own webhook notifier sends (its
  format version "4"), so receivers written for Alertmanager take our alerts unchanged.
- ``alertmanager_alerts``: the list that Alertmanager's ``POST /api/v2/alerts`` accepts.

Bodies are rendered once, when the event enters the outbox, and sent byte for byte on
every retry: the receiver's HMAC check covers exactly the stored bytes. Keys keep a fixed
order so equal events give equal bytes. JSON, times and the signature are the ones every
sidemesh notification shares (``sidemesh.notify.wire``), re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sidemesh.notify.wire import SIGNATURE_HEADER, rfc3339, sign
from sidemesh.notify.wire import dumps as _dumps

from .hysteresis import AlertEvent

__all__ = [
    "ALERTNAME",
    "FORMAT_VERSION",
    "SIGNATURE_HEADER",
    "ZERO_TIME",
    "alertmanager_alerts",
    "alertmanager_webhook_body",
    "fingerprint",
    "labels",
    "rfc3339",
    "sidemesh_body",
    "sign",
]

FORMAT_VERSION = "1"
ALERTNAME = "SidemeshInputDrift"
# Go's zero time.Time: what Alertmanager's webhook shows as endsAt while an alert fires.
ZERO_TIME = "0001-01-01T00:00:00Z"
_MAX_LISTED = 10


def sidemesh_body(event: AlertEvent) -> bytes:
    """Our documented webhook body (``version`` is this format's version; the model's
    version is ``modelVersion``)."""
    return _dumps({
        "version": FORMAT_VERSION,
        "kind": "drift",
        "status": event.status,
        "id": event.id,
        "model": event.model,
        "modelVersion": event.version,
        "startsAt": rfc3339(event.starts_at),
        "endsAt": rfc3339(event.ends_at) if event.ends_at is not None else None,
        "at": rfc3339(event.at),
        "summary": event.summary,
        "details": event.details,
    })


def labels(event: AlertEvent) -> dict[str, str]:
    """The alert's identity in Alertmanager: one alert per model version. Keys are sorted,
    as Alertmanager (Go) writes maps, so our bodies match its bytes' order."""
    return {"alertname": ALERTNAME, "model": event.model, "severity": "warning", "version": event.version}


def _annotations(event: AlertEvent) -> dict[str, str]:
    return {"description": _description(event), "summary": event.summary}


def _description(event: AlertEvent) -> str:
    """A human line from the details: window size and the first drifted features."""
    d = event.details
    parts = []
    window = d.get("window") if isinstance(d.get("window"), dict) else {}
    if isinstance(window.get("rows"), int):
        parts.append(f"window of {window['rows']} rows")
    features = [f for f in d.get("features", []) if isinstance(f, dict)] if isinstance(d.get("features"), list) else []
    listed = []
    for f in features[:_MAX_LISTED]:
        name = f"{f.get('input', '')}[{f.get('name', f.get('index', '?'))}]"
        test = f.get("decision", f.get("test"))  # the test that decided the feature's verdict
        words = [test] if isinstance(test, str) else []
        words += [f"{key}={f[key]:.4g}" for key in ("score", "p_value", "adjusted_p_value")
                  if isinstance(f.get(key), (int, float)) and not isinstance(f.get(key), bool)]
        listed.append(name + (f" ({' '.join(words)})" if words else ""))
    if listed:
        more = len(features) - len(listed)
        parts.append("drifted: " + "; ".join(listed) + (f"; and {more} more" if more > 0 else ""))
    return f"{event.model} version {event.version}: " + (", ".join(parts) if parts else event.status)


def fingerprint(label_set: dict[str, str]) -> str:
    """Alertmanager's alert fingerprint (prometheus/common ``LabelSet.Fingerprint``):
    FNV-1a 64 over sorted ``name 0xff value 0xff``, as 16 hex digits."""
    h = 0xcbf29ce484222325
    for name in sorted(label_set):
        for chunk in (name.encode(), b"\xff", label_set[name].encode(), b"\xff"):
            for byte in chunk:
                h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _group_key(receiver_route: str, group: dict[str, str]) -> str:
    inner = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(group.items()))
    return f"{receiver_route}:{{{inner}}}"


def alertmanager_webhook_body(event: AlertEvent, receiver: str = "sidemesh", external_url: str = "",
                              generator_url: str = "") -> bytes:
    """Alertmanager's webhook notification (format "4") carrying this one alert, grouped
    by alertname, model and version as an Alertmanager route would group it."""
    lbls = labels(event)
    ann = _annotations(event)
    group = {k: lbls[k] for k in ("alertname", "model", "version")}
    return _dumps({
        "receiver": receiver,
        "status": event.status,
        "alerts": [{
            "status": event.status,
            "labels": lbls,
            "annotations": ann,
            "startsAt": rfc3339(event.starts_at),
            "endsAt": rfc3339(event.ends_at) if event.ends_at is not None else ZERO_TIME,
            "generatorURL": generator_url,
            "fingerprint": fingerprint(lbls),
        }],
        "groupLabels": group,
        "commonLabels": lbls,
        "commonAnnotations": ann,
        "externalURL": external_url,
        "version": "4",
        "groupKey": _group_key("{}", group),
        "truncatedAlerts": 0,
    })


def alertmanager_alerts(events: AlertEvent | Iterable[AlertEvent], generator_url: str = "") -> bytes:
    """The body of ``POST /api/v2/alerts``. A firing alert carries no ``endsAt`` (Alertmanager
    keeps it for its ``resolve_timeout``, so it must be re-posted while firing); a resolved
    one carries ``endsAt``, which resolves it at once."""
    items = []
    for event in [events] if isinstance(events, AlertEvent) else events:
        item: dict[str, Any] = {"labels": labels(event), "annotations": _annotations(event),
                                "startsAt": rfc3339(event.starts_at)}
        if event.ends_at is not None:
            item["endsAt"] = rfc3339(event.ends_at)
        if generator_url:
            item["generatorURL"] = generator_url
        items.append(item)
    return _dumps(items)
