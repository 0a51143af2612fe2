"""``sidemesh canary start | status | abort | list``: automated canary analysis from the shell.

The canary itself runs inside the control plane (it survives this command exiting and
resumes after a restart); this is a thin client of its admin API, built on the same
``AdminClient`` as ``split``/``mirror``. Everything that can be checked here is checked
before anything is sent (exit 2, naming the flag); the control plane checks the rest and
its error text is shown as is (exit 1). Only the flags given are sent: the control plane
fills in its defaults. ``start --wait`` follows the canary until it finishes and exits 0
when the candidate was promoted, 1 when it was rolled back or aborted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from .commands import DEFAULT_URL, TOKEN_ENV, AdminClient, ApiError, UsageError, _table, _url

__all__ = ["build_parser", "event_line", "list_lines", "main", "parse_count", "parse_duration", "parse_percent", "parse_positive",
           "parse_ratio", "parse_steps", "spec_of", "status_lines"]

POLL_S = 1.0  # how often ``start --wait`` reads the canary's status
UNREACHABLE_S = 120.0  # how long ``--wait`` keeps trying a control plane it cannot reach (a restart)
_DURATION = re.compile(r"^(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<unit>ms|s|m|h)?$", re.ASCII)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_DAY = 86400.0
_FINISHED = {"promoted": 0, "rolled_back": 1, "aborted": 1}
_GATE_NAMES = {"error_ratio": "error ratio", "p99": "p99 ms", "agreement": "agreement", "shadow_errors": "shadow errors",
               "drift": "drift", "samples": "samples", "route_changed": "route changed"}


# --- argument types (pure: argparse names the flag in front of the message) ----------------

def parse_steps(text: str) -> list[int]:
    """``5,10,25,50,100``: whole percents 1-100, strictly increasing."""
    expected = f"expected comma-separated whole percents from 1 to 100 in increasing order, e.g. 5,10,25,50,100; got {text!r}"
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(expected)
    steps = [int(p) for p in parts]
    if not all(1 <= s <= 100 for s in steps) or any(b <= a for a, b in itertools.pairwise(steps)):
        raise argparse.ArgumentTypeError(expected)
    return steps


def parse_duration(text: str) -> float:
    """``60s``, ``2m``, ``1h``, ``500ms`` or plain seconds (``1.5``), above 0 and at most a day."""
    match = _DURATION.match(text.strip())
    seconds = float(match["number"]) * _UNITS[match["unit"]] if match else math.nan
    if not 0 < seconds <= _DAY:
        raise argparse.ArgumentTypeError(
            f"expected a duration above 0 and at most 24h such as 60s, 2m, 1h, 500ms or plain seconds (1.5); got {text!r}")
    return seconds


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def parse_ratio(text: str) -> float:
    """A share from 0 to 1 (``0.01``)."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a ratio from 0 to 1 such as 0.01; got {text!r}")
    return value


def parse_percent(text: str) -> float:
    """A percentage above 0 and at most 100 (``100``, ``12.5``)."""
    value = _number(text)
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage above 0 and at most 100 such as 100 or 12.5; got {text!r}")
    return value


def parse_positive(text: str) -> float:
    """A number above 0 (milliseconds for ``--max-p99-ms``)."""
    value = _number(text)
    if not 0 < value <= 3_600_000:
        raise argparse.ArgumentTypeError(f"expected milliseconds above 0 (at most 3600000) such as 250; got {text!r}")
    return value


def parse_count(text: str) -> int:
    """A whole number of at least 1."""
    if not (text.isascii() and text.strip().isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1 such as 100; got {text!r}")
    return int(text)


def spec_of(args: argparse.Namespace) -> dict:
    """The POST body: ``to`` and only the options given, so the control plane's defaults apply."""
    if args.step_timeout is not None and args.interval is not None and args.step_timeout < args.interval:
        raise UsageError(f"--step-timeout ({args.step_timeout:g} s) must be at least --interval ({args.interval:g} s)")
    spec: dict[str, Any] = {"to": args.to}
    if args.shadow_first:
        spec["shadow_first"] = True
    if args.no_drift:
        spec["drift"] = False
    for flag, key in (("steps", "steps"), ("interval", "interval_s"), ("max_error_ratio", "max_error_ratio"),
                      ("max_p99_ms", "max_p99_ms"), ("min_agreement", "min_agreement"), ("min_requests", "min_requests"),
                      ("mirror_percent", "mirror_percent"), ("step_timeout", "step_timeout_s")):
        if (value := getattr(args, flag)) is not None:
            spec[key] = value
    return spec


# --- output (pure: a status doc in, lines out) -------------------------------------------

def _clock(at: float | None, full: bool = False) -> str:
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ" if full else "%H:%M:%SZ", time.gmtime(at))


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _weights(weights: dict) -> str:
    return " ".join(f"{v}={w}" for v, w in weights.items()) or "none"


def _phase(doc: dict) -> str:
    steps = doc.get("spec", {}).get("steps") or []
    if doc.get("step") is not None and steps:
        return f"step {doc['step'] + 1} of {len(steps)} ({','.join(map(str, steps))})"
    return {"shadow": "shadow phase (mirrored copies only)"}.get(doc.get("state"), doc.get("state", "?"))


def _spec_summary(spec: dict) -> str:
    parts = [f"steps {','.join(map(str, spec.get('steps', [])))}"]
    if spec.get("interval_s") is not None:
        parts[0] += f" of at least {_value(spec['interval_s'])} s"
    if spec.get("shadow_first"):
        parts.insert(0, f"shadow first ({_value(spec.get('mirror_percent'))}% mirrored)")
    gates = [f"error ratio <= {_value(spec.get('max_error_ratio'))}"]
    if spec.get("max_p99_ms") is not None:
        gates.append(f"p99 <= {_value(spec['max_p99_ms'])} ms")
    if spec.get("shadow_first"):
        gates.append(f"agreement >= {_value(spec.get('min_agreement'))}")
    gates.append("drift checked" if spec.get("drift") else "drift not checked")
    if spec.get("min_requests") is not None:
        gates.append(f"at least {spec['min_requests']} requests a phase")
    return "; ".join(parts) + "; gates: " + ", ".join(gates)


def event_line(event: dict) -> str:
    """One history entry: time, event, routing version, summary."""
    route = event.get("route_version")
    where = f"routing v{route}" if route is not None else "-"
    return f"{_clock(event.get('at'))}  {event.get('event', '?'):<11} {where:<12} {event.get('summary', '')}".rstrip()


def status_lines(doc: dict, now: float | None = None) -> list[str]:
    """A status doc in words: what runs, where it stands, each gate, why it ended, its history."""
    now = time.time() if now is None else now
    state = doc.get("state", "?")
    done = "running" if doc.get("active") else f"finished {_clock(doc.get('finished_at'), full=True)}"
    lines = [f"{doc.get('model')}: canary {doc.get('id')} of version {doc.get('candidate')}: {state.replace('_', ' ')} ({done})",
             f"  baseline {_weights(doc.get('baseline') or {})}; candidate {doc.get('candidate')} now at {_value(doc.get('weight'))}%"]
    if doc.get("active"):
        lines.append(f"  phase: {_phase(doc)}, for {_span(now - (doc.get('phase_started_at') or now))}")
    started = doc.get("started_at")
    ended = doc.get("finished_at") if doc.get("finished_at") is not None else now
    if started is not None:
        lines.append(f"  started {_clock(started, full=True)}, {_span(ended - started)} "
                     f"{'ago' if doc.get('active') else 'in all'}")
    if doc.get("spec"):
        lines.append(f"  plan: {_spec_summary(doc['spec'])}")
    if doc.get("reason") is not None or doc.get("failed_gate") is not None:
        gate = doc.get("failed_gate")
        lines.append(f"  reason: {doc.get('reason') or '-'}{f' (failed gate: {gate})' if gate else ''}")
    gates = doc.get("gates") or []
    if gates:
        lines.append("  gates:")
        rows = [("GATE", "VALUE", "LIMIT", "OK")]
        rows += [(_GATE_NAMES.get(g.get("gate"), str(g.get("gate"))), _value(g.get("value")), _value(g.get("limit")),
                  {True: "ok", False: "FAIL", None: "waiting"}[g.get("ok")]) for g in gates]
        lines += ["  " + line for line in _table(rows)]
    history = doc.get("history") or []
    if history:
        lines.append("  history:")
        lines += [f"    {event_line(event)}" for event in history]
    return lines


def list_lines(canaries: list[dict]) -> list[str]:
    if not canaries:
        return ["no canaries yet; start one with: sidemesh canary start MODEL --to VERSION"]
    rows = [("MODEL", "CANARY", "CANDIDATE", "STATE", "WEIGHT", "STARTED", "REASON")]
    for doc in canaries:
        state = doc.get("state", "?") + (f" {doc['step'] + 1}/{len(doc['spec']['steps'])}"
                                          if doc.get("active") and doc.get("step") is not None and doc.get("spec") else "")
        rows.append((str(doc.get("model")), str(doc.get("id")), str(doc.get("candidate")), state, f"{_value(doc.get('weight'))}%",
                     _clock(doc.get("started_at"), full=True), doc.get("reason") or ""))
    return _table(rows)


# --- the subcommands --------------------------------------------------------------------

def _path(model: str, suffix: str = "") -> str:
    return f"/v1/canaries/{urllib.parse.quote(model, safe='')}{suffix}"


def _start(args: argparse.Namespace, client: AdminClient) -> int:
    doc = client.call("POST", _path(args.model), spec_of(args))
    print(f"{args.model}: canary {doc.get('id')} started: version {doc.get('candidate')} against "
          f"{_weights(doc.get('baseline') or {})}")
    if doc.get("spec"):
        print(f"  plan: {_spec_summary(doc['spec'])}")
    if not args.wait:
        print(f"  it runs in the control plane; follow it with: sidemesh canary status {args.model}")
        return 0
    return _follow(args.model, client, doc)


def _follow(model: str, client: AdminClient, doc: dict) -> int:
    """Print each new history event until the canary finishes; its outcome is the exit code."""
    canary, shown = doc.get("id"), 0
    unreachable_since: float | None = None
    try:
        while True:
            history = doc.get("history") or []
            for event in history[shown:]:
                print(event_line(event), flush=True)
            shown = max(shown, len(history))
            if doc.get("id") != canary:
                print(f"{model}: canary {canary} was replaced by {doc.get('id')}; stopped following", file=sys.stderr)
                return 1
            if not doc.get("active"):
                return _outcome(model, doc)
            time.sleep(POLL_S)
            try:
                doc = client.call("GET", _path(model))
                unreachable_since = None
            except ApiError as exc:
                if exc.status is not None:
                    raise
                # The control plane may be restarting: the canary resumes there, so keep asking a while.
                if unreachable_since is None:
                    unreachable_since = time.monotonic()
                    print(f"{model}: {exc}; still trying", file=sys.stderr, flush=True)
                elif time.monotonic() - unreachable_since > UNREACHABLE_S:
                    raise
    except KeyboardInterrupt:
        print(f"\n{model}: stopped following; canary {canary} goes on in the control plane "
              f"(sidemesh canary status {model}, sidemesh canary abort {model})", file=sys.stderr)
        return 130


def _outcome(model: str, doc: dict) -> int:
    state = doc.get("state", "?")
    if state == "promoted":
        print(f"{model}: version {doc.get('candidate')} promoted to 100%")
    else:
        gate = f" at gate {doc['failed_gate']}" if doc.get("failed_gate") else ""
        print(f"{model}: canary {state.replace('_', ' ')}{gate}: {doc.get('reason') or 'no reason given'}; "
              f"route restored to {_weights(doc.get('baseline') or {})}")
    return _FINISHED.get(state, 1)


def _status(args: argparse.Namespace, client: AdminClient) -> int:
    doc = client.call("GET", _path(args.model))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(status_lines(doc)))
    return 0


def _abort(args: argparse.Namespace, client: AdminClient) -> int:
    doc = client.call("POST", _path(args.model, "/abort"))
    print(f"{args.model}: canary {doc.get('id')} aborted; route restored to {_weights(doc.get('baseline') or {})}")
    return 0


def _list(args: argparse.Namespace, client: AdminClient) -> int:
    print("\n".join(list_lines(client.call("GET", "/v1/canaries")["canaries"])))
    return 0


# --- the parser -------------------------------------------------------------------------

_EXIT_CODES = "exit codes: 0 done, 1 the control plane refused or could not be reached, 2 usage error"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control-plane", metavar="URL", type=_url, default=DEFAULT_URL,
        help=f"the control plane's admin API (default {DEFAULT_URL}); the bearer token is read from {TOKEN_ENV}",
    )
    parser = argparse.ArgumentParser(
        prog="sidemesh canary", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Roll a new version out in weight steps, each judged on its own traffic (error ratio, p99\n"
        "latency, drift verdicts; agreement with the baseline in an optional shadow phase first), and\n"
        "promote it to 100% or roll back to the split before the canary at the first failed gate.\n"
        "The canary runs in the control plane: it goes on after this command exits and resumes after\n"
        "a control plane restart. Every step and decision is in the routing history and sent to the\n"
        "control plane's --webhook targets.",
        epilog="examples:\n  sidemesh canary start tabular --to 2 --shadow-first --steps 10,50 --interval 2m --wait\n"
        "  sidemesh canary status tabular\n  sidemesh canary abort tabular\n\n"
        f"{_EXIT_CODES} (start --wait: 0 promoted, 1 rolled back or aborted)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(name: str, summary: str, description: str, action: Callable) -> argparse.ArgumentParser:
        p = commands.add_parser(name, parents=[common], help=summary, description=description, epilog=_EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter, prog=f"sidemesh canary {name}")
        p.add_argument("model", metavar="MODEL", help="the model's name")
        p.set_defaults(action=action, usage=p.format_usage)
        return p

    start = sub("start", "start a canary of a version",
                "Start a canary of version --to of MODEL, which needs a route and a registered sidecar of the\n"
                "version. Options not given take the control plane's defaults (shown here).", _start)
    start.add_argument("--to", metavar="VERSION", required=True, help="the candidate version")
    start.add_argument("--shadow-first", action="store_true",
                       help="first mirror traffic to the candidate and require agreement and latency within bounds")
    start.add_argument("--steps", type=parse_steps, metavar="P,P,...",
                       help="candidate weight percents, increasing (default 5,10,25,50,100)")
    start.add_argument("--interval", type=parse_duration, metavar="DURATION",
                       help="least time per phase: 60s, 2m, 1h, 500ms or seconds (default 60s)")
    start.add_argument("--max-error-ratio", type=parse_ratio, metavar="R",
                       help="largest share of the candidate's requests that may fail (5xx), 0-1 (default 0.01)")
    start.add_argument("--max-p99-ms", type=parse_positive, metavar="MS",
                       help="largest p99 latency of the candidate in milliseconds (default: not gated)")
    start.add_argument("--min-agreement", type=parse_ratio, metavar="R",
                       help="least share of rows whose shadow label agrees with the baseline's, 0-1 (default 0.98)")
    start.add_argument("--no-drift", action="store_true", help="do not gate on the drift detector's verdicts")
    start.add_argument("--min-requests", type=parse_count, metavar="N",
                       help="requests (shadow phase: compared copies) a phase needs before it is judged (default 100)")
    start.add_argument("--mirror-percent", type=parse_percent, metavar="P",
                       help="share of requests mirrored in the shadow phase (default 100)")
    start.add_argument("--step-timeout", type=parse_duration, metavar="DURATION",
                       help="a phase short of its samples by then fails (default ten intervals)")
    start.add_argument("--wait", action="store_true",
                       help="follow the canary, one line per event, until it finishes (exit 0 promoted, 1 not)")

    status = sub("status", "show a model's latest canary",
                 "Show a model's latest canary, running or finished: state, step and weight, each gate's value\n"
                 "against its limit, why it was rolled back or aborted, and its history.", _status)
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    sub("abort", "stop a running canary and restore the route",
        "Stop a model's running canary and restore the route as it was before the canary started.", _abort)
    listing = commands.add_parser("list", parents=[common], help="list the latest canary of every model",
                                  description="List the latest canary of every model.", epilog=_EXIT_CODES,
                                  prog="sidemesh canary list")
    listing.set_defaults(action=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    prog = parser.prog
    try:
        args = parser.parse_args(argv)
        prog = f"{parser.prog} {args.command}"
        return args.action(args, AdminClient(args.control_plane, os.environ.get(TOKEN_ENV) or None))
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    except UsageError as exc:
        print(args.usage(), end="", file=sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
