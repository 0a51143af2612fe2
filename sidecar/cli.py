"""``sidemesh sidecar``: the data-plane proxy beside one model server."""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def _seconds_or_never(text: str) -> float | None:
    if text.strip().lower() in ("never", "off"):
        return None
    try:
        return float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (e.g. 30) or 'never', got {text!r}") from None


def build_parser(prog: str = "sidemesh sidecar") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Proxy V2 inference traffic (REST and gRPC) beside one model server: weighted and sticky "
        "routing between versions from the control plane (xDS), mirroring to shadow versions with answer "
        "comparison, retries, timeouts, outlier ejection, load shedding, metrics and traces.",
    )
    p.add_argument("--model", required=True, help="the model this pod serves (announced to the control plane)")
    p.add_argument("--version", required=True, help="the version this pod serves")
    p.add_argument("--upstream", default="http://127.0.0.1:8000", help="the local model server's REST address (default http://127.0.0.1:8000)")
    p.add_argument("--upstream-grpc", metavar="HOST:PORT", help="the local model server's gRPC address; enables the gRPC proxy")
    p.add_argument("--listen", default="127.0.0.1:15001", help="inbound REST address (default 127.0.0.1:15001)")
    p.add_argument("--grpc-listen", metavar="HOST:PORT", help="inbound gRPC address (default 127.0.0.1:15002 when --upstream-grpc is given)")
    p.add_argument("--admin", default="127.0.0.1:15020", help="admin address: /healthz/ready, /healthz/live, /metrics, /config_dump (default 127.0.0.1:15020)")
    p.add_argument("--control-plane", metavar="HOST:PORT", help="the control plane's xDS address (e.g. 127.0.0.1:15010); "
                   "without it the sidecar serves the static fallback: everything to the local upstream")
    p.add_argument("--load-report-to", metavar="HOST:PORT", help="where the sidecar reports the traffic it measured per "
                   "version (Envoy LRS, what canary gates read; default: the --control-plane address; without either, none)")
    p.add_argument("--advertise", metavar="HOST:PORT", help="the REST address other sidecars reach this one at (default: --listen); the pod IP on Kubernetes")
    p.add_argument("--advertise-grpc", metavar="HOST:PORT", help="the gRPC address other sidecars reach this one at (default: --grpc-listen)")
    p.add_argument("--node-id", default="", help="xDS node id (default MODEL-VERSION-HOSTNAME-PID)")
    p.add_argument("--static-after", type=_seconds_or_never, default=30.0, metavar="SECONDS",
                   help="serve the static fallback when no routes arrived from the control plane by then (default 30; 'never')")
    p.add_argument("--max-concurrent", type=int, default=1024, help="requests in flight before new ones get a fast 503 (default 1024)")
    p.add_argument("--max-body-bytes", type=int, default=64 << 20, help="largest request or response body (default 64 MiB)")
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS", help="longest wait for requests in flight on SIGTERM (default 30)")
    p.add_argument("--connect-timeout", type=float, default=1.0, metavar="SECONDS", help="upstream connect timeout (default 1)")
    p.add_argument("--eject-after", type=int, default=5, metavar="N", help="consecutive 5xx before an endpoint is ejected (default 5)")
    p.add_argument("--eject-for", type=float, default=30.0, metavar="SECONDS", help="base ejection time, multiplied by the times ejected (default 30)")
    p.add_argument("--retry-budget", type=float, default=0.2, metavar="SHARE", help="retries in flight at most this share of requests in flight (default 0.2, at least 3)")
    p.add_argument("--mirror-workers", type=int, default=16, help="shadow calls in flight at most (default 16)")
    p.add_argument("--mirror-queue", type=int, default=256, help="exchanges waiting for a shadow at most; more are dropped and counted (default 256)")
    p.add_argument("--mirror-timeout", type=float, default=10.0, metavar="SECONDS", help="longest wait for a shadow's answer (default 10)")
    p.add_argument("--trace-sample", type=float, default=0.01, metavar="SHARE",
                   help="share of requests traced when no sampled traceparent arrives (default 0.01; spans are only made with --otlp-endpoint)")
    p.add_argument("--otlp-endpoint", metavar="URL", help="send spans over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317); tracing is off without it")
    stats = p.add_argument_group("input statistics", "sampled input tensors summarized per feature and streamed to the drift detector")
    stats.add_argument("--drift", metavar="HOST:PORT", help="the drift detector's stats stream (e.g. 127.0.0.1:9001); "
                       "without it no input statistics are gathered")
    stats.add_argument("--stats-interval", type=float, default=5.0, metavar="SECONDS",
                       help="how often a report of the statistics gathered goes to the detector (default 5)")
    stats.add_argument("--stats-sample", type=float, default=1.0, metavar="SHARE",
                       help="share of this version's answered infer requests tapped at most; a route's stats_sample "
                       "from the control plane lowers it further (default 1: all)")
    stats.add_argument("--stats-cpu-budget", type=float, default=0.004, metavar="SHARE",
                       help="share of one core the tap may spend decoding and summarizing; over it, requests are not "
                       "tapped (counted) until it recovers (default 0.004)")
    stats.add_argument("--stats-queue-bytes", type=int, default=16 << 20, metavar="BYTES",
                       help="reports kept while the detector is away or has not acknowledged them; the oldest are "
                       "dropped and counted past it (default 16 MiB)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import SidecarConfig, parse_host_port
    from .errors import SidecarError
    from .mirror import MirrorConfig
    from .server import serve
    from .table import OutlierPolicy

    def addr(value, flag):
        return parse_host_port(value, flag) if value else None

    try:
        config = SidecarConfig(
            model=args.model, version=args.version,
            upstream=addr(args.upstream, "--upstream"), upstream_grpc=addr(args.upstream_grpc, "--upstream-grpc"),
            listen=addr(args.listen, "--listen"), grpc_listen=addr(args.grpc_listen, "--grpc-listen"),
            admin=addr(args.admin, "--admin"), control_plane=addr(args.control_plane, "--control-plane"),
            load_report_to=addr(args.load_report_to, "--load-report-to"),
            advertise=addr(args.advertise, "--advertise"), advertise_grpc=addr(args.advertise_grpc, "--advertise-grpc"),
            node_id=args.node_id, static_after_s=args.static_after, max_concurrent=args.max_concurrent,
            max_body_bytes=args.max_body_bytes, drain_timeout_s=args.drain_timeout, connect_timeout_s=args.connect_timeout,
            outlier=_outlier(OutlierPolicy, args), retry_budget=args.retry_budget,
            mirror=_mirror(MirrorConfig, args), trace_sample=args.trace_sample, otlp_endpoint=args.otlp_endpoint,
            drift=addr(args.drift, "--drift"), stats_interval_s=args.stats_interval, stats_sample=args.stats_sample,
            stats_cpu_budget=args.stats_cpu_budget, stats_queue_bytes=args.stats_queue_bytes,
        )
        import uvloop

        uvloop.run(serve(config))
    except (SidecarError, ValueError) as exc:
        print(f"sidemesh sidecar: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sidemesh sidecar: {exc}", file=sys.stderr)
        return 1
    return 0


def _outlier(cls, args):
    if args.eject_after < 1:
        raise ValueError(f"--eject-after: expected a positive integer, got {args.eject_after}")
    if not args.eject_for > 0:
        raise ValueError(f"--eject-for: expected a positive number of seconds, got {args.eject_for}")
    return cls(consecutive_5xx=args.eject_after, base_ejection_s=args.eject_for, max_ejection_s=max(300.0, args.eject_for))


def _mirror(cls, args):
    try:
        return cls(workers=args.mirror_workers, queue_size=args.mirror_queue, timeout_s=args.mirror_timeout)
    except ValueError as exc:
        flag = {"workers": "--mirror-workers", "queue_size": "--mirror-queue", "timeout_s": "--mirror-timeout"}
        name = str(exc).partition(":")[0]
        raise ValueError(f"{flag.get(name, name)}:{str(exc).partition(':')[2]}") from None
