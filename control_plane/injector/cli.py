"""``sidemesh inject`` (offline) and ``sidemesh webhook`` (admission webhook): one set of
injector options, one code path (``patch.plan_injection``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["build_inject_parser", "build_webhook_parser", "inject_main", "webhook_main"]

_ANNOTATIONS = ("Pods opt in with the annotation sidemesh.io/inject: \"true\" (or the namespace label "
                "sidemesh.io/inject=enabled) and say what they serve with sidemesh.io/model, sidemesh.io/version, "
                "sidemesh.io/port, sidemesh.io/grpc-port, sidemesh.io/stats-sample, sidemesh.io/shadow and "
                "sidemesh.io/{cpu,memory}-{request,limit}; see docs/kubernetes.md.")


def _injector_options(parser: argparse.ArgumentParser) -> None:
    from .config import InjectorConfig, Resources, default_image

    defaults, res = InjectorConfig(), Resources()
    g = parser.add_argument_group("the injected sidecar")
    g.add_argument("--image", default=default_image(), help=f"the sidemesh image (default {default_image()})")
    g.add_argument("--control-plane", default=defaults.control_plane, metavar="HOST:PORT",
                   help=f"the control plane's xDS address as seen from pods (default {defaults.control_plane}; '' for none: "
                   "sidecars serve the static fallback)")
    g.add_argument("--drift", default=defaults.drift, metavar="HOST:PORT",
                   help=f"the drift detector's stats stream as seen from pods (default {defaults.drift}; '' for none)")
    g.add_argument("--sidecar-style", choices=("native", "container"), default="native",
                   help="native (default): an init container with restartPolicy: Always (Kubernetes 1.29+), started before "
                   "the app and stopped after it; container: an ordinary container, for older clusters. Pods that run to "
                   "completion (restartPolicy Never or OnFailure, e.g. Jobs) always get the native style")
    g.add_argument("--run-as-user", type=int, default=defaults.run_as_user, metavar="UID",
                   help=f"non-root user id the sidecar runs as (default {defaults.run_as_user})")
    for name in ("cpu_request", "memory_request", "cpu_limit", "memory_limit"):
        flag = "--" + name.replace("_", "-")
        g.add_argument(flag, default=getattr(res, name), metavar="QUANTITY",
                       help=f"the sidecar's {name.replace('_', ' ')} unless the pod's annotation overrides it "
                       f"(default {getattr(res, name)})")


def _config(args: argparse.Namespace):
    from .config import InjectorConfig, Resources

    flags = {"cpu_request": "--cpu-request", "memory_request": "--memory-request", "cpu_limit": "--cpu-limit",
             "memory_limit": "--memory-limit", "image": "--image", "control_plane": "--control-plane", "drift": "--drift",
             "run_as_user": "--run-as-user", "sidecar_style": "--sidecar-style"}
    try:
        resources = Resources(cpu_request=args.cpu_request, memory_request=args.memory_request,
                              cpu_limit=args.cpu_limit, memory_limit=args.memory_limit)
        return InjectorConfig(image=args.image, control_plane=args.control_plane, drift=args.drift,
                              sidecar_style=args.sidecar_style, resources=resources, run_as_user=args.run_as_user)
    except ValueError as exc:
        name, _, rest = str(exc).partition(":")
        raise ValueError(f"{flags.get(name, name)}:{rest}") from None


def build_inject_parser(prog: str = "sidemesh inject") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Add the sidemesh sidecar to the pods and pod templates (Deployment, StatefulSet, DaemonSet, "
        "ReplicaSet, Job, CronJob, ...) of a multi-document YAML manifest, offline, exactly as the admission webhook "
        "would, and print the result. Other documents come out unchanged as data; YAML comments are not kept. "
        "Injecting twice changes nothing. " + _ANNOTATIONS,
    )
    parser.add_argument("-f", "--filename", required=True, metavar="FILE", help="the manifest to read; - reads stdin")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--namespace-enabled", action="store_true",
                        help="treat the manifests as bound for a namespace labelled sidemesh.io/inject=enabled: pods "
                        "without a sidemesh.io/inject annotation are injected too")
    _injector_options(parser)
    return parser


def build_webhook_parser(prog: str = "sidemesh webhook") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve the Kubernetes mutating admission webhook (AdmissionReview v1) that injects the sidemesh "
        "sidecar into pods as they are created, answering with a JSON Patch; POST /mutate for pods in ordinary "
        "namespaces, POST /mutate/namespace-enabled for namespaces labelled sidemesh.io/inject=enabled, GET /healthz, "
        "GET /metrics. " + _ANNOTATIONS,
    )
    parser.add_argument("--listen", default="127.0.0.1:9443", metavar="HOST:PORT",
                        help="address to serve HTTPS on (default 127.0.0.1:9443; 0.0.0.0:9443 in a cluster; port 0 picks one)")
    parser.add_argument("--tls-cert", type=Path, required=True, metavar="FILE",
                        help="PEM certificate (chain) to serve; re-read when the file changes (cert-manager rotation)")
    parser.add_argument("--tls-key", type=Path, required=True, metavar="FILE", help="PEM private key of --tls-cert")
    _injector_options(parser)
    return parser


def inject_main(argv: list[str] | None = None) -> int:
    args = build_inject_parser().parse_args(argv)
    from ..errors import ValidationError
    from .manifests import inject_yaml

    try:
        config = _config(args)
    except ValueError as exc:
        print(f"sidemesh inject: {exc}", file=sys.stderr)
        return 2
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"sidemesh inject: -f: cannot read {args.filename}: {exc}", file=sys.stderr)
        return 2
    try:
        output, summary = inject_yaml(text, config, args.namespace_enabled)
    except ValidationError as exc:
        print(f"sidemesh inject: {exc}", file=sys.stderr)
        return 1
    if args.output:
        try:
            Path(args.output).write_text(output, encoding="utf-8")
        except OSError as exc:
            print(f"sidemesh inject: -o: cannot write {args.output}: {exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(output)
        sys.stdout.flush()
    print(f"sidemesh inject: {summary}", file=sys.stderr)
    return 0


def webhook_main(argv: list[str] | None = None) -> int:
    args = build_webhook_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sidemesh.injector").setLevel(logging.INFO)
    from .server import WebhookConfig, serve

    host, sep, port = args.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        print(f"sidemesh webhook: --listen: expected HOST:PORT with a port 0-65535, got {args.listen!r}", file=sys.stderr)
        return 2
    try:
        config = WebhookConfig(tls_cert=args.tls_cert, tls_key=args.tls_key, host=host.strip("[]"), port=int(port),
                               injector=_config(args))
        import uvloop

        uvloop.run(serve(config))
    except ValueError as exc:
        print(f"sidemesh webhook: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sidemesh webhook: {exc}", file=sys.stderr)
        return 1
    return 0
