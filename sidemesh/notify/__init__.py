"""Signed, at-least-once webhook notifications through an SQLite outbox, shared by the drift
detector (alerts) and the control plane (canary events).

- ``outbox``: events and per-target delivery rows, written before any attempt; per-target order.
- ``delivery``: ``WebhookTarget`` (URL, secret, the owner's body renderer), ``DeliveryPolicy``,
  ``DeliveryMetrics`` (the owner's instruments) and ``Deliverer`` (one worker per target).
- ``wire``: compact JSON, RFC 3339 times, the event-id header and the HMAC signature.
"""

from .delivery import Deliverer, DeliveryMetrics, DeliveryPolicy, WebhookTarget, check_url, json_body, target_name
from .errors import ConfigError, DeliveryError, NotifyError
from .outbox import Event, Outbox, OutboxRow, Request
from .wire import EVENT_ID_HEADER, SIGNATURE_HEADER, dumps, rfc3339, sign

__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "ConfigError",
    "Deliverer",
    "DeliveryError",
    "DeliveryMetrics",
    "DeliveryPolicy",
    "Event",
    "NotifyError",
    "Outbox",
    "OutboxRow",
    "Request",
    "WebhookTarget",
    "check_url",
    "dumps",
    "json_body",
    "rfc3339",
    "sign",
    "target_name",
]
