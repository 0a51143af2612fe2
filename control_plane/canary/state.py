"""A canary's record and where it is kept: a ``canaries`` table in the control plane's
SQLite file, beside the routes, so a running canary survives a restart and is resumed.

The record is written at every transition (start, each step, the end), never per tick:
between transitions the live measurement is held in memory only (as are the load reports
behind it).
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..store import open_database
from .spec import CanarySpec

__all__ = ["ACTIVE", "FINISHED", "Canary", "CanaryStore", "new_id"]

ACTIVE = ("shadow", "step")
FINISHED = ("promoted", "rolled_back", "aborted")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS canaries (
    id         TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    active     INTEGER NOT NULL,
    started_at REAL NOT NULL,
    doc        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS canaries_by_model ON canaries (model, started_at);
"""


def new_id() -> str:
    return "c-" + secrets.token_hex(6)


@dataclass
class Canary:
    """Mutable on purpose: only the controller changes it, on the event loop."""

    id: str
    model: str
    spec: CanarySpec
    baseline_route: dict  # the route before the canary: what a rollback restores
    state: str
    started_at: float
    phase_started_at: float
    route_version: int  # the last routing version the canary wrote
    step: int | None = None
    weight: float = 0.0
    finished_at: float | None = None
    reason: str | None = None
    failed_gate: str | None = None
    history: list[dict] = field(default_factory=list)
    # Updated every tick in memory, saved at transitions: the figures behind the latest decision.
    measurement: dict | None = None
    gates: list[dict] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def candidate(self) -> str:
        return self.spec.to

    @property
    def baseline(self) -> dict[str, int]:
        return {b["version"]: b["weight"] for b in self.baseline_route["backends"] if b["weight"] > 0}

    @property
    def phase(self) -> str:
        if self.state == "shadow":
            return "shadow"
        if self.state == "step" and self.step is not None:
            return f"step {self.step + 1}/{len(self.spec.steps)} ({self.spec.steps[self.step]}%)"
        return self.state

    def record(self, at: float, event: str, summary: str, route_version: int | None) -> dict:
        entry = {"at": at, "event": event, "summary": summary, "route_version": route_version}
        self.history.append(entry)
        return entry

    def to_dict(self) -> dict:
        return {
            "id": self.id, "model": self.model, "candidate": self.candidate, "baseline": self.baseline,
            "state": self.state, "active": self.active, "phase": self.phase, "step": self.step, "weight": self.weight,
            "spec": self.spec.to_dict(), "started_at": self.started_at, "phase_started_at": self.phase_started_at,
            "finished_at": self.finished_at, "reason": self.reason, "failed_gate": self.failed_gate,
            "route_version": self.route_version, "measurement": self.measurement, "gates": self.gates,
            "history": self.history,
        }

    def _persisted(self) -> dict:
        doc = self.to_dict()
        doc["baseline_route"] = self.baseline_route
        for key in ("candidate", "baseline", "active", "phase"):
            doc.pop(key)
        return doc

    @classmethod
    def _from_persisted(cls, doc: dict) -> "Canary":
        args = dict(doc)
        args["spec"] = CanarySpec.from_dict(doc["spec"])
        return cls(**args)


class CanaryStore:
    """Thread-safe; its own connection to the control plane's database file."""

    def __init__(self, path: Path | str) -> None:
        self._db = open_database(path, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def save(self, canary: Canary) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO canaries (id, model, active, started_at, doc) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET active = excluded.active, doc = excluded.doc",
                (canary.id, canary.model, int(canary.active), canary.started_at, json.dumps(canary._persisted())))

    def active(self) -> list[Canary]:
        rows = self._db.execute("SELECT doc FROM canaries WHERE active = 1 ORDER BY started_at").fetchall()
        return [Canary._from_persisted(json.loads(doc)) for (doc,) in rows]

    def latest(self, model: str) -> Canary | None:
        row = self._db.execute("SELECT doc FROM canaries WHERE model = ? ORDER BY started_at DESC LIMIT 1", (model,)).fetchone()
        return Canary._from_persisted(json.loads(row[0])) if row else None

    def latest_per_model(self) -> list[Canary]:
        rows = self._db.execute("SELECT c.doc FROM canaries c WHERE c.started_at = "
                                "(SELECT MAX(started_at) FROM canaries d WHERE d.model = c.model) ORDER BY c.model").fetchall()
        return [Canary._from_persisted(json.loads(doc)) for (doc,) in rows]
