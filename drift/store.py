"""The drift detector's durable state in one SQLite file.

What the user gave and what the detector has learnt survives a restart: reference profiles,
pending reference captures, windows in progress (checkpointed every few seconds together
with the last report sequence applied per sidecar, in one transaction, so a report resent
after a restart is applied exactly once relative to the checkpoint), the alert tracker's
state, and the evaluation history. The alert outbox lives in the same file, in its own
tables, behind its own connection (``sidemesh.notify.Outbox``).

Statistics are stored as serialized ``InputStats`` messages: the wire format is the storage
format.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = ["DriftStore", "StoredReference", "StoredWindow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS references_ (
    model      TEXT NOT NULL,
    version    TEXT NOT NULL,
    input      TEXT NOT NULL,
    stats      BLOB NOT NULL,
    source     TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (model, version, input)
);
CREATE TABLE IF NOT EXISTS captures (
    model      TEXT NOT NULL,
    version    TEXT NOT NULL,
    rows_      INTEGER NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS windows (
    model      TEXT NOT NULL,
    version    TEXT NOT NULL,
    kind       TEXT NOT NULL,        -- 'window' or 'capture'
    input      TEXT NOT NULL,
    stats      BLOB NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (model, version, kind, input)
);
CREATE TABLE IF NOT EXISTS sources (
    source   TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,
    dropped  INTEGER NOT NULL,
    seen_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    model    TEXT NOT NULL,
    version  TEXT NOT NULL,
    at       REAL NOT NULL,
    verdict  TEXT NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_by_model ON evaluations (model, version, id);
"""


@dataclass(frozen=True, slots=True)
class StoredReference:
    model: str
    version: str
    input: str
    stats: bytes
    source: str
    created_at: float


@dataclass(frozen=True, slots=True)
class StoredWindow:
    model: str
    version: str
    kind: str
    input: str
    stats: bytes
    started_at: float


class DriftStore:
    """Thread-safe (one lock): evaluations are written from the evaluation thread."""

    def __init__(self, path: str | Path, history_per_version: int = 1000) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.history_per_version = history_per_version

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statements: Iterable[tuple[str, tuple]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- references and captures ------------------------------------------------------

    def put_reference(self, ref: StoredReference) -> None:
        self._write([("INSERT OR REPLACE INTO references_ VALUES (?, ?, ?, ?, ?, ?)",
                      (ref.model, ref.version, ref.input, ref.stats, ref.source, ref.created_at))])

    def delete_references(self, model: str, version: str) -> int:
        with self._lock:
            cur = self._db.execute("DELETE FROM references_ WHERE model = ? AND version = ?", (model, version))
            return cur.rowcount

    def references(self) -> list[StoredReference]:
        rows = self._read("SELECT model, version, input, stats, source, created_at FROM references_ ORDER BY 1, 2, 3")
        return [StoredReference(*row) for row in rows]

    def put_capture(self, model: str, version: str, rows: int, started_at: float) -> None:
        self._write([("INSERT OR REPLACE INTO captures VALUES (?, ?, ?, ?)", (model, version, rows, started_at)),
                     ("DELETE FROM windows WHERE model = ? AND version = ? AND kind = 'capture'", (model, version))])

    def finish_capture(self, model: str, version: str, references: list[StoredReference]) -> None:
        """Store the captured references and end the capture, in one transaction."""
        statements = [("INSERT OR REPLACE INTO references_ VALUES (?, ?, ?, ?, ?, ?)",
                       (r.model, r.version, r.input, r.stats, r.source, r.created_at)) for r in references]
        statements.append(("DELETE FROM captures WHERE model = ? AND version = ?", (model, version)))
        statements.append(("DELETE FROM windows WHERE model = ? AND version = ? AND kind = 'capture'", (model, version)))
        self._write(statements)

    def captures(self) -> list[tuple[str, str, int, float]]:
        return self._read("SELECT model, version, rows_, started_at FROM captures ORDER BY 1, 2")

    # --- checkpoints of windows in progress ---------------------------------------------

    def checkpoint(self, windows: list[StoredWindow], sources: dict[str, tuple[int, int, float]]) -> None:
        """Replace every stored window and the per-source sequences, atomically."""
        statements: list[tuple[str, tuple]] = [("DELETE FROM windows", ())]
        statements += [("INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?)",
                         (w.model, w.version, w.kind, w.input, w.stats, w.started_at)) for w in windows]
        statements += [("INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?)", (source, seq, dropped, seen))
                       for source, (seq, dropped, seen) in sources.items()]
        # Sidecars come and go: forget sources silent for a day.
        statements.append(("DELETE FROM sources WHERE seen_at < ?", (time.time() - 86400,)))
        self._write(statements)

    def windows(self) -> list[StoredWindow]:
        rows = self._read("SELECT model, version, kind, input, stats, started_at FROM windows ORDER BY 1, 2, 3, 4")
        return [StoredWindow(*row) for row in rows]

    def sources(self) -> dict[str, tuple[int, int, float]]:
        return {s: (seq, dropped, seen) for s, seq, dropped, seen in self._read("SELECT * FROM sources")}

    # --- small JSON values (the alert tracker's state) ----------------------------------

    def put_value(self, key: str, value: Any) -> None:
        self._write([("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(value)))])

    def value(self, key: str, default: Any = None) -> Any:
        rows = self._read("SELECT value FROM kv WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    # --- evaluation history -------------------------------------------------------------

    def add_evaluation(self, model: str, version: str, at: float, verdict: str, body: dict,
                       state_key: str | None = None, state: Any = None) -> None:
        """Record an evaluation (and, in the same transaction, the alert state it led to)."""
        statements = [
            ("INSERT INTO evaluations (model, version, at, verdict, body) VALUES (?, ?, ?, ?, ?)",
             (model, version, at, verdict, json.dumps(body))),
            ("DELETE FROM evaluations WHERE model = ? AND version = ? AND id <= "
             "(SELECT id FROM evaluations WHERE model = ? AND version = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
             (model, version, model, version, self.history_per_version)),
        ]
        if state_key is not None:
            statements.append(("INSERT OR REPLACE INTO kv VALUES (?, ?)", (state_key, json.dumps(state))))
        self._write(statements)

    def evaluations(self, model: str, version: str, limit: int = 50) -> list[dict]:
        rows = self._read("SELECT body FROM evaluations WHERE model = ? AND version = ? ORDER BY id DESC LIMIT ?",
                          (model, version, limit))
        return [json.loads(body) for (body,) in rows]

    def latest_evaluations(self) -> list[dict]:
        rows = self._read("SELECT body FROM evaluations WHERE id IN "
                          "(SELECT MAX(id) FROM evaluations GROUP BY model, version) ORDER BY model, version")
        return [json.loads(body) for (body,) in rows]

    def verdicts(self, model: str, version: str, limit: int = 50) -> list[tuple[float, str, int, int, int]]:
        """(at, verdict, rows, drifted features, features tested), newest first: the history
        without parsing each evaluation's per-feature body in Python (SQLite's JSON1 does it)."""
        return self._read("SELECT at, verdict, COALESCE(json_extract(body, '$.window.rows'), 0), "
                          "COALESCE(json_extract(body, '$.drifted_features'), 0), "
                          "COALESCE(json_array_length(body, '$.features'), 0) "
                          "FROM evaluations WHERE model = ? AND version = ? ORDER BY id DESC LIMIT ?",
                          (model, version, limit))
