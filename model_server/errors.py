"""Domain errors of the model server.

Every error a caller can cause is one of these. Each class carries the HTTP status and the
gRPC status code name it maps to, so the REST and gRPC front ends translate errors in one
place each and never guess from message text.
"""

from __future__ import annotations

__all__ = [
    "ModelServerError",
    "InvalidInput",
    "ModelNotFound",
    "ModelNotReady",
    "Overloaded",
    "PayloadTooLarge",
    "InferenceFailed",
    "ConfigError",
]


class ModelServerError(Exception):
    """Root of the model server's errors; ``str(err)`` is the message a caller sees."""

    http_status = 500
    grpc_code = "INTERNAL"


class InvalidInput(ModelServerError):
    """The request is malformed or does not match the model's inputs."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class ModelNotFound(ModelServerError):
    """No such model, or no such version of it."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class ModelNotReady(ModelServerError):
    """The model version exists but is not loaded (still loading, or failed to load)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class Overloaded(ModelServerError):
    """The model's queue is full; the caller should retry later or elsewhere."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class PayloadTooLarge(ModelServerError):
    """The request body is over the configured limit."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class InferenceFailed(ModelServerError):
    """ONNX Runtime rejected or failed a run that passed our validation."""

    http_status = 500
    grpc_code = "INTERNAL"


class ConfigError(ModelServerError, ValueError):
    """A model repository or config.json is invalid; names the file and field."""
