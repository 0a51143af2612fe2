"""What notification delivery raises on purpose: one root, a subclass per way it goes wrong."""

from __future__ import annotations

__all__ = ["ConfigError", "DeliveryError", "NotifyError"]


class NotifyError(Exception):
    """Root of everything ``sidemesh.notify`` raises on purpose."""


class ConfigError(NotifyError, ValueError):
    """A target, policy or outbox setting is wrong; the message names it and the expected form."""


class DeliveryError(NotifyError):
    """A notification could not be delivered to one target this time.

    ``retryable`` is False when the target refused it for good (a 4xx other than 408/429);
    ``retry_after`` is the target's ``Retry-After`` in seconds, when it gave one."""

    def __init__(self, target: str, message: str, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(f"{target}: {message}")
        self.target = target
        self.retryable = retryable
        self.retry_after = retry_after
