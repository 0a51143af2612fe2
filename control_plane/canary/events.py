"""Canary events for webhooks: one per transition (started, step, promoted, rolled_back,
aborted), in the same envelope as the drift detector's alerts (``kind`` tells them apart),
delivered at least once, in order, through the shared outbox (``sidemesh.notify``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sidemesh.notify import dumps, rfc3339

from .state import Canary

__all__ = ["CanaryEvent", "EVENTS", "FORMAT_VERSION", "body", "event_for"]

FORMAT_VERSION = "1"
EVENTS = ("started", "step", "promoted", "rolled_back", "aborted")


@dataclass(frozen=True)
class CanaryEvent:
    """``status`` is the event; ``version`` the candidate (the outbox's event shape)."""

    id: str
    status: str
    model: str
    version: str
    at: float
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "model": self.model, "version": self.version, "at": self.at,
                "summary": self.summary, "details": self.details}


def event_for(canary: Canary, event: str, summary: str, at: float) -> CanaryEvent:
    details = {"canary": canary.id, "state": canary.state, "step": canary.step, "weight": canary.weight,
               "reason": canary.reason, "failed_gate": canary.failed_gate, "measurement": canary.measurement,
               "gates": canary.gates, "route_version": canary.route_version, "baseline": canary.baseline}
    return CanaryEvent(str(uuid.uuid4()), event, canary.model, canary.candidate, at, summary, details)


def body(event: CanaryEvent) -> bytes:
    """The drift alerts' envelope and encoding, ``kind`` "canary"."""
    return dumps({
        "version": FORMAT_VERSION, "kind": "canary", "status": event.status, "id": event.id, "model": event.model,
        "modelVersion": event.version, "at": rfc3339(event.at), "summary": event.summary, "details": event.details,
    })
