"""``sidemesh <command> ...``: dispatch to each component's own ``main(argv)``.

Components are imported only when their command runs, so ``sidemesh --help`` stays fast
and one component's heavy imports (ONNX Runtime, xDS types) never load for another.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

# command -> ("module:function" taking argv and returning an exit code, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "model-server": ("model_server.cli:main", "serve ONNX models over the V2 inference protocol (REST and gRPC)"),
    "control-plane": ("control_plane.cli:main", "keep the routing state and serve it over xDS and an admin API"),
    "sidecar": ("sidecar.cli:main", "proxy a model server's traffic: split, mirror and compare, retry, measure"),
    "drift": ("drift.cli:main", "detect input drift from sidecars' statistics and alert (`drift reference`: give it references)"),
    "split": ("control_plane.commands:split_main", "set the traffic split between a model's versions"),
    "mirror": ("control_plane.commands:mirror_main", "copy a share of a model's requests to a shadow version"),
    "routes": ("control_plane.commands:routes_main", "show the desired routing and which nodes applied it"),
    "rollback": ("control_plane.commands:rollback_main", "restore a model's route as before its latest change"),
    "inject": ("control_plane.injector.cli:inject_main", "add the sidecar to annotated pods in Kubernetes YAML, offline"),
    "webhook": ("control_plane.injector.cli:webhook_main", "serve the Kubernetes admission webhook that injects the sidecar"),
    "canary": ("control_plane.canary_cli:main", "roll a version out in gated weight steps; promote it or roll back"),
    "up": ("sidemesh.up.cli:main", "run the whole mesh on this machine with a live status board (--demo: a guided tour)"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: sidemesh <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'sidemesh <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"sidemesh: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _, function = COMMANDS[command][0].partition(":")
    entry = getattr(importlib.import_module(module_name), function or "main")
    return entry(rest) or 0
