"""What every notification shares on the wire: compact JSON, RFC 3339 times, the event-id
header receivers dedupe on, and the HMAC signature they verify.

Bodies are rendered once, when an event enters the outbox, and sent byte for byte on every
retry, so a receiver's HMAC check covers exactly the stored bytes. The signature itself is
computed at send time from the secret configured then (see ``delivery``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from .errors import ConfigError

__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "dumps", "rfc3339", "sign"]

SIGNATURE_HEADER = "X-Sidemesh-Signature"
EVENT_ID_HEADER = "X-Sidemesh-Event-Id"


def dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON with keys in the order given, so equal documents give equal bytes."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def rfc3339(ts: float) -> str:
    """UTC, millisecond precision, "Z" suffix: e.g. 2026-11-03T10:15:00.250Z."""
    ms = round(ts * 1000)
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def sign(body: bytes, secret: bytes | str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the raw body bytes with the shared secret."""
    key = secret.encode() if isinstance(secret, str) else secret
    if not isinstance(key, bytes) or not key:
        raise ConfigError("webhook secret: expected non-empty bytes")
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
