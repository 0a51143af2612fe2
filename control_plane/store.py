"""The routing state in SQLite: current routes plus the history of every change.

Every accepted change (put, delete, rollback) gets the next value of one global,
monotonically increasing version (SQLite AUTOINCREMENT never reuses one), recorded with
its time, author and a diff. ``rollback`` restores a model's route as it was before its
latest change, as a new change, so rolling back twice returns to where it started (as
``kubectl rollout undo`` does). State and history survive restarts; ``:memory:`` is for
tests.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Conflict, NotFound
from .routing import Route

__all__ = ["Change", "RouteStore", "diff_routes", "open_database"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    version  INTEGER PRIMARY KEY AUTOINCREMENT,
    model    TEXT NOT NULL,
    at       REAL NOT NULL,
    author   TEXT NOT NULL,
    action   TEXT NOT NULL,
    route    TEXT,
    previous TEXT,
    diff     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_model ON changes (model, version);
CREATE TABLE IF NOT EXISTS routes (
    model   TEXT PRIMARY KEY,
    route   TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    node_id  TEXT PRIMARY KEY,
    metadata TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Change:
    version: int
    model: str
    at: float
    author: str
    action: str  # "put", "delete" or "rollback"
    route: dict | None
    diff: dict

    def to_dict(self) -> dict:
        return {"version": self.version, "model": self.model, "at": self.at, "author": self.author,
                "action": self.action, "route": self.route, "diff": self.diff}


def _flatten(doc: dict | None) -> dict[str, Any]:
    """Route JSON as dotted paths; backends and mirrors keyed by version, not position."""
    if doc is None:
        return {}
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in ("backends", "mirrors"):
            for item in value:
                for k, v in item.items():
                    if k != "version":
                        flat[f"{key}.{item['version']}.{k}"] = v
        elif isinstance(value, dict):
            for k, v in value.items():
                flat[f"{key}.{k}"] = v
        else:
            flat[key] = value
    return flat


def diff_routes(before: dict | None, after: dict | None) -> dict[str, list]:
    """``{"backends.v2.weight": [10, 50], ...}``: each changed path with [old, new]."""
    a, b = _flatten(before), _flatten(after)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def open_database(path: Path | str, schema: str) -> sqlite3.Connection:
    """A connection to the control plane's file (created with its folder when missing) in WAL
    mode with full sync, autocommit, usable from any thread, with ``schema`` applied. Each
    store opens its own; WAL lets them write without blocking each other's readers."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


class RouteStore:
    """Thread-safe; every method is one short transaction."""

    def __init__(self, path: Path | str) -> None:
        self._db = open_database(path, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    @property
    def version(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(version), 0) FROM changes").fetchone()
        return row[0]

    def routes(self) -> dict[str, tuple[Route, int]]:
        """Every model's route with the version of its latest change."""
        rows = self._db.execute("SELECT model, route, version FROM routes ORDER BY model").fetchall()
        return {m: (Route.from_dict(m, json.loads(doc)), v) for m, doc, v in rows}

    def get(self, model: str) -> tuple[Route, int]:
        row = self._db.execute("SELECT route, version FROM routes WHERE model = ?", (model,)).fetchone()
        if row is None:
            raise NotFound(f"no route for model {model!r}")
        return Route.from_dict(model, json.loads(row[0])), row[1]

    def put(self, route: Route, author: str) -> Change:
        return self._record(route.model, author, "put", route.to_dict())

    def delete(self, model: str, author: str) -> Change:
        self.get(model)
        return self._record(model, author, "delete", None)

    def rollback(self, model: str, author: str) -> Change:
        row = self._db.execute(
            "SELECT previous, version FROM changes WHERE model = ? ORDER BY version DESC LIMIT 1", (model,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no route for model {model!r}")
        if row[0] is None:
            raise Conflict(f"model {model!r} has no earlier route to roll back to (version {row[1]} created it)")
        return self._record(model, author, "rollback", json.loads(row[0]))

    def history(self, model: str | None = None, limit: int = 100) -> list[Change]:
        query = "SELECT version, model, at, author, action, route, diff FROM changes"
        params: tuple = ()
        if model is not None:
            query += " WHERE model = ?"
            params = (model,)
        rows = self._db.execute(query + " ORDER BY version DESC LIMIT ?", (*params, limit)).fetchall()
        return [Change(v, m, at, who, act, json.loads(r) if r else None, json.loads(d)) for v, m, at, who, act, r, d in rows]

    def registrations(self) -> dict[str, dict]:
        """The sidecars registered when they were last saved: node id -> endpoint metadata."""
        rows = self._db.execute("SELECT node_id, metadata FROM registrations").fetchall()
        return {node_id: json.loads(doc) for node_id, doc in rows}

    def save_registrations(self, registrations: dict[str, dict]) -> None:
        """Replace the saved registrations, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM registrations")
                self._db.executemany("INSERT INTO registrations (node_id, metadata) VALUES (?, ?)",
                                     [(n, json.dumps(m, sort_keys=True)) for n, m in registrations.items()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _record(self, model: str, author: str, action: str, doc: dict | None) -> Change:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT route FROM routes WHERE model = ?", (model,)).fetchone()
                before = json.loads(row[0]) if row else None
                diff = diff_routes(before, doc)
                at = time.time()
                cur = self._db.execute(
                    "INSERT INTO changes (model, at, author, action, route, previous, diff) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (model, at, author, action, json.dumps(doc) if doc is not None else None,
                     json.dumps(before) if before is not None else None, json.dumps(diff)),
                )
                version = cur.lastrowid
                if doc is None:
                    self._db.execute("DELETE FROM routes WHERE model = ?", (model,))
                else:
                    self._db.execute(
                        "INSERT INTO routes (model, route, version) VALUES (?, ?, ?) "
                        "ON CONFLICT(model) DO UPDATE SET route = excluded.route, version = excluded.version",
                        (model, json.dumps(doc), version),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Change(version, model, at, author, action, doc, diff)
