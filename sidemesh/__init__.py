"""The ``sidemesh`` command: one console script whose subcommands are the components."""

__all__: list[str] = []
