"""The notification outbox: events written to SQLite before anyone tries to send them.

An event and one delivery row per target are written in one transaction when something
worth telling happens; the deliverer then works the rows off. Because the row exists before
the first attempt and is marked delivered only after a 2xx, a crash or restart at any point
loses nothing (at-least-once; receivers dedupe on the event id).

Rows of one target are delivered in order: only a target's oldest pending row is due, so a
later event can never overtake an earlier one it follows (a "resolved" its "firing", a
"promoted" its "step"). A row leaves the queue as delivered, failed (a permanent refusal) or
expired (older than the maximum age); finished rows stay for the history until pruned.

The tables (``<prefix>_events``, ``<prefix>_deliveries``) live in the owner's database file
beside its other tables, on their own connection: WAL lets both write without blocking each
other's readers, and the busy timeout absorbs the short write lock. Several outboxes with
different prefixes can share one file. Thread-safe (one lock).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import ConfigError

__all__ = ["Event", "Outbox", "OutboxRow", "Request"]

_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,30}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}_events (
    id       TEXT PRIMARY KEY,
    status   TEXT NOT NULL,
    model    TEXT NOT NULL,
    version  TEXT NOT NULL,
    at       REAL NOT NULL,
    event    TEXT NOT NULL              -- the event's to_dict() as JSON
);
CREATE INDEX IF NOT EXISTS {p}_events_by_model ON {p}_events (model, version, at);
CREATE TABLE IF NOT EXISTS {p}_deliveries (
    row_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL REFERENCES {p}_events (id),
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
CREATE INDEX IF NOT EXISTS {p}_deliveries_pending ON {p}_deliveries (state, target, row_id);
CREATE INDEX IF NOT EXISTS {p}_deliveries_by_event ON {p}_deliveries (event_id);
"""

# A target's oldest pending row: the only one of that target that may be attempted.
_HEADS = """
SELECT d.row_id, d.event_id, e.status, d.target, d.name, d.url, d.body, d.headers, d.attempts,
       d.created_at, d.next_attempt_at, d.last_error
FROM {p}_deliveries d JOIN {p}_events e ON e.id = d.event_id
WHERE d.state = 'pending'
  AND d.row_id = (SELECT MIN(row_id) FROM {p}_deliveries h WHERE h.state = 'pending' AND h.target = d.target)
"""


class Event(Protocol):
    """What the outbox stores: an id receivers dedupe on, a status (a metrics label), the model
    version it is about, when it happened (unix seconds), and its JSON-ready history form."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def at(self) -> float: ...
    def to_dict(self) -> dict: ...


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
    status: str                 # the event's status, for metrics
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
    """``Outbox(path, prefix="alert")`` keeps its rows in ``alert_events`` / ``alert_deliveries``."""

    def __init__(self, path: str | Path, prefix: str = "alert") -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise ConfigError(f"outbox prefix: expected a lowercase SQL name like 'alert' ([a-z][a-z0-9_]*), got {prefix!r}")
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.prefix = prefix
        self._events = f"{prefix}_events"
        self._deliveries = f"{prefix}_deliveries"
        self._heads = _HEADS.format(p=prefix)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA journal_mode=WAL")
        # A notification acknowledged to nobody yet must survive power loss, not only a crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA.format(p=prefix))
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

    def add(self, event: Event, requests: Iterable[Request], now: float | None = None) -> list[int]:
        """Store the event and one pending row per request, atomically; return the row ids.
        With no requests the event is still recorded (it shows in the history)."""
        now = time.time() if now is None else now
        statements = [(f"INSERT OR IGNORE INTO {self._events} VALUES (?, ?, ?, ?, ?, ?)",
                       (event.id, event.status, event.model, event.version, event.at, json.dumps(event.to_dict())))]
        insert = (f"INSERT INTO {self._deliveries} (event_id, target, name, url, body, headers, state, created_at,"
                  " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)")
        for r in requests:
            statements.append((insert, (event.id, r.target, r.name, r.url, r.body, json.dumps(dict(r.headers)), now, now)))
        return [c.lastrowid for c in self._write(statements)[1:]]

    def due(self, now: float, limit: int = 100, target: str | None = None) -> list[OutboxRow]:
        """Rows to attempt now: each target's oldest pending row, if its retry time has come."""
        sql = self._heads + " AND d.next_attempt_at <= ?" + (" AND d.target = ?" if target is not None else "")
        args = (now, target) if target is not None else (now,)
        return [_row(r) for r in self._read(sql + " ORDER BY d.row_id LIMIT ?", (*args, limit))]

    def next_attempt_at(self, target: str | None = None) -> float | None:
        """When the earliest head row becomes due (None: nothing pending), to sleep until then."""
        sql = "SELECT MIN(next_attempt_at) FROM (" + self._heads + (" AND d.target = ?)" if target is not None else ")")
        return self._read(sql, (target,) if target is not None else ())[0][0]

    def delivered(self, row_id: int, at: float) -> None:
        sql = (f"UPDATE {self._deliveries} SET state = 'delivered', attempts = attempts + 1, done_at = ?"
               " WHERE row_id = ? AND state = 'pending'")
        self._write([(sql, (at, row_id))])

    def failed(self, row_id: int, error: str, next_attempt_at: float | None, at: float | None = None) -> None:
        """Record a failed attempt: retry at ``next_attempt_at``, or never (None: the target
        refused for good, e.g. a 400), which takes the row out of the queue."""
        if next_attempt_at is None:
            at = time.time() if at is None else at
            sql = (f"UPDATE {self._deliveries} SET state = 'failed', attempts = attempts + 1, last_error = ?, done_at = ?"
                   " WHERE row_id = ? AND state = 'pending'")
            self._write([(sql, (error, at, row_id))])
        else:
            sql = (f"UPDATE {self._deliveries} SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
                   " WHERE row_id = ? AND state = 'pending'")
            self._write([(sql, (error, next_attempt_at, row_id))])

    def expire(self, created_before: float, at: float) -> dict[str, int]:
        """Give up on pending rows created before ``created_before``; return counts per target name."""
        where = "WHERE state = 'pending' AND created_at < ?"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                counts = self._db.execute(f"SELECT name, COUNT(*) FROM {self._deliveries} {where} GROUP BY name",
                                          (created_before,)).fetchall()
                self._db.execute(f"UPDATE {self._deliveries} SET state = 'expired', done_at = ?,"
                                 " last_error = COALESCE(last_error || '; ', '') || 'expired: older than the maximum age'"
                                 f" {where}", (at, created_before))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return dict(counts)

    def pending(self, target: str | None = None) -> int:
        if target is None:
            return self._read(f"SELECT COUNT(*) FROM {self._deliveries} WHERE state = 'pending'")[0][0]
        return self._read(f"SELECT COUNT(*) FROM {self._deliveries} WHERE state = 'pending' AND target = ?", (target,))[0][0]

    def prune(self, before: float) -> int:
        """Delete finished rows done before ``before``, and events left with no rows; return rows deleted."""
        cursors = self._write([
            (f"DELETE FROM {self._deliveries} WHERE state != 'pending' AND done_at < ?", (before,)),
            (f"DELETE FROM {self._events} WHERE at < ? AND id NOT IN (SELECT event_id FROM {self._deliveries})", (before,)),
        ])
        return cursors[0].rowcount

    # --- the history (for HTTP APIs) --------------------------------------------------------

    def history(self, limit: int = 50, model: str | None = None, version: str | None = None) -> list[dict]:
        """Newest events first, each with every target's delivery state, attempts and last error."""
        where, args = [], []
        for column, value in (("model", model), ("version", version)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT id, event FROM {self._events}" + (" WHERE " + " AND ".join(where) if where else "")
        events = self._read(sql + " ORDER BY at DESC, rowid DESC LIMIT ?", (*args, limit))
        if not events:
            return []
        marks = ",".join("?" * len(events))
        deliveries: dict[str, list[dict]] = {}
        for event_id, name, state, attempts, created_at, done_at, last_error in self._read(
                f"SELECT event_id, name, state, attempts, created_at, done_at, last_error FROM {self._deliveries}"
                f" WHERE event_id IN ({marks}) ORDER BY row_id", tuple(e[0] for e in events)):
            deliveries.setdefault(event_id, []).append({
                "target": name, "state": state, "attempts": attempts, "created_at": created_at,
                "done_at": done_at, "last_error": last_error})
        return [{**json.loads(body), "deliveries": deliveries.get(event_id, [])} for event_id, body in events]


def _row(r: tuple) -> OutboxRow:
    return OutboxRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), json.loads(r[7]), r[8], r[9], r[10], r[11])
