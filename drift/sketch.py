"""Mergeable per-feature statistics of input tensors.

This is the one data structure the sidecar's tap, the stats stream, reference profiles and
the drift tests share. Per feature it keeps the count of finite values, the count of
missing ones (NaN, infinity), mean and sum of squared deviations (merged with Chan et al.'s
formula, so partial results from many sidecars add up exactly), min and max, a quantile
sketch, and value counts for categorical datatypes.

The quantile sketch is Apache DataSketches' KLL (``datasketches``): mergeable, rank error
about 0.3% at k=1000 independent of the values' scale or offset (a log-bucket histogram
would blur a feature like ``1000 +- 1``), exact while it holds fewer than about k values, and
its serialized form is the same across the library's languages. Updates take whole numpy
columns, about 50 ns per value.

Everything here works on whole arrays: the tap calls ``InputSketch.update`` once per batch
of requests, not once per value.
"""

from __future__ import annotations

import math
import struct
from typing import Iterable

import datasketches
import numpy as np

from .errors import SketchError
from .proto import stats_pb2 as pb

__all__ = [
    "CATEGORICAL_DATATYPES",
    "FeatureSketch",
    "InputSketch",
    "MAX_CATEGORIES",
    "MAX_FEATURES",
    "SKETCH_K",
    "WIDE_FEATURES",
    "WIDE_K",
    "category_key",
]

SKETCH_K = 1000
# Inputs wider than this many features get smaller sketches (rank error ~1.3% instead of
# ~0.3%), so a 2,048-feature input's report stays near 10 MB rather than 50.
WIDE_FEATURES = 256
WIDE_K = 200
# Distinct values counted per categorical feature; further values count in ``other``.
MAX_CATEGORIES = 1000
# Features kept per input tensor (columns beyond it are not summarized).
MAX_FEATURES = 2048
CATEGORICAL_DATATYPES = frozenset({
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BYTES",
})


def category_key(value) -> str:
    """The text a category value is counted under: integers in decimal, bytes as UTF-8
    (invalid sequences as backslash escapes, so distinct values stay distinct)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


_KLL_FULL = struct.Struct("<QHBB")  # after the 8-byte preamble: n, min_k, number of levels, unused


def _kll_layout_error(data: bytes) -> str:
    """Why ``data`` is not a KLL doubles sketch the library can use safely, or "". The library's
    deserializer checks the preamble and the total size only; offsets, k or a weight that do
    not add up (or a NaN item, which breaks its sorting) make later merges and queries read
    out of bounds and crash the process, so the layout is checked here first."""
    if len(data) < 8:
        return f"{len(data)} bytes, shorter than the 8-byte preamble"
    flags, k, m = data[3], int.from_bytes(data[4:6], "little"), data[6]
    if k < 8 or m != 8:
        return f"k={k} and m={m}; expected k >= 8 and m = 8"
    if flags & 1:  # empty
        return "" if len(data) == 8 else f"an empty sketch of {len(data)} bytes; expected 8"
    if flags & 4:  # one item, and nothing but the item after the preamble
        if len(data) != 16:
            return f"a one-item sketch of {len(data)} bytes; expected 16"
        return "" if math.isfinite(struct.unpack_from("<d", data, 8)[0]) else "a non-finite item"
    if len(data) < 20:
        return f"{len(data)} bytes, shorter than the 20-byte header"
    n, min_k, num_levels, _ = _KLL_FULL.unpack_from(data, 8)
    if not 1 <= num_levels <= 61 or not 8 <= min_k <= k:
        return f"{num_levels} levels and min_k={min_k}; expected 1-61 levels and 8 <= min_k <= k"
    items_at = 20 + 4 * num_levels + 16  # level offsets, then min and max
    if len(data) < items_at or (len(data) - items_at) % 8:
        return f"{len(data)} bytes do not hold {num_levels} level offsets, min, max and whole items"
    levels = [*struct.unpack_from(f"<{num_levels}I", data, 20)]
    levels.append(levels[0] + (len(data) - items_at) // 8)
    if any(a > b for a, b in zip(levels, levels[1:])):
        return f"level offsets {levels} are out of order"
    weight = sum((b - a) << height for height, (a, b) in enumerate(zip(levels, levels[1:])))
    if weight != n:
        return f"its items weigh {weight} in all but n is {n}"
    values = np.frombuffer(data, dtype="<f8", offset=items_at - 16)  # min, max, items
    if not np.isfinite(values).all() or values[0] > values[1]:
        return "min, max and items must be finite numbers with min <= max"
    return ""


class FeatureSketch:
    """The statistics of one feature; merge two with ``merge``."""

    __slots__ = ("categorical", "count", "missing", "mean", "m2", "min", "max", "kll", "categories", "other")

    def __init__(self, categorical: bool = False, k: int = SKETCH_K) -> None:
        self.categorical = categorical
        self.count = 0
        self.missing = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.kll = datasketches.kll_doubles_sketch(k)
        self.categories: dict[str, int] = {}
        self.other = 0

    @property
    def variance(self) -> float:
        """Sample variance of the finite values (NaN below two values)."""
        return self.m2 / (self.count - 1) if self.count > 1 else math.nan

    @property
    def category_total(self) -> int:
        return sum(self.categories.values()) + self.other

    def add_moments(self, count: int, mean: float, m2: float, lo: float, hi: float) -> None:
        """Fold in the moments of ``count`` other values (Chan et al.'s parallel formula)."""
        if count <= 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total
        if lo < self.min:
            self.min = lo
        if hi > self.max:
            self.max = hi

    def add_categories(self, counts: Iterable[tuple[str, int]]) -> None:
        categories = self.categories
        for key, n in counts:
            if key in categories:
                categories[key] += n
            elif len(categories) < MAX_CATEGORIES:
                categories[key] = n
            else:
                self.other += n

    def merge(self, other: "FeatureSketch") -> None:
        self.categorical = self.categorical or other.categorical
        self.missing += other.missing
        self.add_moments(other.count, other.mean, other.m2, other.min, other.max)
        if not other.kll.is_empty():
            self.kll.merge(other.kll)
        self.add_categories(other.categories.items())
        self.other += other.other

    def to_proto(self, index: int) -> pb.FeatureStats:
        msg = pb.FeatureStats(index=index, count=self.count, missing=self.missing, other=self.other,
                              categorical=self.categorical)
        if self.count and self.min <= self.max:  # BYTES features count values but have no moments
            msg.mean, msg.m2, msg.min, msg.max = self.mean, self.m2, self.min, self.max
        if not self.kll.is_empty():
            msg.kll = self.kll.serialize()
        if self.categories:
            msg.categories.update(self.categories)
        return msg

    @classmethod
    def from_proto(cls, msg: pb.FeatureStats, where: str, k: int = SKETCH_K, numeric: bool = True) -> "FeatureSketch":
        """Load and validate; ``numeric=False`` (BYTES) ignores the moments."""
        sketch = cls.__new__(cls)  # no default KLL: most messages bring their own
        sketch.categorical = msg.categorical
        sketch.count, sketch.missing, sketch.other = msg.count, msg.missing, msg.other
        if msg.count and numeric:
            mean, m2, lo, hi = msg.mean, msg.m2, msg.min, msg.max
            if not (math.isfinite(mean) and math.isfinite(m2) and math.isfinite(lo) and math.isfinite(hi)
                    and m2 >= 0 and lo <= hi):
                raise SketchError(f"{where}: mean, m2, min and max must be finite with m2 >= 0 and min <= max")
            sketch.mean, sketch.m2, sketch.min, sketch.max = mean, m2, lo, hi
        else:
            sketch.mean, sketch.m2, sketch.min, sketch.max = 0.0, 0.0, math.inf, -math.inf
        if msg.kll:
            problem = _kll_layout_error(msg.kll)
            if problem:
                raise SketchError(f"{where}.kll: not a serialized KLL doubles sketch ({problem})")
            try:
                sketch.kll = datasketches.kll_doubles_sketch.deserialize(msg.kll)
            except Exception as exc:  # the library raises RuntimeError/ValueError variants
                raise SketchError(f"{where}.kll: not a serialized KLL doubles sketch ({exc})") from None
            if sketch.kll.n > msg.count:
                raise SketchError(f"{where}.kll: holds {sketch.kll.n} values but count is {msg.count}")
        else:
            sketch.kll = datasketches.kll_doubles_sketch(k)
        if msg.categories:
            if len(msg.categories) > MAX_CATEGORIES:
                raise SketchError(f"{where}.categories: {len(msg.categories)} distinct values, at most {MAX_CATEGORIES}")
            sketch.categories = dict(msg.categories)
        else:
            sketch.categories = {}
        return sketch


class InputSketch:
    """The statistics of one input tensor: a row count and one ``FeatureSketch`` per column."""

    __slots__ = ("datatype", "rows", "features", "feature_names", "k")

    def __init__(self, datatype: str, k: int | None = None) -> None:
        """``k``: the KLL size; None picks ``SKETCH_K``, or ``WIDE_K`` for inputs wider than
        ``WIDE_FEATURES`` (decided by the first rows seen)."""
        self.datatype = datatype
        self.rows = 0
        self.features: list[FeatureSketch] = []
        self.feature_names: list[str] = []
        self.k = k

    @property
    def categorical(self) -> bool:
        return self.datatype in CATEGORICAL_DATATYPES

    @property
    def values(self) -> int:
        """Feature values summarized (finite, missing and categorical alike)."""
        return sum(f.count + f.missing for f in self.features)

    def _ensure(self, columns: int) -> None:
        if self.k is None:
            self.k = WIDE_K if columns > WIDE_FEATURES else SKETCH_K
        categorical = self.categorical
        while len(self.features) < columns:
            self.features.append(FeatureSketch(categorical, self.k))

    @classmethod
    def from_array(cls, array: np.ndarray, datatype: str, k: int | None = None) -> "InputSketch":
        sketch = cls(datatype, k)
        sketch.update(array)
        return sketch

    def update(self, array: np.ndarray) -> None:
        """Add the rows of a tensor shaped [rows, ...] (or [rows]: one feature)."""
        if array.ndim == 0:
            array = array.reshape(1)
        rows = array.shape[0]
        if rows == 0:
            return
        matrix = array.reshape(rows, -1)
        if matrix.shape[1] > MAX_FEATURES:
            matrix = matrix[:, :MAX_FEATURES]
        columns = matrix.shape[1]
        self._ensure(columns)
        self.rows += rows
        features = self.features
        if self.datatype == "BYTES":
            for j in range(columns):
                counts: dict[str, int] = {}
                for value in matrix[:, j]:
                    key = category_key(value)
                    counts[key] = counts.get(key, 0) + 1
                feature = features[j]
                feature.count += rows
                feature.add_categories(counts.items())
            return
        x = matrix.astype(np.float64, copy=False)
        finite = np.isfinite(x)
        count = finite.sum(axis=0)
        if count.sum() == x.size:
            clean = x
            sums = x.sum(axis=0)
            mean = sums / rows
            dev = x - mean
            lo, hi = x.min(axis=0), x.max(axis=0)
        else:
            clean = np.where(finite, x, np.nan)
            sums = np.where(finite, x, 0.0).sum(axis=0)
            mean = sums / np.maximum(count, 1)
            dev = np.where(finite, x - mean, 0.0)
            lo = np.where(finite, x, np.inf).min(axis=0)
            hi = np.where(finite, x, -np.inf).max(axis=0)
        m2 = np.einsum("ij,ij->j", dev, dev)
        columns_t = np.ascontiguousarray(clean.T)
        counts_l, mean_l, m2_l, lo_l, hi_l = count.tolist(), mean.tolist(), m2.tolist(), lo.tolist(), hi.tolist()
        for j in range(columns):
            feature = features[j]
            feature.missing += rows - counts_l[j]
            if counts_l[j]:
                feature.add_moments(counts_l[j], mean_l[j], m2_l[j], lo_l[j], hi_l[j])
                feature.kll.update(columns_t[j])  # NaN is skipped by the sketch
        if self.categorical:
            for j in range(columns):
                values, counts_j = np.unique(matrix[:, j], return_counts=True)
                features[j].add_categories(zip(map(category_key, values.tolist()), counts_j.tolist()))

    def merge(self, other: "InputSketch") -> None:
        if other.datatype != self.datatype:
            raise SketchError(f"cannot merge {other.datatype} statistics into {self.datatype} ones")
        self._ensure(len(other.features))
        for mine, theirs in zip(self.features, other.features):
            mine.merge(theirs)
        self.rows += other.rows
        if len(other.feature_names) > len(self.feature_names):
            self.feature_names = list(other.feature_names)

    def feature_name(self, index: int) -> str:
        names = self.feature_names
        return names[index] if index < len(names) and names[index] else str(index)

    def to_proto(self, model: str, version: str, input_name: str) -> pb.InputStats:
        msg = pb.InputStats(model=model, version=version, input=input_name, datatype=self.datatype, rows=self.rows)
        msg.features.extend(f.to_proto(i) for i, f in enumerate(self.features)
                            if f.count or f.missing or f.categories or f.other)
        msg.feature_names.extend(self.feature_names)
        return msg

    @classmethod
    def from_proto(cls, msg: pb.InputStats, where: str = "input", k: int | None = None) -> "InputSketch":
        """Validate and load; raises ``SketchError`` naming the field at fault."""
        from model_server.datatypes import V2_TO_NUMPY  # the V2 datatype table, numpy only

        if msg.datatype not in V2_TO_NUMPY:
            raise SketchError(f"{where}.datatype: {msg.datatype!r} is not a V2 datatype")
        sketch = cls(msg.datatype, k)
        sketch.rows = rows = msg.rows
        slots: dict[int, FeatureSketch] = {}
        for i, feature in enumerate(msg.features):
            index = feature.index
            if index >= MAX_FEATURES:
                raise SketchError(f"{where}.features[{i}].index: {index} is beyond the limit of {MAX_FEATURES} features")
            if index in slots:
                raise SketchError(f"{where}.features[{i}].index: feature {index} appears twice")
            if feature.count + feature.missing > rows and not feature.categories:
                raise SketchError(f"{where}.features[{i}]: {feature.count + feature.missing} values in {rows} rows")
            slots[index] = FeatureSketch.from_proto(feature, f"{where}.features[{i}]", k or SKETCH_K,
                                                    msg.datatype != "BYTES")
        if slots:
            categorical = sketch.categorical
            sketch.k = k or SKETCH_K
            sketch.features = [slots.get(j) or FeatureSketch(categorical, sketch.k) for j in range(max(slots) + 1)]
        if len(msg.feature_names) > MAX_FEATURES:
            raise SketchError(f"{where}.feature_names: more than {MAX_FEATURES} names")
        sketch.feature_names = list(msg.feature_names)
        return sketch
