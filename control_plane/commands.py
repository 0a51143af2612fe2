"""``sidemesh split | mirror | routes | rollback``: change and show a model's traffic routing.

Each command is a thin client of the control plane's admin API over stdlib ``urllib``, so
it starts fast and loads no server code. The control plane validates every change and
its error text is shown as is; the commands only read the current route, edit the part
they own and PUT the whole document back (the last writer wins: the API has no
compare-and-set yet). Exit codes: 0 done, 1 the control plane refused or could not be
reached, 2 a usage error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ApiError", "AdminClient", "split_main", "mirror_main", "routes_main", "rollback_main"]

DEFAULT_URL = "http://127.0.0.1:15000"
TOKEN_ENV = "SIDEMESH_TOKEN"
TIMEOUT_S = 10.0
_PAIR = re.compile(r"^(?P<version>[^=\s]+)=(?P<weight>\d+)$")


class ApiError(Exception):
    """The control plane refused a request (``status`` is its HTTP status) or could not be
    reached (``status`` is None); ``str`` is the reason to show."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UsageError(Exception):
    """Arguments argparse accepted but that do not make sense together."""


@dataclass(frozen=True)
class AdminClient:
    base: str
    token: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> dict:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                raise ApiError(_reason(exc), exc.code) from None
        except (ValueError, http.client.HTTPException):  # not JSON, or not even HTTP/1.1 (the xDS port?)
            raise ApiError(f"{self.base} did not answer as the admin API does; is it the control plane's admin port?") from None
        except OSError as exc:  # URLError, refused, timed out
            reason = getattr(exc, "reason", None) or exc
            raise ApiError(f"cannot reach the control plane at {self.base}: {reason}; "
                           "is it running, and is --control-plane right?") from None

    def route_path(self, model: str, suffix: str = "") -> str:
        return f"/v1/routes/{urllib.parse.quote(model, safe='')}{suffix}"


def _reason(exc: urllib.error.HTTPError) -> str:
    body = exc.read()
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}: {body[:200].decode(errors='replace')}"


# --- argument types ---------------------------------------------------------------------

def _url(text: str) -> str:
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected a URL such as {DEFAULT_URL}, got {text!r}")
    return text.rstrip("/")


def _pair(text: str) -> tuple[str, int]:
    match = _PAIR.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected VERSION=WEIGHT with a whole-number weight, e.g. v1=90; got {text!r}")
    return match["version"], int(match["weight"])


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number such as 5 or 0.5, got {text!r}")
    return value


def _parser(command: str, description: str, example: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"sidemesh {command}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"example:\n  {example}\n\nexit codes: 0 done, 1 the control plane refused or could not be reached, 2 usage error",
    )
    parser.add_argument(
        "--control-plane", metavar="URL", type=_url, default=DEFAULT_URL,
        help=f"the control plane's admin API (default {DEFAULT_URL}); the bearer token is read from {TOKEN_ENV}",
    )
    return parser


# --- output -----------------------------------------------------------------------------

def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _route_lines(route: dict) -> list[str]:
    total = sum(b["weight"] for b in route["backends"]) or 1
    mirrors = {m["version"]: m["percent"] for m in route.get("mirrors", [])}
    rows = [("VERSION", "WEIGHT", "SHARE", "MIRRORED")]
    rows += [(b["version"], str(b["weight"]), f"{100 * b['weight'] / total:.1f}%",
              f"{mirrors[b['version']]:g}%" if b["version"] in mirrors else "") for b in route["backends"]]
    retry = route.get("retry", {})
    knobs = f"  timeout {route.get('timeout_ms')} ms; retry attempts {retry.get('attempts')}"
    if route.get("sticky_key"):
        knobs += f"; sticky on header {route['sticky_key']}"
    return _table(rows) + [knobs]


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _show_change(model: str, what: str, answer: dict) -> None:
    print(f"{model}: {what}; routing version {answer['version']}")
    print("\n".join(_route_lines(answer["route"])))
    diff = answer.get("diff", {})
    if any(old is not None for old, _ in diff.values()):  # a new route's "diff" is all of it: the table says that
        for path, (old, new) in diff.items():
            print(f"  changed {path}: {_cell(old)} -> {_cell(new)}")


def _node_lines(nodes: list[dict], route_version: int) -> list[str]:
    if not nodes:
        return ["  nodes: none known for this model"]
    connected = [n for n in nodes if n.get("connected")]
    acked = [n for n in connected if (n.get("acked_state_version") or 0) >= route_version]
    lines = [f"  nodes: {len(acked)} of {len(connected)} connected have applied version {route_version}"]
    rows = [("NODE", "VERSION", "ADDRESS", "STATE")]
    for n in nodes:
        have = n.get("acked_state_version")
        if not n.get("connected"):
            state = "disconnected"
        elif have is not None and have >= route_version:
            state = f"applied (at {have})"
        else:
            state = f"waiting (at {'nothing' if have is None else have})"
        rows.append((_cell(n.get("id")), _cell(n.get("version")), _cell(n.get("address")), state))
    lines += _table(rows)
    for n in nodes:
        if nack := n.get("last_nack"):
            lines.append(f"  last NACK from {n.get('id')} (version {nack.get('version')} of {nack.get('type_url')}): {nack.get('error')}")
    return lines


# --- the commands -----------------------------------------------------------------------

def _split(args: argparse.Namespace, client: AdminClient) -> None:
    weights = dict(args.weights)
    if len(weights) < len(args.weights):
        raise UsageError("a version is listed twice")
    try:
        doc = client.call("GET", client.route_path(args.model))["route"]
    except ApiError as exc:
        if exc.status != 404:
            raise
        doc = {"backends": []}  # a new model
    backends = [{**b, "weight": weights.pop(b["version"], 0)} for b in doc["backends"]]
    backends += [{"version": v, "weight": w} for v, w in weights.items()]
    answer = client.call("PUT", client.route_path(args.model), {**doc, "backends": backends})
    _show_change(args.model, "traffic split set", answer)


def _mirror(args: argparse.Namespace, client: AdminClient) -> None:
    if args.off == (args.percent is not None) or (not args.off and args.to is None):
        raise UsageError("give --to VERSION --percent P to mirror, --off to stop all mirrors, or --to VERSION --off to stop one")
    try:
        doc = client.call("GET", client.route_path(args.model))["route"]
    except ApiError as exc:
        if exc.status == 404:
            raise ApiError(f"{exc}; create it first, e.g. sidemesh split {args.model} v1=100", 404) from None
        raise
    mirrors = [m for m in doc.get("mirrors", []) if args.to is not None and m["version"] != args.to]
    if args.off:
        if len(mirrors) == len(doc.get("mirrors", [])):
            print(f"{args.model}: no mirror{f' to {args.to}' if args.to else ''} to remove; nothing changed")
            return
        what = f"mirror to {args.to} removed" if args.to else "all mirrors removed"
    else:
        mirrors.append({"version": args.to, "percent": args.percent})
        if all(b["version"] != args.to for b in doc["backends"]):
            doc = {**doc, "backends": [*doc["backends"], {"version": args.to, "weight": 0}]}
        what = f"mirroring {args.percent:g}% to {args.to}"
    _show_change(args.model, what, client.call("PUT", client.route_path(args.model), {**doc, "mirrors": mirrors}))


def _routes(args: argparse.Namespace, client: AdminClient) -> None:
    if args.model:
        routes = {args.model: client.call("GET", client.route_path(args.model))}
    else:
        routes = client.call("GET", "/v1/routes")["routes"]
    nodes = client.call("GET", "/v1/nodes")["nodes"]
    blocks = []
    for model, entry in routes.items():
        # A node without a model (a front proxy) gets every model's routes, so it is listed under each.
        own = [n for n in nodes if n.get("model") in (model, None)]
        lines = [f"{model}: routing version {entry['version']}", *_route_lines(entry["route"]), *_node_lines(own, entry["version"])]
        blocks.append("\n".join(lines))
    if not args.model:
        for model in sorted({n["model"] for n in nodes if n.get("model")} - set(routes)):
            blocks.append(f"{model}: no route; {sum(n.get('model') == model for n in nodes)} node(s) known")
    print("\n\n".join(blocks) or "no routes yet; create one with: sidemesh split MODEL v1=100")


def _rollback(args: argparse.Namespace, client: AdminClient) -> None:
    answer = client.call("POST", client.route_path(args.model, "/rollback"))
    _show_change(args.model, "rolled back to the route before its latest change", answer)


def _run(parser: argparse.ArgumentParser, action: Callable[[argparse.Namespace, AdminClient], None],
         argv: list[str] | None) -> int:
    try:
        args = parser.parse_args(argv)
        action(args, AdminClient(args.control_plane, os.environ.get(TOKEN_ENV) or None))
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    return 0


def split_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "split",
        "Set the traffic split between a model's versions. Weights are relative (v1=9 v2=1 is the same\n"
        "split as v1=90 v2=10). Versions not listed stay with weight 0: they get no traffic but remain\n"
        "mirror targets. Mirrors, timeouts and retries are kept. A model without a route gets one.",
        "sidemesh split tabular v1=90 v2=10",
    )
    parser.add_argument("model", metavar="MODEL", help="the model's name")
    parser.add_argument("weights", metavar="VERSION=WEIGHT", nargs="+", type=_pair, help="e.g. v1=90 v2=10")
    return _run(parser, _split, argv)


def mirror_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "mirror",
        "Copy a share of a model's requests to a shadow version. Its answers are compared with the\n"
        "primary's and never returned. The version is added as a weight-0 backend when missing; an\n"
        "existing mirror to it is replaced. --off stops all mirrors, or only the one named by --to.",
        "sidemesh mirror tabular --to v3 --percent 5",
    )
    parser.add_argument("model", metavar="MODEL", help="the model's name")
    parser.add_argument("--to", metavar="VERSION", help="the version that receives the copies")
    parser.add_argument("--percent", metavar="P", type=_percent, help="share of requests to copy, above 0 and at most 100")
    parser.add_argument("--off", action="store_true", help="stop mirroring (to --to only, when given)")
    return _run(parser, _mirror, argv)


def routes_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "routes",
        "Show the desired routing (weights, shares, mirrors) of every model or of one, its routing\n"
        "version, and which connected nodes of the model have applied it; a node's last rejection\n"
        "(NACK) is shown with its error.",
        "sidemesh routes tabular",
    )
    parser.add_argument("model", metavar="MODEL", nargs="?", help="only this model")
    return _run(parser, _routes, argv)


def rollback_main(argv: list[str] | None = None) -> int:
    parser = _parser(
        "rollback",
        "Restore a model's route as it was before its latest change, recorded as a new change.\n"
        "Rolling back twice returns to where you started.",
        "sidemesh rollback tabular",
    )
    parser.add_argument("model", metavar="MODEL", help="the model's name")
    return _run(parser, _rollback, argv)
