"""What a sidecar's load reports carry: the contract between the sidecar that sends them and
the control plane that gates canaries on them.

Reports travel over Envoy's Load Reporting Service (``envoy.service.load_stats.v3``,
``StreamLoadStats``) on the control plane's xDS port. One ``ClusterStats`` per cluster
(``model|version``) with traffic in the interval, holding one ``UpstreamLocalityStats``:

- ``total_issued_requests`` / ``total_successful_requests`` / ``total_error_requests``:
  inference requests that *entered* the mesh at this sidecar (no hop mark, not a shadow
  copy) and were routed to the cluster's version, counted once per client request whichever
  sidecar served it; errors are 5xx answers (gRPC: codes mapped to 5xx).
- ``load_metric_stats`` named below. ``num_requests_finished_with_metric`` is a count and
  ``total_metric_value`` a sum, as in Envoy. Latency buckets are *not* cumulative: each
  holds the requests whose latency fell in (previous bound, bound].

Shadow metrics sit on the shadow version's cluster and describe the copies this sidecar
mirrored to it and compared.
"""

from __future__ import annotations

__all__ = ["LATENCY_BOUNDS", "LATENCY", "SHADOW_LATENCY", "SHADOW_ANSWERS", "SHADOW_ERRORS", "SHADOW_COMPARED_ROWS",
           "SHADOW_AGREED_ROWS", "SHADOW_MISMATCHES", "bucket_name", "bucket_names"]

# The same bounds as the sidecar's Prometheus latency histograms; +Inf is the last bucket.
LATENCY_BOUNDS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

LATENCY = "sidemesh.latency_s"  # entry requests' latency, client view (hop included), one metric per bucket
SHADOW_LATENCY = "sidemesh.shadow.latency_s"  # shadow answers' latency as the mirroring sidecar saw it
SHADOW_ANSWERS = "sidemesh.shadow.answers"  # copies the shadow answered and that were compared (count)
SHADOW_ERRORS = "sidemesh.shadow.errors"  # copies the shadow failed (5xx, reset, timeout) (count)
SHADOW_COMPARED_ROWS = "sidemesh.shadow.compared_rows"  # count: answers; sum: rows compared for the predicted label
SHADOW_AGREED_ROWS = "sidemesh.shadow.agreed_rows"  # count: answers; sum: rows whose label agreed
SHADOW_MISMATCHES = "sidemesh.shadow.mismatches"  # answers whose outputs differ in name, type or shape (count)


def bucket_name(prefix: str, index: int) -> str:
    """``prefix.le.<bound>`` for bucket ``index`` of ``LATENCY_BOUNDS`` (``.le.inf`` past the last)."""
    bound = "inf" if index >= len(LATENCY_BOUNDS) else repr(LATENCY_BOUNDS[index])
    return f"{prefix}.le.{bound}"


def bucket_names(prefix: str) -> tuple[str, ...]:
    return tuple(bucket_name(prefix, i) for i in range(len(LATENCY_BOUNDS) + 1))
