"""A notification type that is not the drift detector's: what a canary controller might emit."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from sidemesh.notify import dumps, rfc3339

__all__ = ["Note", "body", "note"]

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Note:
    id: str
    status: str
    model: str
    version: str
    at: float
    summary: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "model": self.model, "version": self.version, "at": self.at,
                "summary": self.summary, "details": dict(self.details)}


def note(status: str = "step", model: str = "m", version: str = "v2", at: float = 1_700_000_000.0, **details) -> Note:
    return Note(f"n-{next(_ids)}", status, model, version, at, f"{model} {status}", details)


def body(event: Note) -> bytes:
    """The owner's own JSON body, shaped like the contract's canary event."""
    return dumps({"version": "1", "kind": "canary", "status": event.status, "id": event.id, "model": event.model,
                  "modelVersion": event.version, "at": rfc3339(event.at), "summary": event.summary,
                  "details": event.details})
