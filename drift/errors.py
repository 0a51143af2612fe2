"""The drift package's errors: one root, a subclass per way things go wrong.

``InvalidInput`` and ``NotFound`` carry what the HTTP API answers (400 and 404, the message
naming the field at fault); the API maps them in one place.
"""

from __future__ import annotations

__all__ = ["DriftError", "ConfigError", "SketchError", "InvalidInput", "NotFound", "DeliveryError"]


class DriftError(Exception):
    """Root of everything the drift detector raises on purpose."""


class ConfigError(DriftError, ValueError):
    """A flag or configuration value is wrong; the message names it and the expected form."""


class SketchError(DriftError, ValueError):
    """Statistics (from the stream or a reference) are malformed; the message names the field."""


class InvalidInput(DriftError, ValueError):
    """A request to the HTTP API is malformed (400)."""


class NotFound(DriftError, LookupError):
    """The model, version, input or reference asked for does not exist (404)."""


class DeliveryError(DriftError):
    """An alert could not be delivered to one target this time (it will be retried)."""

    def __init__(self, target: str, message: str, retryable: bool = True) -> None:
        super().__init__(f"{target}: {message}")
        self.target = target
        self.retryable = retryable
