"""``sidemesh control-plane``: the routing state, its admin API and the xDS server."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import ControlPlaneError

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "sidemesh control-plane") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Keep the desired routing state (weights, mirrors, timeouts per model) in SQLite, serve it "
        "to sidecars and Envoy over xDS (ADS, state of the world) and take changes on an admin REST API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--admin-port", type=int, default=15000, help="admin REST API port (default 15000; 0 picks one)")
    parser.add_argument("--xds-port", type=int, default=15010, help="xDS (ADS gRPC) port (default 15010; 0 picks one)")
    parser.add_argument("--state", type=Path, default=Path(".sidemesh/control-plane.db"),
                        help="SQLite file with routes and their history (default .sidemesh/control-plane.db)")
    parser.add_argument("--token-file", type=Path, help="bearer tokens, one 'NAME TOKEN [admin|read]' per line; "
                        "without it the admin API is open")
    parser.add_argument("--endpoint-grace", type=float, default=2.0, metavar="SECONDS",
                        help="how long a disconnected sidecar stays an endpoint (default 2)")
    canary = parser.add_argument_group("canary analysis (`sidemesh canary`)")
    canary.add_argument("--webhook", action="append", default=[], metavar="URL",
                        help="send every canary event (started, step, promoted, rolled_back, aborted) to this URL as JSON; "
                        "repeatable; delivered at least once, in order, surviving restarts")
    canary.add_argument("--webhook-secret-file", type=Path, metavar="FILE",
                        help="sign webhook bodies with HMAC-SHA256 using this file's content (X-Sidemesh-Signature)")
    canary.add_argument("--drift-url", metavar="URL", help="the drift detector's HTTP API (e.g. http://127.0.0.1:9000), "
                        "for the canary drift gate; without it canaries need --no-drift")
    canary.add_argument("--prometheus-url", metavar="URL", help="measure canary gates with PromQL queries against this "
                        "Prometheus instead of the sidecars' own load reports")
    canary.add_argument("--load-report-interval", type=float, default=2.0, metavar="SECONDS",
                        help="how often sidecars report their measurements (LRS) to the control plane (default 2)")
    canary.add_argument("--canary-tick", type=float, default=1.0, metavar="SECONDS",
                        help="how often running canaries are re-evaluated (default 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .server import ControlPlaneConfig, serve

    try:
        config = ControlPlaneConfig(
            state=args.state, host=args.host, admin_port=args.admin_port, xds_port=args.xds_port,
            token_file=args.token_file, endpoint_grace_s=args.endpoint_grace, webhooks=tuple(args.webhook),
            webhook_secret_file=args.webhook_secret_file, drift_url=args.drift_url, prometheus_url=args.prometheus_url,
            load_report_interval_s=args.load_report_interval, canary_tick_s=args.canary_tick,
        )
        import uvloop

        uvloop.run(serve(config))
    except (ValueError, ControlPlaneError) as exc:
        print(f"sidemesh control-plane: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sidemesh control-plane: {exc}", file=sys.stderr)
        return 1
    return 0
