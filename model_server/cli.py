"""``sidemesh model-server``: serve a model repository, or write the example models."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import ServerConfig
from .errors import ConfigError

__all__ = ["build_parser", "main"]


def build_parser(prog: str = "sidemesh model-server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve ONNX models over the Open Inference Protocol (KServe V2), REST and gRPC, "
        "with dynamic batching. Repository layout: <repo>/<model>/<version>/model.onnx, "
        "optional <repo>/<model>/config.json.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--repository", type=Path, metavar="DIR", help="model repository to serve")
    action.add_argument(
        "--make-examples", type=Path, metavar="DIR",
        help="write the example models (tabular classifier v1-v3, heavy benchmark model) into DIR and exit; "
        "existing models are kept",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8000, help="V2 REST and /metrics port (default 8000; 0 picks one)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="V2 gRPC port (default 8001; 0 picks one)")
    parser.add_argument(
        "--max-body-bytes", type=int, default=64 * 1024 * 1024,
        help="largest request body or gRPC message accepted (default 64 MiB); larger ones get 413",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.make_examples is not None:
            from .examples import make_examples

            for line in make_examples(args.make_examples):
                print(line)
            return 0
        config = ServerConfig(
            repository=args.repository, host=args.host, http_port=args.http_port,
            grpc_port=args.grpc_port, max_body_bytes=args.max_body_bytes,
        )
        import uvloop  # about half the event loop's cost per request

        from .server import serve

        uvloop.run(serve(config))
    except ConfigError as exc:
        print(f"sidemesh model-server: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sidemesh model-server: {exc}", file=sys.stderr)
        return 1
    return 0
