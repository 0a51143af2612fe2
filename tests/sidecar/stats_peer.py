"""A fake drift detector for tests: ``sidemesh.drift.v1.StatsService`` on 127.0.0.1.

``StatsPeer`` serves the bidirectional ``Report`` stream from its own threads (so tests
in any thread or event loop can use it), acknowledges every report by sequence, applies
each (source, sequence) once as the real detector does, and can refuse reports with an
error or hold its acknowledgements back. It stops and starts again on the same port, for a detector that goes away and
comes back. Waiting is on a condition, bounded in time, never a sleep.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import grpc

from drift.proto import stats_pb2 as pb
from tests.control_plane.peers import free_port

__all__ = ["StatsPeer", "rows_by_input"]


def rows_by_input(reports) -> dict[tuple[str, str, str], int]:
    """Rows per (model, version, input) over ``reports``."""
    rows: dict[tuple[str, str, str], int] = {}
    for report in reports:
        for item in report.inputs:
            key = (item.model, item.version, item.input)
            rows[key] = rows.get(key, 0) + item.rows
    return rows


class StatsPeer:
    """``with StatsPeer() as peer``: ``peer.address`` is its host:port."""

    def __init__(self, port: int | None = None, reject: Callable[[pb.StatsReport], str] | None = None) -> None:
        self.port = port or free_port()
        self.reject = reject  # returns an error text to refuse a report, "" to apply it
        self.received: list[pb.StatsReport] = []  # every report, resent ones included
        self.applied: dict[tuple[str, int], pb.StatsReport] = {}  # (source, sequence) -> first copy
        self.streams = 0  # streams open now
        self.ack = True  # False: receive reports but acknowledge none (a detector that hangs)
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "StatsPeer":
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="stats-peer")
        self._server = grpc.server(self._pool, options=[("grpc.max_receive_message_length", 64 << 20),
                                                        ("grpc.so_reuseport", 0)])
        handler = grpc.stream_stream_rpc_method_handler(
            self._report, request_deserializer=pb.StatsReport.FromString, response_serializer=pb.ReportAck.SerializeToString)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("sidemesh.drift.v1.StatsService",
                                                                                     {"Report": handler}),))
        if self._server.add_insecure_port(self.address) != self.port:
            raise AssertionError(f"the stats peer cannot listen on {self.address}")
        self._server.start()
        return self

    def stop(self) -> None:
        """Close the port and every open stream (the sidecar sees the stream break)."""
        if self._server is not None:
            self._server.stop(grace=None).wait(10)
            self._server = None
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "StatsPeer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _report(self, reports, context):
        with self._cond:
            self.streams += 1
            self._cond.notify_all()
        try:
            for report in reports:
                error = self.reject(report) if self.reject is not None else ""
                with self._cond:
                    self.received.append(report)
                    if not error:
                        self.applied.setdefault((report.source, report.sequence), report)
                    self._cond.notify_all()
                if self.ack:
                    yield pb.ReportAck(sequence=report.sequence, error=error)
        finally:
            with self._cond:
                self.streams -= 1
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[["StatsPeer"], object], timeout: float = 30.0, what: str = "condition"):
        """Until ``predicate(self)`` is truthy (checked whenever a report or stream event
        arrives); fails after ``timeout`` seconds."""
        with self._cond:
            value = self._cond.wait_for(lambda: predicate(self), timeout)
        if not value:
            raise AssertionError(f"stats peer: timed out waiting for {what}; received sequences "
                                 f"{[r.sequence for r in self.received]}")
        return value

    def reports(self) -> list[pb.StatsReport]:
        """The applied reports, each once, in (source, sequence) order."""
        with self._cond:
            return [self.applied[k] for k in sorted(self.applied)]
