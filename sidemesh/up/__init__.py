"""``sidemesh up``: the whole mesh on one machine, with a live status board and a guided
demo (docs/local.md).

Modules, one job each: ``config`` (the port plan and options), ``state`` (the state
directory), ``processes`` (children in their own process groups), ``configs`` (Prometheus
and Alertmanager), ``receiver`` (the local alert webhook), ``clients`` (the admin and
drift APIs), ``observe`` (scrapes and rates), ``board`` (the status board), ``load`` and
``demo`` (the guided demo), ``mesh`` (what runs, in which order), ``cli`` (``main``).
"""

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from .cli import main as run

    return run(argv)
