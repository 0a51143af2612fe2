"""``sidemesh drift``: the drift detector; ``sidemesh drift reference``: give it a reference."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["build_parser", "build_reference_parser", "main"]


def build_parser(prog: str = "sidemesh drift") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Take input statistics from sidecars, compare each model version's traffic with its reference "
        "profile window by window (KS, PSI, Jensen-Shannon and Wasserstein for numeric features, chi-square for "
        "categorical ones, with multiple-testing correction), and alert webhooks and Alertmanager when a version "
        "drifts. `sidemesh drift reference --help` builds references.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="HTTP API and /metrics port (default 9000; 0 picks one)")
    parser.add_argument("--stats-port", type=int, default=9001, help="gRPC port sidecars stream statistics to "
                        "(sidecar --drift; default 9001; 0 picks one)")
    parser.add_argument("--state", type=Path, default=Path(".sidemesh/drift.db"),
                        help="SQLite file with references, windows in progress, alert state, history and the alert "
                        "outbox (default .sidemesh/drift.db)")
    w = parser.add_argument_group("windows and tests")
    w.add_argument("--window-rows", type=int, default=1000, help="close a window at this many rows (0: no row limit; "
                   "default 1000)")
    w.add_argument("--window-seconds", type=float, default=60.0, help="close a window at this age (0: no time limit; "
                   "default 60)")
    w.add_argument("--min-rows", type=int, default=100, help="windows with fewer rows are not tested (default 100)")
    w.add_argument("--alpha", type=float, default=0.05, help="significance level per model version and window "
                   "(default 0.05)")
    w.add_argument("--correction", default="bh", help="multiple-testing correction across a version's features: "
                   "bh (Benjamini-Hochberg), bonferroni or none (default bh)")
    w.add_argument("--numeric-test", default="ks", help="the test that decides a numeric feature: ks, psi, js or "
                   "wasserstein (all are computed and exported; default ks)")
    w.add_argument("--psi-threshold", type=float, help="PSI above this is drift when --numeric-test psi (default 0.2)")
    w.add_argument("--js-threshold", type=float, help="Jensen-Shannon distance above this is drift when "
                   "--numeric-test js")
    w.add_argument("--wasserstein-threshold", type=float, help="Wasserstein distance (in reference standard "
                   "deviations) above this is drift when --numeric-test wasserstein")
    a = parser.add_argument_group("alerts")
    a.add_argument("--fire-after", type=int, default=3, help="fire after this many drifted windows in a row (default 3)")
    a.add_argument("--resolve-after", type=int, default=3, help="resolve after this many clean windows in a row "
                   "(default 3)")
    a.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="POST alerts here as sidemesh JSON (repeatable); signed when --webhook-secret-file is given")
    a.add_argument("--am-webhook", action="append", default=[], metavar="URL",
                   help="POST alerts here in Alertmanager's webhook format, version 4 (repeatable)")
    a.add_argument("--webhook-secret-file", type=Path, help="file holding the shared secret for the "
                   "X-Sidemesh-Signature HMAC")
    a.add_argument("--alertmanager", action="append", default=[], metavar="URL",
                   help="Alertmanager base URL; alerts go to URL/api/v2/alerts (repeatable)")
    a.add_argument("--alertmanager-resend", type=float, default=60.0, metavar="SECONDS",
                   help="re-post firing alerts to Alertmanager this often (default 60)")
    parser.add_argument("--checkpoint-interval", type=float, default=5.0, metavar="SECONDS",
                        help="persist windows in progress this often (default 5)")
    return parser


def build_reference_parser(prog: str = "sidemesh drift reference") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Give a running drift detector the reference profile of a model version: summarize a data file "
        "(.npy: one input tensor [rows, ...]; .npz: one input per array; .csv: numeric columns, optional header "
        "naming the features) and upload the statistics, or ask the detector to capture the first N rows it sees.",
    )
    parser.add_argument("model", help="model name")
    parser.add_argument("--version", required=True, help="model version the reference is for")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="reference data file (.npy, .npz or .csv)")
    src.add_argument("--capture", type=int, metavar="ROWS", help="capture the reference from the next ROWS rows of "
                     "the version's traffic instead")
    parser.add_argument("--input", help="the model input the data is for (default: the version's only input)")
    parser.add_argument("--datatype", help="V2 datatype to read the data as (default: from the file; FP64 for CSV); "
                        "integer, BOOL and BYTES data are tested as categories")
    parser.add_argument("--drift-url", default="http://127.0.0.1:9000", help="the detector's HTTP API "
                        "(default http://127.0.0.1:9000)")
    return parser


def _serve(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .errors import DriftError
    from .evaluate import TestPolicy
    from .service import ServicePolicy
    from .windows import WindowPolicy

    try:
        secret = None
        if args.webhook_secret_file is not None:
            try:
                secret = args.webhook_secret_file.read_bytes().strip()
            except OSError as exc:
                print(f"sidemesh drift: --webhook-secret-file: {exc}", file=sys.stderr)
                return 2
        thresholds = {k: v for k, v in (("psi_threshold", args.psi_threshold), ("js_threshold", args.js_threshold),
                                        ("wasserstein_threshold", args.wasserstein_threshold)) if v is not None}
        tests = TestPolicy(alpha=args.alpha, correction=args.correction, numeric_test=args.numeric_test,
                           min_rows=args.min_rows, **thresholds)
        policy = ServicePolicy(tests, WindowPolicy(args.window_rows, args.window_seconds), args.fire_after,
                               args.resolve_after)
        from .config import DriftConfig
        from .server import serve

        config = DriftConfig(host=args.host, port=args.port, stats_port=args.stats_port, state=args.state,
                             policy=policy, webhooks=tuple(args.webhook), am_webhooks=tuple(args.am_webhook),
                             webhook_secret=secret, alertmanagers=tuple(args.alertmanager),
                             checkpoint_s=args.checkpoint_interval, resend_s=args.alertmanager_resend)
        import uvloop

        uvloop.run(serve(config))
    except (ValueError, DriftError) as exc:
        print(f"sidemesh drift: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sidemesh drift: {exc}", file=sys.stderr)
        return 1
    return 0


def _reference(argv: list[str]) -> int:
    args = build_reference_parser().parse_args(argv)
    from .reference_client import upload

    return upload(args)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "reference":
        return _reference(args[1:])
    return _serve(args)
