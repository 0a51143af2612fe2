"""The drift detector's state machine: reports in, windows closed, evaluations out, alerts on.

Everything here runs on the event loop except the statistical evaluation of a closed window,
which runs on one worker thread (in order: a version's windows are judged in the order
they closed) so a large model's tests never stall ingestion. A closed window is never
touched again by the loop, and reference sketches are never mutated once loaded, so the
thread reads them without locks.

The flow per report: dedupe by (source, sequence), validate every input (a malformed report
is refused whole), merge into the version's reference capture if one is running and into
its open window; a window that reaches its row limit (or, on the ticker, its age limit) is
queued for evaluation; the verdict feeds the alert tracker (hysteresis), and a state change
becomes an alert event in the outbox. Verdict, tracker state and history are written in
one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .errors import NotFound, SketchError
from .evaluate import Evaluation, TestPolicy, evaluate
from .hysteresis import AlertTracker
from .metrics import DriftMetrics
from .proto import stats_pb2 as pb
from .sketch import InputSketch
from .store import DriftStore, StoredReference, StoredWindow
from .windows import Accumulator, WindowPolicy, Windows

__all__ = ["DriftService", "ServicePolicy"]

log = logging.getLogger("sidemesh.drift")
_ALERT_STATE = "alert_tracker"
# The input name of a reference built without --input: it stands for a version's only input.
ANY_INPUT = ""
_COUNT_LIMIT = 2**63  # sequence numbers and drop counts are persisted as SQLite integers
# Values one report may count per field: a report covers seconds of one sidecar's traffic. The
# bound keeps the uint64 totals of a window (checkpointed as InputStats) far from overflowing.
MAX_REPORT_COUNT = 2**40


def _count_error(report: pb.StatsReport) -> str:
    """The first count in ``report`` past ``MAX_REPORT_COUNT``, named, or ""."""
    for i, stats in enumerate(report.inputs):
        if stats.rows >= MAX_REPORT_COUNT:
            return f"inputs[{i}].rows: expected a count below 2**40, got {stats.rows}"
        for j, feature in enumerate(stats.features):
            for name in ("count", "missing", "other"):
                if getattr(feature, name) >= MAX_REPORT_COUNT:
                    return f"inputs[{i}].features[{j}].{name}: expected a count below 2**40, got {getattr(feature, name)}"
            if any(n >= MAX_REPORT_COUNT for n in feature.categories.values()):
                return f"inputs[{i}].features[{j}].categories: expected counts below 2**40"
    return ""


@dataclass(frozen=True)
class ServicePolicy:
    tests: TestPolicy = TestPolicy()
    windows: WindowPolicy = WindowPolicy()
    fire_after: int = 3
    resolve_after: int = 3


class DriftService:
    def __init__(self, store: DriftStore, metrics: DriftMetrics, policy: ServicePolicy, notify=None) -> None:
        self.store = store
        self.metrics = metrics
        self.policy = policy
        self.notify = notify if notify is not None else (lambda event: None)
        self.windows = Windows(policy.windows)
        self.references: dict[tuple[str, str], dict[str, InputSketch]] = {}
        self.reference_meta: dict[tuple[str, str, str], tuple[str, float]] = {}
        self.captures: dict[tuple[str, str], tuple[int, Accumulator]] = {}
        self.sources: dict[str, tuple[int, int, float]] = {}
        self.latest: dict[tuple[str, str], dict] = {}
        # Each version's last evaluated window (statistics, not persisted): the report page's charts.
        self.evaluated: dict[tuple[str, str], Accumulator] = {}
        self.tracker = AlertTracker(policy.fire_after, policy.resolve_after, store.value(_ALERT_STATE))
        self._queue: asyncio.Queue[Accumulator] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="drift-eval")
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._restore()

    # --- restart --------------------------------------------------------------------------

    def _restore(self) -> None:
        for ref in self.store.references():
            sketch = InputSketch.from_proto(pb.InputStats.FromString(ref.stats), "reference")
            self.references.setdefault((ref.model, ref.version), {})[ref.input] = sketch
            self.reference_meta[(ref.model, ref.version, ref.input)] = (ref.source, ref.created_at)
        for model, version, rows, started_at in self.store.captures():
            self.captures[(model, version)] = (rows, Accumulator(model, version, started_at))
        for stored in self.store.windows():
            sketch = InputSketch.from_proto(pb.InputStats.FromString(stored.stats), "window")
            key = (stored.model, stored.version)
            if stored.kind == "capture":
                if key in self.captures:
                    self.captures[key][1].add(stored.input, sketch, 0.0, 0.0)
                continue
            window = self.windows.open.get(key)
            if window is None:
                window = Accumulator(stored.model, stored.version, stored.started_at)
                self.windows.restore(window)
            window.add(stored.input, sketch, 0.0, 0.0)
        self.sources = self.store.sources()
        for body in self.store.latest_evaluations():
            self.latest[(body["model"], body["version"])] = body
        for event in self.tracker.firing():
            self.metrics.alert_firing.labels(event.model, event.version).set(1)

    def checkpoint(self) -> None:
        """Persist windows in progress, captures and per-source sequences (one transaction)."""
        stored: list[StoredWindow] = []
        for window in self.windows.open.values():
            stored += [StoredWindow(window.model, window.version, "window", name,
                                    s.to_proto(window.model, window.version, name).SerializeToString(), window.started_at)
                       for name, s in window.inputs.items()]
        for _, capture in self.captures.values():
            stored += [StoredWindow(capture.model, capture.version, "capture", name,
                                    s.to_proto(capture.model, capture.version, name).SerializeToString(), capture.started_at)
                       for name, s in capture.inputs.items()]
        self.store.checkpoint(stored, self.sources)

    # --- ingestion ------------------------------------------------------------------------

    def apply(self, report: pb.StatsReport, now: float | None = None) -> str:
        """Apply one report; return "" or why it was refused (the sidecar is told)."""
        now = time.time() if now is None else now
        m = self.metrics
        last = self.sources.get(report.source)
        if not report.source:
            m.reports.labels("rejected").inc()
            return "source: must name the sending sidecar"
        if report.sequence >= _COUNT_LIMIT or report.dropped_reports >= _COUNT_LIMIT:  # SQLite integers are signed 64-bit
            m.reports.labels("rejected").inc()
            return f"{'sequence' if report.sequence >= _COUNT_LIMIT else 'dropped_reports'}: expected a count below 2**63"
        if last is not None and report.sequence <= last[0]:
            m.reports.labels("duplicate").inc()
            return ""
        if last is not None and report.dropped_reports > last[1]:
            m.stats_dropped.labels("sidecar_queue").inc(report.dropped_reports - last[1])
        elif last is None and report.dropped_reports:
            m.stats_dropped.labels("sidecar_queue").inc(report.dropped_reports)
        self.sources[report.source] = (report.sequence, report.dropped_reports, now)
        try:
            too_large = _count_error(report)
            if too_large:
                raise SketchError(too_large)
            parsed = [(s.model, s.version, s.input, InputSketch.from_proto(s, f"inputs[{i}]"))
                      for i, s in enumerate(report.inputs)]
            for i, (model, version, _, _) in enumerate(parsed):
                if not model or not version:
                    raise SketchError(f"inputs[{i}]: model and version must be set")
        except SketchError as exc:
            m.reports.labels("rejected").inc()
            m.stats_dropped.labels("invalid").inc()
            return str(exc)
        m.reports.labels("applied").inc()
        for i, (model, version, name, sketch) in enumerate(parsed):
            m.stats_received.labels(model, version).inc(sketch.values)
            capture = self.captures.get((model, version))
            if capture is not None:
                capture[1].add(name, InputSketch.from_proto(report.inputs[i]), report.start_unix, report.end_unix)
                if capture[1].rows >= capture[0]:
                    self._finish_capture(capture[1], now)
            closed = self.windows.add(model, version, name, sketch, report.start_unix, report.end_unix, now)
            if closed is not None:
                self._submit(closed)
        return ""

    def tick(self, now: float | None = None) -> None:
        """Close the windows that reached their age limit (called every second)."""
        for window in self.windows.due(time.time() if now is None else now):
            self._submit(window)

    def flush(self) -> None:
        """Close every open window now (tests and `POST /v1/windows/close`)."""
        for key in list(self.windows.open):
            self._submit(self.windows.open.pop(key))

    # --- references -----------------------------------------------------------------------

    def put_reference(self, model: str, version: str, input_name: str, sketch: InputSketch, source: str) -> None:
        at = time.time()
        stats = sketch.to_proto(model, version, input_name).SerializeToString()
        self.store.put_reference(StoredReference(model, version, input_name, stats, source, at))
        self.references.setdefault((model, version), {})[input_name] = sketch
        self.reference_meta[(model, version, input_name)] = (source, at)

    def delete_reference(self, model: str, version: str) -> None:
        if (model, version) not in self.references and (model, version) not in self.captures:
            raise NotFound(f"no reference for model {model!r} version {version!r}")
        self.store.delete_references(model, version)
        self.store.finish_capture(model, version, [])
        self.references.pop((model, version), None)
        self.captures.pop((model, version), None)
        for key in [k for k in self.reference_meta if k[:2] == (model, version)]:
            del self.reference_meta[key]
        # Without a reference nothing can resolve the alert later: resolve it now.
        event = self.tracker.forget(model, version, time.time(), f"{model} version {version}: reference deleted")
        self.store.put_value(_ALERT_STATE, self.tracker.state())
        if event is not None:
            self.metrics.alert_firing.labels(model, version).set(0)
            self.notify(event)

    def start_capture(self, model: str, version: str, rows: int) -> None:
        at = time.time()
        self.store.put_capture(model, version, rows, at)
        self.captures[(model, version)] = (rows, Accumulator(model, version, at))

    def _finish_capture(self, capture: Accumulator, now: float) -> None:
        key = (capture.model, capture.version)
        del self.captures[key]
        refs = []
        for name, sketch in capture.inputs.items():
            refs.append(StoredReference(capture.model, capture.version, name,
                                        sketch.to_proto(capture.model, capture.version, name).SerializeToString(),
                                        "capture", now))
        self.store.finish_capture(capture.model, capture.version, refs)
        self.references[key] = dict(capture.inputs)
        for ref in refs:
            self.reference_meta[(ref.model, ref.version, ref.input)] = ("capture", now)
        log.info("reference for %s version %s captured from %d rows", capture.model, capture.version, capture.rows)

    def references_for(self, model: str, version: str, inputs) -> dict[str, InputSketch]:
        """The reference of each window input: by name, or the version's one nameless reference."""
        refs = self.references.get((model, version), {})
        matched = {}
        for name in inputs:
            ref = refs.get(name)
            if ref is None and len(refs) == 1 and ANY_INPUT in refs:
                ref = refs[ANY_INPUT]
            if ref is not None:
                matched[name] = ref
        return matched

    # --- evaluation -----------------------------------------------------------------------

    def _submit(self, window: Accumulator) -> None:
        self._busy += 1
        self._idle.clear()
        self._queue.put_nowait(window)

    async def wait_idle(self) -> None:
        """Return once every closed window has been evaluated and recorded."""
        await self._idle.wait()

    async def run(self) -> None:
        """Evaluate closed windows in order, one at a time, off the loop."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                window = await self._queue.get()
                try:
                    refs = self.references_for(window.model, window.version, window.inputs)
                    started = time.perf_counter()
                    result = await loop.run_in_executor(
                        self._executor, evaluate, window.model, window.version, refs, window.inputs, self.policy.tests)
                    self.metrics.evaluation_seconds.observe(time.perf_counter() - started)
                    self._record(window, result, bool(refs))
                except Exception:
                    log.exception("evaluating %s version %s failed", window.model, window.version)
                finally:
                    self._busy -= 1
                    if not self._busy:
                        self._idle.set()
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _record(self, window: Accumulator, result: Evaluation, has_reference: bool) -> None:
        now = time.time()
        m = self.metrics
        model, version = window.model, window.version
        body = result.to_dict()
        body["window"] = {"rows": window.rows, "started_at": window.started_at, "closed_at": now,
                          "first_row_at": window.first_row_at if window.first_row_at != float("inf") else None,
                          "last_row_at": window.last_row_at if window.last_row_at != float("-inf") else None}
        body["evaluated_at"] = now
        if not has_reference:
            verdict = "no_reference"
            body["reason"] = f"no reference profile for model {model!r} version {version!r}"
        elif not result.evaluated:
            verdict = "insufficient"
        else:
            verdict = "drift" if result.drifted else "clean"
        body["verdict"] = verdict
        m.windows.labels(model, version, verdict).inc()
        event = None
        if verdict in ("drift", "clean"):
            self._set_gauges(result)
            m.verdict.labels(model, version).set(1 if result.drifted else 0)
            event = self.tracker.observe(model, version, result.drifted, now, _summary(result), _details(body))
            if event is not None:
                m.alert_firing.labels(model, version).set(1 if event.status == "firing" else 0)
        body["alert"] = self.tracker.status(model, version)
        self.store.add_evaluation(model, version, now, verdict, body, _ALERT_STATE, self.tracker.state())
        self.latest[(model, version)] = body
        self.evaluated[(model, version)] = window
        if event is not None:
            self.notify(event)

    def _set_gauges(self, result: Evaluation) -> None:
        m = self.metrics
        for f in result.features:
            feature = f.name
            for r in f.results:
                m.score.labels(result.model, result.version, f.input, feature, r.test).set(r.score)
                if r.p_value is not None:
                    m.p_value.labels(result.model, result.version, f.input, feature, r.test).set(r.p_value)
            m.feature_drifted.labels(result.model, result.version, f.input, feature).set(1 if f.drifted else 0)

    # --- views for the HTTP API -----------------------------------------------------------

    def reference_list(self) -> list[dict]:
        out = []
        for (model, version), inputs in sorted(self.references.items()):
            for name, sketch in sorted(inputs.items()):
                source, at = self.reference_meta.get((model, version, name), ("", 0.0))
                out.append({"model": model, "version": version, "input": name, "datatype": sketch.datatype,
                            "rows": sketch.rows, "features": len(sketch.features), "source": source, "created_at": at})
        for (model, version), (rows, capture) in sorted(self.captures.items()):
            out.append({"model": model, "version": version, "capturing": True, "rows": capture.rows,
                        "rows_wanted": rows, "started_at": capture.started_at})
        return out


def _summary(result: Evaluation) -> str:
    drifted = [f for f in result.features if f.drifted]
    if not drifted:
        return f"{result.model} version {result.version}: inputs match the reference ({len(result.features)} features tested)"
    names = ", ".join(f"{f.input}[{f.name}]" for f in drifted[:5]) + (" ..." if len(drifted) > 5 else "")
    return (f"Input drift in {result.model} version {result.version}: {len(drifted)} of {len(result.features)} "
            f"features drifted ({names})")


def _details(body: dict) -> dict:
    features = [f for f in body.get("features", []) if f.get("drifted")]
    return {"window": body["window"], "features_tested": len(body.get("features", [])),
            "drifted_features": len(features), "features": features[:50]}
