"""The SQLite alert outbox: rows per (event, target), delivered in order, surviving restarts."""

from __future__ import annotations

import json
import sqlite3

import pytest

from drift.hysteresis import AlertEvent
from sidemesh.notify import Outbox, Request


def event(status: str = "firing", model: str = "m", version: str = "1", at: float = 10.0) -> AlertEvent:
    return AlertEvent.new(status, model, version, 5.0, at if status == "resolved" else None, at, f"{model} {status}",
                          {"window": {"rows": 10}})


def request(target: str, body: bytes = b'{"x":1}') -> Request:
    return Request(target, f"http://{target}:80/hook", f"http://{target}/hook?token=s", body,
                   {"Content-Type": "application/json"})


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "state.db")
    yield box
    box.close()


def test_an_event_becomes_one_pending_row_per_target_in_one_go(outbox):
    ids = outbox.add(event(), [request("a"), request("b")], now=1.0)
    assert len(ids) == 2 and outbox.pending() == 2 and outbox.pending("a") == 1
    rows = outbox.due(now=1.0)
    assert [(r.target, r.status, r.attempts, r.body, r.headers["Content-Type"]) for r in rows] == [
        ("a", "firing", 0, b'{"x":1}', "application/json"), ("b", "firing", 0, b'{"x":1}', "application/json")]
    assert rows[0].url == "http://a/hook?token=s" and rows[0].name == "http://a:80/hook"


def test_a_targets_rows_go_out_in_order_and_other_targets_do_not_wait(outbox):
    first, = outbox.add(event(), [request("a")], now=1.0)
    outbox.add(event("resolved"), [request("a"), request("b")], now=2.0)
    assert [r.row_id for r in outbox.due(now=3.0, target="a")] == [first]
    outbox.failed(first, "HTTP 503", next_attempt_at=10.0)
    assert [r.target for r in outbox.due(now=3.0)] == ["b"]      # a's second row waits behind its first
    assert outbox.next_attempt_at("a") == 10.0
    assert [r.attempts for r in outbox.due(now=10.0, target="a")] == [1]
    outbox.delivered(first, at=10.5)
    assert [r.status for r in outbox.due(now=10.5, target="a")] == ["resolved"]


def test_a_permanent_failure_takes_the_row_out_of_the_queue(outbox):
    row, = outbox.add(event(), [request("a")], now=1.0)
    outbox.failed(row, "HTTP 400: bad body", next_attempt_at=None, at=2.0)
    assert outbox.pending() == 0 and outbox.due(now=100.0) == [] and outbox.next_attempt_at() is None
    delivery, = outbox.history()[0]["deliveries"]
    assert delivery | {"created_at": 0} == {"target": "http://a:80/hook", "state": "failed", "attempts": 1,
                                            "created_at": 0, "done_at": 2.0, "last_error": "HTTP 400: bad body"}


def test_rows_older_than_the_maximum_age_expire_and_are_counted_per_target(outbox):
    outbox.add(event(), [request("a"), request("b")], now=1.0)
    outbox.add(event(), [request("a")], now=50.0)
    assert outbox.expire(created_before=10.0, at=60.0) == {"http://a:80/hook": 1, "http://b:80/hook": 1}
    assert outbox.pending() == 1 and outbox.expire(created_before=10.0, at=61.0) == {}
    states = [d["state"] for e in outbox.history() for d in e["deliveries"]]
    assert sorted(states) == ["expired", "expired", "pending"]


def test_history_lists_newest_events_first_with_their_deliveries_and_filters(outbox):
    outbox.add(event(model="m", at=1.0), [request("a")], now=1.0)
    b_row, = outbox.add(event(model="n", at=2.0), [request("a")], now=2.0)
    outbox.add(event("resolved", model="m", at=3.0), [], now=3.0)   # no targets: still history
    assert [(e["model"], e["status"]) for e in outbox.history()] == [("m", "resolved"), ("n", "firing"), ("m", "firing")]
    assert [e["model"] for e in outbox.history(limit=1)] == ["m"]
    assert [e["at"] for e in outbox.history(model="m")] == [3.0, 1.0]
    assert outbox.history(model="m", version="2") == []
    outbox.failed(b_row, "ConnectionRefused", next_attempt_at=9.0)
    n, = outbox.history(model="n")
    assert n["summary"] == "n firing" and n["details"] == {"window": {"rows": 10}}
    assert (n["deliveries"][0]["state"], n["deliveries"][0]["attempts"], n["deliveries"][0]["last_error"]) == (
        "pending", 1, "ConnectionRefused")


def test_prune_deletes_finished_rows_and_their_events_but_never_pending_ones(outbox):
    old, = outbox.add(event(at=1.0), [request("a")], now=1.0)
    outbox.add(event(at=2.0), [request("b")], now=2.0)
    outbox.delivered(old, at=3.0)
    assert outbox.prune(before=100.0) == 1
    assert [e["deliveries"][0]["state"] for e in outbox.history()] == ["pending"]


def test_pending_rows_survive_closing_and_reopening_the_file(tmp_path):
    path = tmp_path / "state.db"
    box = Outbox(path)
    body = '{"summary":"drift in ünïcode"}'.encode()
    delivered, pending = box.add(event(), [request("a"), request("b", body)], now=1.0)
    box.delivered(delivered, at=2.0)
    box.failed(pending, "HTTP 503", next_attempt_at=3.0)
    box.close()

    reopened = Outbox(path)
    try:
        row, = reopened.due(now=3.0)
        assert (row.row_id, row.target, row.body, row.attempts, row.last_error) == (pending, "b", body, 1, "HTTP 503")
        assert reopened.pending() == 1
    finally:
        reopened.close()


def test_the_outbox_shares_its_file_with_other_tables_on_another_connection(tmp_path):
    path = tmp_path / "state.db"
    other = sqlite3.connect(path, isolation_level=None)
    box = Outbox(path)
    try:
        other.execute("PRAGMA busy_timeout=5000")
        other.execute("CREATE TABLE IF NOT EXISTS windows (k TEXT)")
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO windows VALUES ('w')")
        assert box.pending() == 0                   # WAL: reading while the other connection writes
        other.execute("COMMIT")
        box.add(event(), [request("a")])
        assert other.execute("SELECT COUNT(*) FROM alert_deliveries").fetchone() == (1,)
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        box.close()
        other.close()


# The detector's tables as drift/outbox.py created them before the outbox moved to sidemesh.notify.
_EARLIER_SCHEMA = """
CREATE TABLE alert_events (id TEXT PRIMARY KEY, status TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
                           at REAL NOT NULL, event TEXT NOT NULL);
CREATE INDEX alert_events_by_model ON alert_events (model, version, at);
CREATE TABLE alert_deliveries (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL REFERENCES alert_events (id), target TEXT NOT NULL,
    name TEXT NOT NULL, url TEXT NOT NULL, body BLOB NOT NULL, headers TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'expired')),
    attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, next_attempt_at REAL NOT NULL, done_at REAL,
    last_error TEXT);
CREATE INDEX alert_deliveries_pending ON alert_deliveries (state, target, row_id);
CREATE INDEX alert_deliveries_by_event ON alert_deliveries (event_id);
"""


def test_a_detector_database_from_before_the_move_opens_unchanged_and_its_queue_goes_on(tmp_path):
    path = tmp_path / "drift.db"
    earlier = sqlite3.connect(path, isolation_level=None)
    earlier.executescript(_EARLIER_SCHEMA)
    queued = event()
    earlier.execute("INSERT INTO alert_events VALUES (?, ?, ?, ?, ?, ?)",
                    (queued.id, queued.status, queued.model, queued.version, queued.at, json.dumps(queued.to_dict())))
    earlier.execute("INSERT INTO alert_deliveries (event_id, target, name, url, body, headers, state, attempts, created_at,"
                    " next_attempt_at, last_error) VALUES (?, 'webhook:sidemesh:http://a/hook', 'http://a:80/hook',"
                    " 'http://a/hook', ?, '{}', 'pending', 2, 1.0, 5.0, 'HTTP 503')", (queued.id, b'{"x":1}'))
    columns = {t: [c[1] for c in earlier.execute(f"PRAGMA table_info({t})")] for t in ("alert_events", "alert_deliveries")}
    earlier.close()

    box = Outbox(path)
    try:
        row, = box.due(now=5.0, target="webhook:sidemesh:http://a/hook")
        assert (row.event_id, row.status, row.body, row.attempts, row.last_error) == (queued.id, "firing", b'{"x":1}', 2,
                                                                                      "HTTP 503")
        assert box.history()[0]["id"] == queued.id
    finally:
        box.close()
    reopened = sqlite3.connect(path)
    try:
        tables = {r[0] for r in reopened.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"alert_events", "alert_deliveries", "sqlite_sequence"}          # nothing added or renamed
        assert {t: [c[1] for c in reopened.execute(f"PRAGMA table_info({t})")] for t in columns} == columns
    finally:
        reopened.close()
