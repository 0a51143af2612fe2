"""``sidemesh canary``: every flag is checked before anything is sent (exit 2, naming the flag
and what it expects), only the options given reach the control plane, and a status
document reads as a summary a person can act on. The commands against the real admin API
are in tests/canary/test_cli_api.py (they need a registered candidate sidecar)."""

from __future__ import annotations

import argparse

import pytest

from control_plane.canary_cli import (
    build_parser,
    event_line,
    list_lines,
    main,
    parse_count,
    parse_duration,
    parse_percent,
    parse_positive,
    parse_ratio,
    parse_steps,
    spec_of,
    status_lines,
)
from tests.control_plane.peers import free_port

T0 = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC

SPEC = {"to": "2", "shadow_first": True, "steps": [10, 50, 100], "interval_s": 2.0, "max_error_ratio": 0.01,
        "max_p99_ms": 250.0, "min_agreement": 0.98, "drift": True, "min_requests": 50, "mirror_percent": 100.0,
        "step_timeout_s": None}
HISTORY = [
    {"at": T0, "event": "started", "summary": "canary of 2 against 1=100", "route_version": 3},
    {"at": T0 + 5, "event": "shadow", "summary": "shadow passed: agreement 1 over 400 rows", "route_version": 4},
    {"at": T0 + 10.5, "event": "step", "summary": "step 1: 2 at 10%", "route_version": 5},
    {"at": T0 + 14.25, "event": "rolled_back", "summary": "error ratio 15/60 = 0.2500 is above the limit 0.01",
     "route_version": 6},
]
ROLLED_BACK = {
    "id": "c-1a2b3c4d5e6f", "model": "tabular", "candidate": "2", "baseline": {"1": 100}, "state": "rolled_back",
    "active": False, "step": None, "weight": 0, "spec": SPEC, "started_at": T0, "phase_started_at": T0 + 10.5,
    "finished_at": T0 + 14.25, "reason": "error ratio 15/60 = 0.2500 is above the limit 0.01", "failed_gate": "error_ratio",
    "measurement": {"requests": 60, "errors": 15},
    "gates": [{"gate": "samples", "value": 60, "limit": 50, "ok": True},
              {"gate": "error_ratio", "value": 0.25, "limit": 0.01, "ok": False},
              {"gate": "p99", "value": 12.345, "limit": 250.0, "ok": True},
              {"gate": "drift", "value": "no verdict yet", "limit": "no drift verdict", "ok": None}],
    "history": HISTORY,
}
RUNNING = {**ROLLED_BACK, "state": "step", "active": True, "step": 1, "weight": 50, "finished_at": None, "reason": None,
           "failed_gate": None, "phase_started_at": T0 + 10.5, "history": HISTORY[:3]}


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err


# --- argument types -----------------------------------------------------------------------

@pytest.mark.parametrize("text, steps", [("5,10,25,50,100", [5, 10, 25, 50, 100]), ("100", [100]), (" 1, 99 ", [1, 99])])
def test_steps_are_increasing_whole_percents(text, steps):
    assert parse_steps(text) == steps


@pytest.mark.parametrize("text", ["", "5,,10", "0,5", "5,101", "10,5", "5,5", "a", "5.5", "-5", "5;10", "\u00b2", "\uff15"])
def test_steps_other_than_increasing_whole_percents_are_refused_with_an_example(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"whole percents from 1 to 100 in increasing order, e\.g\. 5,10"):
        parse_steps(text)


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("2m", 120), ("1h", 3600), ("500ms", 0.5), ("1.5", 1.5),
                                           (".5", 0.5), ("24h", 86400), (" 3s ", 3)])
def test_durations_take_a_unit_or_plain_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "0s", "-1", "1d", "abc", "25h", "inf", "nan", "1e3", "s", "1 s", "\u0663s"])
def test_durations_that_are_not_positive_or_have_another_unit_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a duration above 0 and at most 24h such as 60s, 2m"):
        parse_duration(text)


@pytest.mark.parametrize("parse, good, bad, expected", [
    (parse_ratio, {"0": 0, "1": 1, "0.01": 0.01}, ["1.5", "-0.1", "nan", "inf", "x", ""], "expected a ratio from 0 to 1"),
    (parse_percent, {"100": 100, "12.5": 12.5, "0.1": 0.1}, ["0", "101", "-5", "nan", "x"], "expected a percentage above 0 and at most 100"),
    (parse_positive, {"250": 250, "0.5": 0.5}, ["0", "-1", "inf", "x", "3600001"], "expected milliseconds above 0"),
    (parse_count, {"100": 100, "1": 1}, ["0", "-1", "1.5", "x", "", "\u00b2"], "expected a whole number of at least 1"),
])
def test_numbers_are_checked_against_their_range(parse, good, bad, expected):
    assert {text: parse(text) for text in good} == good
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=expected):
            parse(text)


# --- the command line ---------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, expected", [
    ("--steps", "50,10", "expected comma-separated whole percents from 1 to 100 in increasing order"),
    ("--interval", "3x", "expected a duration"),
    ("--step-timeout", "0", "expected a duration"),
    ("--max-error-ratio", "2", "expected a ratio from 0 to 1"),
    ("--min-agreement", "-0.5", "expected a ratio from 0 to 1"),
    ("--max-p99-ms", "0", "expected milliseconds above 0"),
    ("--min-requests", "0", "expected a whole number of at least 1"),
    ("--mirror-percent", "150", "expected a percentage above 0 and at most 100"),
    ("--control-plane", "localhost:15000", "expected a URL such as http://127.0.0.1:15000"),
])
def test_a_bad_flag_exits_2_naming_the_flag_and_what_it_expects(capsys, flag, value, expected):
    err = _error(capsys, "start", "tabular", "--to", "2", f"{flag}={value}")
    assert f"sidemesh canary start: error: argument {flag}: {expected}" in err


def test_the_candidate_and_the_model_are_required_and_the_step_timeout_covers_an_interval(capsys):
    assert "the following arguments are required: --to" in _error(capsys, "start", "tabular")
    assert "the following arguments are required: MODEL" in _error(capsys, "status")
    err = _error(capsys, "start", "tabular", "--to", "2", "--interval", "1m", "--step-timeout", "30s")
    assert err.startswith("usage: sidemesh canary start")
    assert "sidemesh canary start: error: --step-timeout (30 s) must be at least --interval (60 s)" in err


def test_a_missing_or_unknown_subcommand_is_a_usage_error(capsys):
    assert "the following arguments are required: COMMAND" in _error(capsys)
    assert "invalid choice: 'promote'" in _error(capsys, "promote", "tabular")


def test_help_exits_0_and_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("start", "status", "abort", "list"))
    assert main(["start", "--help"]) == 0 and "--shadow-first" in capsys.readouterr().out


def test_only_the_options_given_are_sent_so_the_control_plane_fills_in_its_defaults():
    parser = build_parser()
    assert spec_of(parser.parse_args(["start", "m", "--to", "v2"])) == {"to": "v2"}
    args = parser.parse_args(["start", "m", "--to", "v2", "--shadow-first", "--steps", "5,50", "--interval", "2m",
                              "--max-error-ratio", "0.02", "--max-p99-ms", "250", "--min-agreement", "0.9", "--no-drift",
                              "--min-requests", "30", "--mirror-percent", "50", "--step-timeout", "1h"])
    assert spec_of(args) == {"to": "v2", "shadow_first": True, "drift": False, "steps": [5, 50], "interval_s": 120.0,
                             "max_error_ratio": 0.02, "max_p99_ms": 250.0, "min_agreement": 0.9, "min_requests": 30,
                             "mirror_percent": 50.0, "step_timeout_s": 3600.0}


@pytest.mark.parametrize("argv", [["status", "m"], ["list"], ["abort", "m"], ["start", "m", "--to", "2"]])
def test_a_control_plane_that_cannot_be_reached_exits_1_saying_where_it_looked(capsys, argv):
    url = f"http://127.0.0.1:{free_port()}"
    assert main([*argv, "--control-plane", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sidemesh canary {argv[0]}: cannot reach the control plane at {url}")


# --- output -------------------------------------------------------------------------------

def test_a_rolled_back_canary_shows_why_each_gate_and_its_history():
    assert status_lines(ROLLED_BACK, now=T0 + 60) == [
        "tabular: canary c-1a2b3c4d5e6f of version 2: rolled back (finished 2026-11-18 11:06:54Z)",
        "  baseline 1=100; candidate 2 now at 0%",
        "  started 2026-11-18 11:06:40Z, 14.2 s in all",
        ("  plan: shadow first (100% mirrored); steps 10,50,100 of at least 2 s; gates: error ratio <= 0.01, "
         "p99 <= 250 ms, agreement >= 0.98, drift checked, at least 50 requests a phase"),
        "  reason: error ratio 15/60 = 0.2500 is above the limit 0.01 (failed gate: error_ratio)",
        "  gates:",
        "    GATE         VALUE           LIMIT             OK",
        "    samples      60              50                ok",
        "    error ratio  0.25            0.01              FAIL",
        "    p99 ms       12.35           250               ok",
        "    drift        no verdict yet  no drift verdict  waiting",
        "  history:",
        "    11:06:40Z  started     routing v3   canary of 2 against 1=100",
        "    11:06:45Z  shadow      routing v4   shadow passed: agreement 1 over 400 rows",
        "    11:06:50Z  step        routing v5   step 1: 2 at 10%",
        "    11:06:54Z  rolled_back routing v6   error ratio 15/60 = 0.2500 is above the limit 0.01",
    ]


def test_a_running_canary_shows_its_step_weight_and_time_in_the_phase():
    lines = status_lines(RUNNING, now=T0 + 100)
    assert lines[:4] == [
        "tabular: canary c-1a2b3c4d5e6f of version 2: step (running)",
        "  baseline 1=100; candidate 2 now at 50%",
        "  phase: step 2 of 3 (10,50,100), for 1 min 29 s",
        "  started 2026-11-18 11:06:40Z, 1 min 40 s ago",
    ]
    assert not any(line.startswith("  reason:") for line in lines)
    shadow = status_lines({**RUNNING, "state": "shadow", "step": None, "weight": 0, "gates": [], "history": []}, now=T0 + 12)
    assert shadow[2] == "  phase: shadow phase (mirrored copies only), for 1.5 s"
    assert not any(line in ("  gates:", "  history:") for line in shadow)


def test_a_plan_without_shadow_phase_or_latency_limit_says_so():
    spec = {**SPEC, "shadow_first": False, "max_p99_ms": None, "drift": False}
    plan = [line for line in status_lines({**ROLLED_BACK, "spec": spec}, now=T0) if line.startswith("  plan:")]
    assert plan == [("  plan: steps 10,50,100 of at least 2 s; gates: error ratio <= 0.01, drift not checked, "
                     "at least 50 requests a phase")]


def test_the_list_has_one_row_per_model_and_an_empty_one_says_how_to_start():
    assert list_lines([ROLLED_BACK, {**RUNNING, "model": "other"}]) == [
        "  MODEL    CANARY          CANDIDATE  STATE        WEIGHT  STARTED               REASON",
        ("  tabular  c-1a2b3c4d5e6f  2          rolled_back  0%      2026-11-18 11:06:40Z  "
         "error ratio 15/60 = 0.2500 is above the limit 0.01"),
        "  other    c-1a2b3c4d5e6f  2          step 2/3     50%     2026-11-18 11:06:40Z",
    ]
    assert list_lines([]) == ["no canaries yet; start one with: sidemesh canary start MODEL --to VERSION"]


def test_an_event_line_has_time_event_routing_version_and_summary():
    assert event_line(HISTORY[2]) == "11:06:50Z  step        routing v5   step 1: 2 at 10%"
    assert event_line({"at": T0, "event": "aborted", "summary": "", "route_version": None}) == "11:06:40Z  aborted     -"
