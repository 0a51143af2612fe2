"""Errors of the control plane. Each carries the HTTP status the admin API answers with."""

from __future__ import annotations

__all__ = ["ControlPlaneError", "ValidationError", "NotFound", "Conflict", "Unauthorized", "Forbidden", "ConsistencyError"]


class ControlPlaneError(Exception):
    """Root of the control plane's errors; ``str(err)`` is what a caller sees."""

    http_status = 500


class ValidationError(ControlPlaneError, ValueError):
    """A routing document is invalid. ``field`` names the part at fault, e.g.
    ``backends[1].weight``; the message says what was expected."""

    http_status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class NotFound(ControlPlaneError):
    http_status = 404


class Conflict(ControlPlaneError):
    """The change cannot apply to the current state (e.g. nothing to roll back to)."""

    http_status = 409


class Unauthorized(ControlPlaneError):
    http_status = 401


class Forbidden(ControlPlaneError):
    http_status = 403


class ConsistencyError(ControlPlaneError):
    """A built snapshot references something it does not contain; never published."""
