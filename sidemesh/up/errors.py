"""What can go wrong in ``sidemesh up``: one root class, so the command reports every one
of them the same way (a message that names the field or the child, and what to do)."""

from __future__ import annotations

__all__ = ["UpError", "ConfigError", "StateError", "StartError"]


class UpError(Exception):
    """Root of ``sidemesh up``'s errors; ``str`` is what the user reads."""


class ConfigError(UpError, ValueError):
    """A flag or a port plan that cannot work; the message names the field."""


class StateError(UpError):
    """The state directory cannot be used: unreadable files, or another ``up`` holds it."""


class StartError(UpError):
    """A child died or did not become ready while starting; ``log_tail`` is its last output."""

    def __init__(self, message: str, name: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.log_tail = log_tail

    def __str__(self) -> str:
        text = super().__str__()
        if self.log_tail:
            text += "\n--- last lines of its log ---\n" + self.log_tail.rstrip()
        return text
