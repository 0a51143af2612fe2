"""The drift detector's stats stream and statistics (``StatsReport`` decoding,
``DriftService.apply``, ``InputSketch.from_proto`` with adversarial KLL bytes): a report is
applied or refused with an error naming the field, never raised; what is applied can always
be checkpointed, closed and evaluated; and real statistics survive the wire unchanged."""

from __future__ import annotations

import struct
import uuid
from contextlib import contextmanager

import datasketches
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from drift.errors import SketchError
from drift.evaluate import evaluate
from drift.metrics import DriftMetrics
from drift.proto import stats_pb2 as pb
from drift.service import DriftService, ServicePolicy
from drift.sketch import FeatureSketch, InputSketch
from drift.store import DriftStore
from drift.windows import WindowPolicy

from .budget import share
from .counts import ran
from .oracle import noted, parse_or_refuse
from .stats_inputs import feature_stats, input_stats, kll_bytes, proto_edge_variants, reports, valid_input_stats


REFERENCE = InputSketch.from_array(np.random.default_rng(7).normal(size=(200, 2)).astype(np.float32), "FP32")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("drift")


@contextmanager
def _service(state_dir=None):
    """A fresh detector state per example, so that a failure shrinks to the reports that cause it
    (in memory unless a directory is given)."""
    store = DriftStore(state_dir / f"{uuid.uuid4().hex}.db" if state_dir else ":memory:")
    try:
        service = DriftService(store, DriftMetrics(), ServicePolicy(windows=WindowPolicy(rows=50, seconds=60)))
        for version in ("1", "2"):
            service.put_reference("m", version, "x", REFERENCE, "fuzz")
        yield service
    finally:
        store.close()


def _evaluate_closed(service: DriftService) -> None:
    """What the service's worker does with each closed window (``DriftService.run``)."""
    while not service._queue.empty():
        window = service._queue.get_nowait()
        refs = service.references_for(window.model, window.version, window.inputs)
        service._record(window, evaluate(window.model, window.version, refs, window.inputs, service.policy.tests), bool(refs))


@given(st.lists(reports(), min_size=1, max_size=4), st.booleans())
def test_any_reports_are_applied_or_refused_and_the_state_stays_usable(state_dir, batch, close):
    ran("drift: DriftService.apply")
    with _service(state_dir) as service:
        for report in batch:
            error = parse_or_refuse(lambda r=report: service.apply(pb.StatsReport.FromString(r.SerializeToString()), now=1000.0), ())
            assert isinstance(error, str)
        service.checkpoint()  # windows in progress must always persist
        if close:
            service.flush()
        _evaluate_closed(service)


@share(6)
@given(st.lists(valid_input_stats(), min_size=1, max_size=2))
def test_every_report_field_set_to_every_edge_value_is_applied_twice_or_refused(inputs):
    report = pb.StatsReport(source="s", sequence=1, start_unix=1.0, end_unix=2.0)
    report.inputs.extend(inputs)
    for change, variant in proto_edge_variants(report):
        ran("drift: StatsReport edge sweep")
        with noted(change), _service() as service:
            for _ in range(2):  # twice: the window merges the edge value with itself
                assert isinstance(parse_or_refuse(lambda v=variant: service.apply(v, now=1000.0), ()), str)
                variant.sequence = min(variant.sequence + 1, 2**64 - 1)
            service.checkpoint()
            service.flush()
            _evaluate_closed(service)


@given(st.binary(max_size=300) | reports().map(lambda r: r.SerializeToString()).flatmap(
    lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda cut: b[:cut])))
def test_any_bytes_on_the_stream_decode_as_a_report_or_fail_to_parse(data):
    ran("drift: StatsReport bytes")
    try:
        pb.StatsReport.FromString(data)
    except DecodeError:
        pass


@share(1000)  # cheap, and memory corruption shows only in some of the damaged sketches that load
@given(kll_bytes() | st.binary(max_size=64), st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 10**6]))
def test_any_kll_bytes_load_as_a_usable_sketch_or_a_sketch_error(data, count):
    ran("drift: KLL sketch bytes")
    msg = pb.FeatureStats(index=0, count=count, mean=0.0, m2=0.0, min=0.0, max=1.0, kll=data)
    sketch = parse_or_refuse(lambda: FeatureSketch.from_proto(msg, "f"), SketchError)
    if sketch is None or sketch.kll.is_empty():
        return
    sketch.kll.get_quantiles([0.0, 0.25, 0.5, 1.0])
    sketch.kll.get_cdf([0.0, 1.0])
    mine = FeatureSketch(k=200)
    mine.kll.update(np.linspace(-1, 1, 500))
    mine.merge(sketch)
    mine.merge(sketch)
    mine.kll.update(np.linspace(0, 5, 3000))
    mine.kll.get_quantile(0.5)
    assert datasketches.kll_doubles_sketch.deserialize(mine.kll.serialize()).n == mine.kll.n


@given(kll_bytes(damaged=False))
def test_every_sketch_the_library_writes_passes_the_layout_check(data):
    ran("drift: KLL layout check (valid)")
    msg = pb.FeatureStats(index=0, count=2**40, mean=0.0, m2=0.0, min=-1e6, max=1e6, kll=data)
    assert FeatureSketch.from_proto(msg, "f").kll.serialize() == data


@given(feature_stats(), st.booleans())
def test_any_feature_statistics_load_or_are_a_sketch_error(msg, numeric):
    ran("drift: FeatureStats")
    parse_or_refuse(lambda: FeatureSketch.from_proto(msg, "f", numeric=numeric), SketchError)


@given(input_stats() | valid_input_stats())
def test_any_input_statistics_load_or_are_a_sketch_error(msg):
    ran("drift: InputStats")
    sketch = parse_or_refuse(lambda: InputSketch.from_proto(msg, "input"), SketchError)
    if sketch is not None:
        sketch.to_proto("m", "1", "x").SerializeToString()


@given(valid_input_stats())
def test_real_statistics_survive_the_wire_unchanged(msg):
    ran("drift: InputStats round trip")
    sketch = InputSketch.from_proto(pb.InputStats.FromString(msg.SerializeToString()))
    again = sketch.to_proto(msg.model, msg.version, msg.input)
    assert again == msg


# --- regressions found by the properties above -------------------------------------------

def _one_feature_report(sequence: int = 1, **feature) -> pb.StatsReport:
    report = pb.StatsReport(source="s", sequence=sequence)
    report.inputs.add(model="m", version="1", input="x", datatype="INT64", rows=2).features.add(index=0, **feature)
    return report


def test_a_report_whose_sequence_does_not_fit_the_store_is_refused_and_checkpoints_still_work():
    with _service() as service:
        assert service.apply(_one_feature_report(sequence=2**63), now=1.0) == "sequence: expected a count below 2**63"
        service.checkpoint()


def test_counts_that_would_overflow_a_window_are_refused_naming_the_field():
    with _service() as service:
        error = service.apply(_one_feature_report(other=2**63), now=1.0)
        assert error == "inputs[0].features[0].other: expected a count below 2**40, got 9223372036854775808"
        service.checkpoint()


def _damaged_sketch(at: int, value: bytes) -> bytes:
    sketch = datasketches.kll_doubles_sketch(200)
    sketch.update(np.linspace(0, 1, 5000))
    data = bytearray(sketch.serialize())
    data[at:at + len(value)] = value
    return bytes(data)


@pytest.mark.parametrize("kll, problem", [
    # Both deserialized, and merging the result into another sketch crashed the process (SIGSEGV).
    (_damaged_sketch(28, struct.pack("<I", 8_650_850)), "level offsets .* are out of order"),
    (_damaged_sketch(32, struct.pack("<I", 33_017)), "level offsets .* are out of order"),
])
def test_kll_bytes_the_library_cannot_use_safely_are_refused_before_it_sees_them(kll, problem):
    msg = pb.FeatureStats(index=0, count=10**6, mean=0.0, m2=0.0, min=0.0, max=1.0, kll=kll)
    with pytest.raises(SketchError, match=rf"^f\.kll: not a serialized KLL doubles sketch \(.*{problem}"):
        FeatureSketch.from_proto(msg, "f")
