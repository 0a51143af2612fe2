"""The shared statistics: partial sketches merge to exactly what one sketch of all the rows
holds, every kind of value is counted where it belongs, and the wire form round-trips and
is validated field by field."""

from __future__ import annotations

import numpy as np
import pytest

from drift.errors import SketchError
from drift.proto import stats_pb2 as pb
from drift.sketch import MAX_CATEGORIES, WIDE_FEATURES, WIDE_K, InputSketch


def roundtrip(sketch: InputSketch) -> InputSketch:
    data = sketch.to_proto("m", "1", "x").SerializeToString()
    return InputSketch.from_proto(pb.InputStats.FromString(data))


def test_sketches_of_parts_merge_to_the_moments_of_the_whole():
    data = np.random.default_rng(0).normal(5.0, 3.0, size=(3000, 4))
    merged = InputSketch("FP64")
    for part in np.array_split(data, 7):
        merged.merge(roundtrip(InputSketch.from_array(part, "FP64")))
    assert merged.rows == 3000
    for j, f in enumerate(merged.features):
        assert f.count == 3000 and f.missing == 0
        assert f.mean == pytest.approx(data[:, j].mean(), rel=1e-12)
        assert f.variance == pytest.approx(data[:, j].var(ddof=1), rel=1e-10)
        assert (f.min, f.max) == (data[:, j].min(), data[:, j].max())
        assert f.kll.get_quantiles([0.5])[0] == pytest.approx(np.median(data[:, j]), abs=0.05)


def test_nan_and_infinity_count_as_missing_and_stay_out_of_the_moments():
    data = np.array([[1.0, np.nan], [3.0, np.inf], [np.nan, 2.0]], dtype=np.float32)
    sketch = roundtrip(InputSketch.from_array(data, "FP32"))
    first, second = sketch.features
    assert (first.count, first.missing, first.mean) == (2, 1, 2.0)
    assert (second.count, second.missing, second.mean, second.max) == (1, 2, 2.0, 2.0)
    assert first.kll.n == 2


def test_integers_are_counted_as_categories_and_bytes_as_text():
    ints = roundtrip(InputSketch.from_array(np.array([3, 3, 7, -1], dtype=np.int64), "INT64"))
    assert ints.features[0].categories == {"3": 2, "7": 1, "-1": 1} and ints.features[0].categorical
    assert ints.features[0].mean == pytest.approx(3.0)
    words = roundtrip(InputSketch.from_array(np.array([[b"cat"], [b"dog"], [b"cat"], [b"\xff"]], dtype=object), "BYTES"))
    assert words.features[0].categories == {"cat": 2, "dog": 1, "\\xff": 1} and words.features[0].count == 4


def test_categories_beyond_the_cap_count_as_other():
    values = np.arange(MAX_CATEGORIES + 50, dtype=np.int32)
    feature = InputSketch.from_array(values, "INT32").features[0]
    assert len(feature.categories) == MAX_CATEGORIES and feature.other == 50


def test_wide_inputs_get_smaller_sketches():
    wide = InputSketch.from_array(np.zeros((2, WIDE_FEATURES + 1), dtype=np.float32), "FP32")
    narrow = InputSketch.from_array(np.zeros((2, 8), dtype=np.float32), "FP32")
    assert wide.k == WIDE_K and narrow.k > WIDE_K


@pytest.mark.parametrize("mutate,field", [
    (lambda m: setattr(m, "datatype", "FLOAT"), "input.datatype"),
    (lambda m: setattr(m.features[0], "kll", b"junk"), "input.features[0].kll"),
    (lambda m: setattr(m.features[0], "m2", -1.0), "input.features[0]"),
    (lambda m: setattr(m.features[1], "index", 0), "input.features[1].index"),
    (lambda m: setattr(m, "rows", 1), "input.features[0]"),
])
def test_malformed_statistics_are_refused_naming_the_field(mutate, field):
    message = InputSketch.from_array(np.ones((4, 2)), "FP64").to_proto("m", "1", "x")
    mutate(message)
    with pytest.raises(SketchError, match=field.replace("[", r"\[").replace("]", r"\]")):
        InputSketch.from_proto(message)
