"""Alert hysteresis: fire after K drifted windows in a row, resolve after M clean ones."""

from __future__ import annotations

import json

import pytest

from drift.errors import ConfigError
from drift.hysteresis import AlertEvent, AlertTracker

DETAILS = {"window": {"rows": 500}, "features": [{"input": "x", "index": 0, "name": "age", "decision": "ks",
                                                   "score": 0.4, "p_value": 1e-6, "adjusted_p_value": 1e-5}]}


def feed(tracker: AlertTracker, verdicts: str, start: float = 100.0, model: str = "m", version: str = "1"):
    """Feed 'D' (drifted) / 'C' (clean) windows one second apart; return the events, None included."""
    return [tracker.observe(model, version, v == "D", start + i, f"window {i}", DETAILS) for i, v in enumerate(verdicts)]


def statuses(events) -> list:
    return [e.status if e else None for e in events]


def test_fires_only_after_k_drifted_windows_in_a_row_and_suppresses_repeats():
    events = feed(AlertTracker(3, 2), "DDDDD")
    assert statuses(events) == [None, None, "firing", None, None]
    firing = events[2]
    assert (firing.model, firing.version, firing.starts_at, firing.ends_at, firing.at) == ("m", "1", 102.0, None, 102.0)
    assert firing.summary == "window 2" and firing.details == DETAILS and len(firing.id) == 32


def test_a_clean_window_restarts_the_drifted_streak():
    assert statuses(feed(AlertTracker(3, 2), "DDCDDCDDD")) == [None] * 8 + ["firing"]


def test_resolves_after_m_clean_windows_in_a_row_and_an_interrupted_streak_starts_over():
    tracker = AlertTracker(2, 3)
    events = feed(tracker, "DD" + "CCDCC" + "C")
    assert statuses(events) == [None, "firing", None, None, None, None, None, "resolved"]
    firing, resolved = events[1], events[7]
    assert resolved.starts_at == firing.starts_at == 101.0
    assert resolved.ends_at == resolved.at == 107.0
    assert resolved.id != firing.id
    assert tracker.firing() == []


def test_clean_windows_while_not_firing_change_nothing_and_a_new_episode_fires_again():
    tracker = AlertTracker(1, 1)
    events = feed(tracker, "CCDCD")
    assert statuses(events) == [None, None, "firing", "resolved", "firing"]
    assert events[4].starts_at == 104.0 and events[4].id != events[2].id


def test_model_versions_are_tracked_independently():
    tracker = AlertTracker(2, 1)
    assert tracker.observe("m", "1", True, 1.0, "", {}) is None
    assert tracker.observe("m", "2", True, 2.0, "", {}) is None
    assert tracker.observe("m", "2", True, 3.0, "", {}).version == "2"
    assert [e.version for e in tracker.firing()] == ["2"]
    assert tracker.status("m", "1") == {"firing": False, "since": None, "drifted_in_a_row": 1, "clean_in_a_row": 0,
                                        "fire_after": 2, "resolve_after": 1, "last_at": 1.0}
    assert tracker.status("m", "2")["firing"] is True and tracker.status("m", "2")["since"] == 3.0
    assert tracker.status("other", "9")["firing"] is False


def test_state_restores_streaks_and_firing_alerts_exactly():
    tracker = AlertTracker(3, 3)
    fired = feed(tracker, "DDD")[2]
    feed(tracker, "CC", start=200.0)            # two of three clean windows
    feed(tracker, "DD", model="n")              # two of three drifted windows
    state = json.loads(json.dumps(tracker.state()))  # what the store keeps
    restored = AlertTracker(3, 3, state=state)
    assert restored.state() == tracker.state()
    assert restored.firing() == [fired]
    assert restored.observe("n", "1", True, 300.0, "", {}).status == "firing"      # third drifted one
    resolved = restored.observe("m", "1", False, 301.0, "", {})                    # third clean one
    assert resolved.status == "resolved" and resolved.starts_at == fired.starts_at


def test_forget_resolves_a_firing_alert_so_nothing_is_left_firing():
    tracker = AlertTracker(1, 5)
    feed(tracker, "D")
    event = tracker.forget("m", "1", 50.0)
    assert (event.status, event.ends_at) == ("resolved", 50.0)
    assert tracker.firing() == [] and tracker.forget("m", "1", 51.0) is None


@pytest.mark.parametrize("k, m, field", [(0, 1, "fire_after"), (1, 0, "resolve_after"), (1.5, 1, "fire_after"),
                                         (True, 1, "fire_after")])
def test_bad_thresholds_are_refused_naming_the_setting(k, m, field):
    with pytest.raises(ConfigError, match=field):
        AlertTracker(k, m)


@pytest.mark.parametrize("state", [{"series": []}, {"format": 1, "series": [{"model": "m"}]},
                                   {"format": 1, "series": [{"model": "m", "version": "1", "drifted": -1, "clean": 0}]}])
def test_a_malformed_state_is_refused(state):
    with pytest.raises(ConfigError, match="alert tracker state"):
        AlertTracker(1, 1, state=state)


def test_events_round_trip_through_dicts_and_copy_their_details():
    details = {"features": [{"name": "a"}]}
    event = AlertEvent.new("resolved", "m", "1", 1.0, 2.0, 2.0, "done", details)
    details["features"].append({"name": "b"})
    assert event.details == {"features": [{"name": "a"}]}
    assert AlertEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event


@pytest.mark.parametrize("kwargs, field", [
    ({"status": "pending"}, "status"),
    ({"ends_at": 5.0}, "ends_at"),
    ({"status": "resolved"}, "ends_at"),
    ({"model": ""}, "model"),
    ({"at": float("nan")}, "at"),
    ({"details": {"x": object()}}, "details"),
    ({"details": {"x": float("inf")}}, "details"),
])
def test_malformed_events_are_refused_naming_the_field(kwargs, field):
    fields = dict(id="abc", status="firing", model="m", version="1", starts_at=1.0, ends_at=None, at=1.0,
                  summary="", details={}) | kwargs
    with pytest.raises(ConfigError, match=field):
        AlertEvent(**fields)
