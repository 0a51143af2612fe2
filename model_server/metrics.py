"""Prometheus metrics of the model server. The registry is injected so tests use a fresh one.

Label children are cached per (model, version) so the request path does one dict lookup
instead of prometheus-client's label resolution on every observation.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ModelServerMetrics", "VersionMetrics", "CLIENT_CLOSED"]

CLIENT_CLOSED = 499  # nginx's code for a request whose caller went away before the answer

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class VersionMetrics:
    """The children for one (model, version); also the batcher's ``BatchObserver``."""

    queue: object
    compute: object
    batch: object
    inflight: object

    def queued(self, seconds: float) -> None:
        self.queue.observe(seconds)

    def ran(self, rows: int, seconds: float) -> None:
        self.compute.observe(seconds)
        self.batch.observe(rows)


class ModelServerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        labels = ("model", "version")
        self.requests = Counter(
            "sidemesh_model_requests", "Inference requests by outcome (HTTP status code; gRPC mapped to the same).",
            labels + ("code",), registry=registry,
        )
        self.request_duration = Histogram(
            "sidemesh_model_request_duration_seconds", "Inference request time in the server, decode to encode.",
            labels, buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.queue_duration = Histogram(
            "sidemesh_model_queue_duration_seconds", "Time a request waited for its batch to start.",
            labels, buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.compute_duration = Histogram(
            "sidemesh_model_compute_duration_seconds", "ONNX Runtime time per run (one batch).",
            labels, buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "sidemesh_model_batch_size", "Rows per ONNX Runtime run.", labels, buckets=_BATCH_BUCKETS, registry=registry,
        )
        self.inflight = Gauge(
            "sidemesh_model_inflight_requests", "Requests queued or running.", labels, registry=registry,
        )
        self._versions: dict[tuple[str, str], VersionMetrics] = {}
        self._outcomes: dict[tuple[str, str, int], tuple[object, object | None]] = {}

    def for_version(self, model: str, version: str) -> VersionMetrics:
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            found = VersionMetrics(
                self.queue_duration.labels(model, version),
                self.compute_duration.labels(model, version),
                self.batch_size.labels(model, version),
                self.inflight.labels(model, version),
            )
            self._versions[key] = found
        return found

    def request_done(self, model: str, version: str, code: int, seconds: float) -> None:
        """Count one finished request. Unknown models are counted with empty labels so a
        caller cannot grow the label set with made-up names."""
        key = (model, version, code)
        found = self._outcomes.get(key)
        if found is None:
            duration = self.request_duration.labels(model, version) if model else None
            found = (self.requests.labels(model, version, str(code)), duration)
            self._outcomes[key] = found
        found[0].inc()
        if found[1] is not None:
            found[1].observe(seconds)
