"""Errors of the sidecar. ``str(err)`` is what a caller or the control plane sees."""

from __future__ import annotations

__all__ = ["SidecarError", "ConfigError", "UpstreamError", "ConnectFailed", "UpstreamReset", "UpstreamTimeout", "BodyTooLarge", "CompareError"]


class SidecarError(Exception):
    """Root of the sidecar's errors."""


class ConfigError(SidecarError, ValueError):
    """An xDS resource (or a command-line value) the sidecar cannot apply. ``where`` names
    the resource and field, e.g. ``RouteConfiguration sidemesh_routes: routes[0].match``;
    the text goes back to the control plane as the NACK's ``error_detail``."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


class UpstreamError(SidecarError):
    """A call to an upstream failed before a complete response arrived."""

    # The retry condition (Envoy's ``retry_on`` names) this failure matches.
    retry_on = ""


class ConnectFailed(UpstreamError):
    retry_on = "connect-failure"


class UpstreamReset(UpstreamError):
    """The connection closed or broke before the response was complete."""

    retry_on = "reset"


class UpstreamTimeout(UpstreamError):
    retry_on = ""


class BodyTooLarge(SidecarError):
    """A request or response body passed the configured limit."""


class CompareError(SidecarError):
    """A mirrored answer (primary or shadow) that cannot be decoded for comparison; the
    message names the output or field at fault."""
