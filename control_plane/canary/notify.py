"""Canary events to the control plane's ``--webhook`` URLs, through the shared outbox
(``sidemesh.notify``): written to the control plane's SQLite file before the first attempt
(tables ``canary_events`` / ``canary_deliveries``), delivered at least once and in order per
receiver, signed when a secret is given, resumed after a restart."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from prometheus_client import CollectorRegistry

from sidemesh.notify import Deliverer, DeliveryMetrics, Outbox, WebhookTarget

from ..errors import ControlPlaneError
from .events import CanaryEvent, body

__all__ = ["start_events", "read_secret"]


def read_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ControlPlaneError(f"--webhook-secret-file: cannot read {path} ({exc.strerror or exc})") from None
    if not secret:
        raise ControlPlaneError(f"--webhook-secret-file: {path} is empty; put the shared secret in it")
    return secret


async def start_events(stack: contextlib.AsyncExitStack, state: Path, webhooks: tuple[str, ...], secret_file: Path | None,
                       registry: CollectorRegistry) -> Callable[[CanaryEvent], None]:
    """Start delivery and return ``notify(event)``; without webhooks events are only recorded
    with the canary (there is nobody to send them to)."""
    if not webhooks:
        if secret_file is not None:
            raise ControlPlaneError("--webhook-secret-file: given without any --webhook to sign for")
        return lambda event: None
    secret = read_secret(secret_file) if secret_file is not None else None
    try:
        targets = [WebhookTarget(url, secret, body) for url in webhooks]
    except ValueError as exc:
        raise ControlPlaneError(str(exc)) from None
    outbox = Outbox(state, prefix="canary")
    stack.callback(outbox.close)
    metrics = DeliveryMetrics.create(registry, sent="sidemesh_canary_events_sent_total", failed="sidemesh_canary_events_failed_total",
                                     expired="sidemesh_canary_events_expired_total", pending="sidemesh_canary_outbox_pending",
                                     what="Canary events")
    deliverer = Deliverer(outbox, targets, metrics, user_agent="sidemesh-control-plane")
    await deliverer.start()
    stack.push_async_callback(deliverer.stop)  # stops before the outbox closes
    return deliverer.notify
