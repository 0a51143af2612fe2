"""Prometheus metrics of the webhook; the registry is injected so tests use a fresh one.

Dry-run reviews are counted apart from real ones: a dry run creates no pod, so it must not
show as an injection on a dashboard.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["InjectorMetrics"]


class InjectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reviews = Counter("sidemesh_injector_reviews", "Admission reviews answered (dry runs excluded), by outcome: "
                               "injected, already_injected, not_opted_in, denied, ignored.", ["outcome"], registry=self.registry)
        self.dry_run_reviews = Counter("sidemesh_injector_dry_run_reviews", "Dry-run admission reviews answered, by outcome.",
                                       ["outcome"], registry=self.registry)
        self.bad_requests = Counter("sidemesh_injector_bad_requests", "Requests that were not a valid AdmissionReview (HTTP 400).",
                                    registry=self.registry)
        self.certificate_reloads = Counter("sidemesh_injector_certificate_reloads", "Serving certificate reloads after the files "
                                           "changed, by result (ok, error).", ["result"], registry=self.registry)
        self.review_duration = Histogram("sidemesh_injector_review_duration_seconds", "Time to decide one admission review.",
                                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1), registry=self.registry)

    def reviewed(self, outcome: str, dry_run: bool) -> None:
        (self.dry_run_reviews if dry_run else self.reviews).labels(outcome).inc()
