"""The Load Reporting Service: ``envoy.service.load_stats.v3.LoadReportingService/
StreamLoadStats`` on the xDS port, so sidecars (and an Envoy bootstrapped with
``load_stats_config``) report what they measured to the control plane.

The first request of a stream must carry the node. The server answers with one
``LoadStatsResponse``: every cluster (``send_all_clusters``) at ``interval_s``; the node then
sends a ``LoadStatsRequest`` per interval with the deltas, which go to the ``LoadLedger``
the canary gates read.
"""

from __future__ import annotations

import datetime
import logging
import time
import warnings

import grpc

from .canary.ledger import LoadLedger, Tally

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.service.load_stats.v3 import LoadStatsRequest, LoadStatsResponse

__all__ = ["LRS_SERVICE", "lrs_handler"]

log = logging.getLogger("sidemesh.control_plane")
LRS_SERVICE = "envoy.service.load_stats.v3.LoadReportingService"


def lrs_handler(ledger: LoadLedger, interval_s: float, on_report=None) -> grpc.GenericRpcHandler:
    """``on_report(node_id, clusters)`` is called after each report (metrics)."""
    interval = datetime.timedelta(seconds=interval_s)

    async def stream(requests, context: grpc.aio.ServicerContext):
        node_id = None
        async for request in requests:
            if node_id is None:
                if request.node is None or not request.node.id:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first LoadStatsRequest must carry node.id")
                node_id = request.node.id
                yield bytes(LoadStatsResponse(send_all_clusters=True, load_reporting_interval=interval))
            now = time.time()
            taken = 0
            for stats in request.cluster_stats:
                covers = stats.load_report_interval.total_seconds() if stats.load_report_interval is not None else interval_s
                if ledger.add(stats.cluster_name, Tally.from_cluster_stats(stats), now, covers):
                    taken += 1
                else:
                    log.debug("load report from %s for cluster %r, which is not model|version; ignored", node_id, stats.cluster_name)
            if on_report is not None:
                on_report(node_id, taken)

    return grpc.method_handlers_generic_handler(LRS_SERVICE, {
        "StreamLoadStats": grpc.stream_stream_rpc_method_handler(
            stream, request_deserializer=LoadStatsRequest.FromString, response_serializer=None),
    })
