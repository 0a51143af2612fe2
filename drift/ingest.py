"""The stats stream's server side: ``sidemesh.drift.v1.StatsService/Report`` on grpc.aio.

Each sidecar holds one bidirectional stream; every report is applied and acknowledged by
sequence number, in order. Messages are decoded here rather than by grpc, so a report that
does not parse is answered with an error ack (naming the problem) and the stream stays up.
"""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError

from .proto import stats_pb2 as pb
from .service import DriftService

__all__ = ["SERVICE_NAME", "MAX_MESSAGE_BYTES", "stats_handler"]

SERVICE_NAME = "sidemesh.drift.v1.StatsService"
# A report carries ~20 KB per numeric feature at most (KLL k=1000), so 64 MiB leaves room
# for thousands of features; sidecars split larger reports per input.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def stats_handler(service: DriftService) -> grpc.GenericRpcHandler:
    metrics = service.metrics

    async def report(requests, context):
        metrics.streams.inc()
        try:
            async for data in requests:
                try:
                    message = pb.StatsReport.FromString(data)
                except DecodeError as exc:
                    metrics.reports.labels("rejected").inc()
                    metrics.stats_dropped.labels("invalid").inc()
                    yield pb.ReportAck(error=f"not a sidemesh.drift.v1.StatsReport message ({exc})").SerializeToString()
                    continue
                error = service.apply(message)
                yield pb.ReportAck(sequence=message.sequence, error=error).SerializeToString()
        finally:
            metrics.streams.dec()

    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Report": grpc.stream_stream_rpc_method_handler(report),
    })
