"""The shared outbox with an event type of its own: table prefixes keep owners apart in one
file, and rows survive closing and reopening it."""

from __future__ import annotations

import sqlite3

import pytest

from sidemesh.notify import ConfigError, Outbox, Request
from tests.notify.events import note


def request(target: str, body: bytes = b"{}") -> Request:
    return Request(target, f"http://{target}:80/hook", f"http://{target}/hook", body, {"Content-Type": "application/json"})


def test_a_prefix_names_the_tables_and_two_prefixes_in_one_file_do_not_see_each_others_rows(tmp_path):
    path = tmp_path / "control-plane.db"
    canary, alert = Outbox(path, prefix="canary"), Outbox(path, prefix="alert")
    try:
        started, promoted = note("started", at=1.0), note("promoted", at=2.0)
        canary.add(started, [request("a")], now=1.0)
        canary.add(promoted, [request("a")], now=2.0)
        alert.add(note("firing", model="other", at=3.0), [request("a"), request("b")], now=3.0)

        assert (canary.pending(), canary.pending("a"), alert.pending(), alert.pending("a")) == (2, 2, 2, 1)
        assert [r.event_id for r in canary.due(now=5.0)] == [started.id]      # its own head row only
        assert sorted(r.target for r in alert.due(now=5.0)) == ["a", "b"]
        assert [e["id"] for e in canary.history()] == [promoted.id, started.id]
        assert [e["model"] for e in alert.history()] == ["other"]
        assert canary.expire(created_before=10.0, at=10.0) == {"http://a:80/hook": 2}
        assert alert.pending() == 2

        tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"canary_events", "canary_deliveries", "alert_events", "alert_deliveries"} <= tables
    finally:
        canary.close()
        alert.close()


def test_the_outbox_shares_a_file_another_store_writes_with_wal(tmp_path):
    """As on the control plane: the route store writes its own tables on its own connection."""
    path = tmp_path / "control-plane.db"
    store = sqlite3.connect(path, isolation_level=None)
    store.execute("PRAGMA journal_mode=WAL")
    store.execute("PRAGMA busy_timeout=5000")
    store.execute("CREATE TABLE routes (model TEXT PRIMARY KEY, doc TEXT)")
    box = Outbox(path, prefix="canary")
    try:
        store.execute("BEGIN IMMEDIATE")
        store.execute("INSERT INTO routes VALUES ('m', '{}')")
        assert box.pending() == 0                       # reads while the store holds the write lock
        store.execute("COMMIT")
        box.add(note(), [request("a")])
        assert store.execute("SELECT COUNT(*) FROM canary_deliveries").fetchone() == (1,)
        assert store.execute("SELECT COUNT(*) FROM routes").fetchone() == (1,)
    finally:
        box.close()
        store.close()


def test_pending_rows_of_an_event_type_of_its_own_survive_reopening(tmp_path):
    path = tmp_path / "state.db"
    box = Outbox(path, prefix="canary")
    event = note("rolled_back", step=2, weight=10)
    row, = box.add(event, [request("a", b'{"canary":1}')], now=1.0)
    box.failed(row, "HTTP 503", next_attempt_at=2.0)
    box.close()

    box = Outbox(path, prefix="canary")
    try:
        head, = box.due(now=2.0)
        assert (head.row_id, head.status, head.body, head.attempts, head.last_error) == (
            row, "rolled_back", b'{"canary":1}', 1, "HTTP 503")
        recorded, = box.history()
        assert recorded["details"] == {"step": 2, "weight": 10} and recorded["deliveries"][0]["state"] == "pending"
    finally:
        box.close()


@pytest.mark.parametrize("prefix", ["", "Canary", "canary; DROP TABLE routes", "1x", None])
def test_a_prefix_that_is_not_a_plain_sql_name_is_refused(tmp_path, prefix):
    with pytest.raises(ConfigError, match="outbox prefix: expected a lowercase SQL name"):
        Outbox(tmp_path / "state.db", prefix=prefix)
