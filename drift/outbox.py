"""The alert outbox: notifications written to SQLite before anyone tries to send them.

An event and one delivery row per target are written in one transaction when the alert
changes state; the deliverer then works the rows off. Because the row exists before the
first attempt and is marked delivered only after a 2xx, a crash or restart at any point
loses nothing (at-least-once; receivers dedupe on the event id).

Rows of one target are delivered in order: only a target's oldest pending row is due, so a
"resolved" can never overtake the "firing" it ends (Alertmanager would re-fire an alert on
a late firing post). A row leaves the queue as delivered, failed (a permanent refusal) or
expired (older than the maximum age); finished rows stay for the alert history until pruned.

The tables live in the detector's database file beside ``store.DriftStore``'s, on their
own connection: WAL lets both write without blocking each other's readers, and the busy
timeout absorbs the short write lock. Thread-safe (one lock), like the store.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .hysteresis import AlertEvent

__all__ = ["Outbox", "OutboxRow", "Request"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_events (
    id       TEXT PRIMARY KEY,
    status   TEXT NOT NULL,
    model    TEXT NOT NULL,
    version  TEXT NOT NULL,
    at       REAL NOT NULL,
    event    TEXT NOT NULL              -- AlertEvent.to_dict() as JSON
);
CREATE INDEX IF NOT EXISTS alert_events_by_model ON alert_events (model, version, at);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    row_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL REFERENCES alert_events (id),
    target          TEXT NOT NULL,      -- the target's key (unique per configured target)
    name            TEXT NOT NULL,      -- its metrics-safe name (no query, no userinfo)
    url             TEXT NOT NULL,
    body            BLOB NOT NULL,
    headers         TEXT NOT NULL,      -- JSON object
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'expired')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    done_at         REAL,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS alert_deliveries_pending ON alert_deliveries (state, target, row_id);
CREATE INDEX IF NOT EXISTS alert_deliveries_by_event ON alert_deliveries (event_id);
"""

_INSERT_DELIVERY = ("INSERT INTO alert_deliveries (event_id, target, name, url, body, headers, state, created_at,"
                    " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)")

# A target's oldest pending row: the only one of that target that may be attempted.
_HEADS = """
SELECT d.row_id, d.event_id, e.status, d.target, d.name, d.url, d.body, d.headers, d.attempts,
       d.created_at, d.next_attempt_at, d.last_error
FROM alert_deliveries d JOIN alert_events e ON e.id = d.event_id
WHERE d.state = 'pending'
  AND d.row_id = (SELECT MIN(row_id) FROM alert_deliveries h WHERE h.state = 'pending' AND h.target = d.target)
"""


@dataclass(frozen=True, slots=True)
class Request:
    """What to send to one target for one event, rendered before it is stored."""

    target: str
    name: str
    url: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    row_id: int
    event_id: str
    status: str                 # the event's status ("firing" | "resolved"), for metrics
    target: str
    name: str
    url: str
    body: bytes
    headers: Mapping[str, str]
    attempts: int
    created_at: float
    next_attempt_at: float
    last_error: str | None


class Outbox:
    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA journal_mode=WAL")
        # A notification acknowledged to nobody yet must survive power loss, not only a crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statements: Iterable[tuple[str, tuple]]) -> list[sqlite3.Cursor]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursors = [self._db.execute(sql, args) for sql, args in statements]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return cursors

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- the queue ------------------------------------------------------------------------

    def add(self, event: AlertEvent, requests: Iterable[Request], now: float | None = None) -> list[int]:
        """Store the event and one pending row per request, atomically; return the row ids.
        With no requests the event is still recorded (it shows in the history)."""
        now = time.time() if now is None else now
        statements = [("INSERT OR IGNORE INTO alert_events VALUES (?, ?, ?, ?, ?, ?)",
                       (event.id, event.status, event.model, event.version, event.at, json.dumps(event.to_dict())))]
        for r in requests:
            statements.append((
                _INSERT_DELIVERY,
                (event.id, r.target, r.name, r.url, r.body, json.dumps(dict(r.headers)), now, now)))
        return [c.lastrowid for c in self._write(statements)[1:]]

    def due(self, now: float, limit: int = 100, target: str | None = None) -> list[OutboxRow]:
        """Rows to attempt now: each target's oldest pending row, if its retry time has come."""
        sql = _HEADS + " AND d.next_attempt_at <= ?" + (" AND d.target = ?" if target is not None else "")
        args = (now, target) if target is not None else (now,)
        return [_row(r) for r in self._read(sql + " ORDER BY d.row_id LIMIT ?", (*args, limit))]

    def next_attempt_at(self, target: str | None = None) -> float | None:
        """When the earliest head row becomes due (None: nothing pending), to sleep until then."""
        sql = "SELECT MIN(next_attempt_at) FROM (" + _HEADS + (" AND d.target = ?)" if target is not None else ")")
        return self._read(sql, (target,) if target is not None else ())[0][0]

    def delivered(self, row_id: int, at: float) -> None:
        sql = "UPDATE alert_deliveries SET state = 'delivered', attempts = attempts + 1, done_at = ? WHERE row_id = ? AND state = 'pending'"
        self._write([(sql, (at, row_id))])

    def failed(self, row_id: int, error: str, next_attempt_at: float | None, at: float | None = None) -> None:
        """Record a failed attempt: retry at ``next_attempt_at``, or never (None: the target
        refused for good, e.g. a 400), which takes the row out of the queue."""
        if next_attempt_at is None:
            at = time.time() if at is None else at
            sql = ("UPDATE alert_deliveries SET state = 'failed', attempts = attempts + 1, last_error = ?, done_at = ?"
                   " WHERE row_id = ? AND state = 'pending'")
            self._write([(sql, (error, at, row_id))])
        else:
            sql = ("UPDATE alert_deliveries SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
                   " WHERE row_id = ? AND state = 'pending'")
            self._write([(sql, (error, next_attempt_at, row_id))])

    def expire(self, created_before: float, at: float) -> dict[str, int]:
        """Give up on pending rows created before ``created_before``; return counts per target name."""
        where = "WHERE state = 'pending' AND created_at < ?"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                counts = self._db.execute(f"SELECT name, COUNT(*) FROM alert_deliveries {where} GROUP BY name",
                                          (created_before,)).fetchall()
                self._db.execute("UPDATE alert_deliveries SET state = 'expired', done_at = ?,"
                                 " last_error = COALESCE(last_error || '; ', '') || 'expired: older than the maximum age'"
                                 f" {where}", (at, created_before))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return dict(counts)

    def pending(self, target: str | None = None) -> int:
        if target is None:
            return self._read("SELECT COUNT(*) FROM alert_deliveries WHERE state = 'pending'")[0][0]
        return self._read("SELECT COUNT(*) FROM alert_deliveries WHERE state = 'pending' AND target = ?", (target,))[0][0]

    def prune(self, before: float) -> int:
        """Delete finished rows done before ``before``, and events left with no rows; return rows deleted."""
        cursors = self._write([
            ("DELETE FROM alert_deliveries WHERE state != 'pending' AND done_at < ?", (before,)),
            ("DELETE FROM alert_events WHERE at < ? AND id NOT IN (SELECT event_id FROM alert_deliveries)", (before,)),
        ])
        return cursors[0].rowcount

    # --- the history (for the HTTP API) -----------------------------------------------------

    def history(self, limit: int = 50, model: str | None = None, version: str | None = None) -> list[dict]:
        """Newest events first, each with every target's delivery state, attempts and last error."""
        where, args = [], []
        for column, value in (("model", model), ("version", version)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT id, event FROM alert_events" + (" WHERE " + " AND ".join(where) if where else "")
        events = self._read(sql + " ORDER BY at DESC, rowid DESC LIMIT ?", (*args, limit))
        if not events:
            return []
        marks = ",".join("?" * len(events))
        deliveries: dict[str, list[dict]] = {}
        for event_id, name, state, attempts, created_at, done_at, last_error in self._read(
                "SELECT event_id, name, state, attempts, created_at, done_at, last_error FROM alert_deliveries"
                f" WHERE event_id IN ({marks}) ORDER BY row_id", tuple(e[0] for e in events)):
            deliveries.setdefault(event_id, []).append({
                "target": name, "state": state, "attempts": attempts, "created_at": created_at,
                "done_at": done_at, "last_error": last_error})
        return [{**json.loads(body), "deliveries": deliveries.get(event_id, [])} for event_id, body in events]


def _row(r: tuple) -> OutboxRow:
    return OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), json.loads(r[7]), r[8], r[9], r[10], r[11])
