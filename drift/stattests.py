"""Two-sample drift tests between a reference ``FeatureSketch`` and a window ``FeatureSketch``.

Numeric tests read the KLL sketches as what they are: weighted samples (each retained item
stands for 2^level values). The sketch's sorted view is rebuilt here once per feature with
numpy from the sketch's serialized form (a cross-language, documented layout), so every test
is a few vectorized ``searchsorted`` calls instead of one library call per split point; the
view answers ranks and quantiles exactly as ``get_cdf``/``get_quantiles(inclusive=True)``
do (the tests prove it). On those weighted samples KS and Wasserstein-1 are computed exactly,
at every retained item of either sketch, not on a grid.

Every function returns a ``TestResult`` and never raises on degenerate input: an empty
sketch, a constant feature or a single category give "no evidence of drift" (score 0, p 1),
and no NaN or infinity reaches the caller (metrics and JSON cannot carry them).
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass

import numpy as np
from scipy.special import kolmogorov, rel_entr
from scipy.stats import chi2, kstwo

from .sketch import FeatureSketch

__all__ = [
    "JS_BINS",
    "JS_THRESHOLD",
    "KS_EXACT_MAX_N",
    "PSI_BINS",
    "PSI_FLOOR",
    "PSI_THRESHOLD",
    "WASSERSTEIN_THRESHOLD",
    "TestResult",
    "chi_square",
    "jensen_shannon",
    "ks",
    "ks_p_value",
    "numeric_tests",
    "psi",
    "wasserstein",
]

# PSI over reference deciles; > 0.2 is the common "significant shift" rule of thumb.
PSI_BINS = 10
PSI_THRESHOLD = 0.2
# Empty bins get this proportion, so one empty bin adds a large but finite term.
PSI_FLOOR = 1e-4
# JS over the same deciles: 96% of a normal location shift's information survives 10
# equal-mass bins, while the null noise floor grows with sqrt(bins - 1): at 1,000-row windows
# it is ~0.04 (99.9th percentile ~0.07), safely under the threshold; 20 bins would put the
# 99.9th percentile at ~0.09. 0.1 (capymoa's default too, also on 10 bins) is about a
# 0.24-sigma mean shift (measured).
JS_BINS = 10
JS_THRESHOLD = 0.1
# Wasserstein-1 in reference standard deviations (for a pure location shift W1 is the shift).
# Not the common 0.1: unchanged 1,000-row windows exceed 0.1 in 0.36% of features (measured),
# so a 100-feature model would alert on ~30% of clean windows; none of 5,000 exceeded 0.15.
WASSERSTEIN_THRESHOLD = 0.15
# scipy's ks_2samp (asymptotic mode) takes p = kstwo.sf(D, round(nm/(n+m))). kstwo.sf costs
# 60 us to 80 ms per call (an O(n) exact sum in part of its range: ~0.7 ms at n = 1,000, 80 ms
# at n = 50,000), too slow for hundreds of features per window. Above this effective size
# the p-value is scipy's limiting Kolmogorov distribution at sqrt(n) D + 1/(6 sqrt(n)) (the
# first finite-sample term of kstwo's expansion): within 0.7% of kstwo.sf for p >= 0.01 and
# 3% for p >= 1e-4 (relative; tested), at about a microsecond.
KS_EXACT_MAX_N = 300

_FLOAT_MAX = float(np.finfo(np.float64).max)
_KLL_FAMILY = 15
_KLL_FLAG_SINGLE_ITEM = 4
_KLL_FULL_HEADER = 20  # preamble (8) + n (8) + min_k (2) + levels (1) + unused (1)


@dataclass(frozen=True, slots=True)
class TestResult:
    """One test's verdict input: p-value tests carry ``p_value``, distances ``threshold``."""

    __test__ = False  # not a pytest test class, despite the name

    test: str
    score: float
    p_value: float | None = None
    threshold: float | None = None


class _Sample:
    """A KLL sketch's sorted view: items ascending, their weights and cumulative weights."""

    __slots__ = ("cumulative", "cumulative0", "items", "n", "weights")

    def __init__(self, items: np.ndarray, weights: np.ndarray) -> None:
        order = np.argsort(items, kind="stable")  # sorted runs (one per level): timsort merges them
        self.items = items[order]
        self.weights = weights[order]
        self.cumulative0 = np.concatenate(([0], np.cumsum(self.weights)))  # weight below items[i] + weight of it
        self.cumulative = self.cumulative0[1:]
        self.n = int(self.cumulative0[-1])

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Fraction of values <= x, as ``kll.get_cdf(x, inclusive=True)`` (without the 1.0 tail)."""
        return self.cumulative0[np.searchsorted(self.items, x, side="right")] / self.n

    def quantiles(self, ranks: np.ndarray) -> np.ndarray:
        """Smallest item whose inclusive rank reaches each rank, as ``get_quantiles(inclusive=True)``."""
        index = np.searchsorted(self.cumulative, np.ceil(ranks * self.n), side="left")
        return self.items[np.minimum(index, self.items.size - 1)]


_EMPTY = _Sample(np.zeros(0), np.zeros(0, dtype=np.int64))


def _retained(kll) -> tuple[np.ndarray, np.ndarray] | None:
    """Items and weights from the serialized sketch (little-endian DataSketches KLL layout:
    header, level offsets, min, max, items by level, level h weighing 2^h); None when the
    bytes do not add up to the sketch's count, so the caller falls back to iteration."""
    data = kll.serialize()
    if len(data) < 8 or data[2] != _KLL_FAMILY:
        return None
    if data[3] & _KLL_FLAG_SINGLE_ITEM:
        return np.frombuffer(data, "<f8", count=1, offset=8), np.ones(1, dtype=np.int64)
    if len(data) < _KLL_FULL_HEADER:
        return None
    levels = data[18]
    start = _KLL_FULL_HEADER + 4 * levels + 16  # level offsets, then min and max
    if not 0 < levels < 62 or len(data) < start or (len(data) - start) % 8:
        return None
    offsets = struct.unpack_from(f"<{levels}I", data, _KLL_FULL_HEADER)
    count = (len(data) - start) // 8
    bounds = [o - offsets[0] for o in offsets] + [count]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    if min(sizes) < 0 or sum(size << level for level, size in enumerate(sizes)) != kll.n:
        return None
    items = np.frombuffer(data, "<f8", offset=start).copy()
    items[:sizes[0]].sort()  # level 0 is the only unsorted one; sorted, every level is a run
    return items, np.repeat(np.left_shift(1, np.arange(levels, dtype=np.int64)), sizes)


def _iterated(kll) -> tuple[np.ndarray, np.ndarray]:
    """Items and weights through the library's iterator (slower: one tuple per item)."""
    pairs = list(kll)
    items = np.fromiter((item for item, _ in pairs), np.float64, len(pairs))
    weights = np.fromiter((weight for _, weight in pairs), np.int64, len(pairs))
    return items, weights


def _sample(feature: FeatureSketch) -> _Sample:
    kll = feature.kll
    if kll.is_empty():
        return _EMPTY
    retained = _retained(kll)
    return _Sample(*(retained if retained is not None else _iterated(kll)))


def _finite(value: float, default: float = 0.0) -> float:
    """A plain float with NaN replaced and infinities clipped, fit for metrics and JSON."""
    value = float(value)
    if math.isnan(value):
        return default
    return max(min(value, _FLOAT_MAX), -_FLOAT_MAX)


def _scale(reference: FeatureSketch, window: FeatureSketch) -> float:
    """The reference's standard deviation; the window's when the reference is constant;
    1 (the feature's own unit) when both are."""
    for feature in (reference, window):
        variance = feature.variance
        if math.isfinite(variance) and variance > 0:
            std = math.sqrt(variance)
            if std > 0 and math.isfinite(std):
                return std
    return 1.0


def _ks_wasserstein(r: _Sample, w: _Sample, scale: float) -> tuple[float, float]:
    """Exact KS statistic and Wasserstein-1 / scale of two weighted samples.

    Both come from F_ref - F_win at every item of either sample (the only places a step
    function changes): one merge of the two sorted samples and a running sum of +weight/n
    (reference) and -weight/m (window)."""
    points = np.concatenate((r.items, w.items))
    steps = np.concatenate((r.weights / r.n, w.weights / -w.n))
    order = np.argsort(points, kind="stable")  # two sorted runs: a single timsort merge
    points = points[order]
    gap = np.abs(np.cumsum(steps[order]))
    # Within a run of tied values only the last partial sum is the CDFs' difference.
    d = float(max(gap[:-1][points[1:] != points[:-1]].max(initial=0.0), gap[-1]))
    # The area between the CDFs, which equals the integral over ranks of |Q_ref - Q_win|
    # (tied steps have zero width). Halved values keep a span wider than the float range finite.
    w1 = float(np.dot(gap[:-1], np.diff(points * 0.5))) * 2.0 / scale
    return min(d, 1.0), w1


def ks_p_value(d: float, n: int, m: int) -> float:
    """Two-sided p-value of scipy's ``ks_2samp`` in asymptotic mode: kstwo at round(nm/(n+m))."""
    en = max(1.0, float(np.round(n * m / (n + m))))
    if en <= KS_EXACT_MAX_N:
        p = float(kstwo.sf(d, en))
    else:
        root = math.sqrt(en)
        p = float(kolmogorov(d * root + 1.0 / (6.0 * root)))
    return _finite(min(max(p, 0.0), 1.0), default=1.0)


def _bin_proportions(r: _Sample, w: _Sample, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Proportions of each sample in bins cut at the reference's 1/bins quantiles (bins
    (-inf, e1], (e1, e2], ..., (e_last, inf)). Tied cut points leave bins empty in both
    samples, which add nothing to PSI or JS."""
    edges = r.quantiles(np.arange(1, bins) / bins)
    ref = np.diff(np.concatenate(([0.0], r.cdf(edges), [1.0])))
    win = np.diff(np.concatenate(([0.0], w.cdf(edges), [1.0])))
    return ref, win


def _psi(ref: np.ndarray, win: np.ndarray) -> float:
    ref, win = np.maximum(ref, PSI_FLOOR), np.maximum(win, PSI_FLOOR)
    return float(np.sum((win - ref) * np.log(win / ref)))


def _js(ref: np.ndarray, win: np.ndarray) -> float:
    mid = (ref + win) / 2
    divergence = (np.sum(rel_entr(ref, mid)) + np.sum(rel_entr(win, mid))) / (2 * math.log(2))
    return math.sqrt(min(max(float(divergence), 0.0), 1.0))


def _empty(*samples: _Sample) -> bool:
    return any(s.n == 0 for s in samples)


def ks(reference: FeatureSketch, window: FeatureSketch) -> TestResult:
    """Two-sample Kolmogorov-Smirnov: D = sup |F_ref - F_win| over the sketches."""
    r, w = _sample(reference), _sample(window)
    if _empty(r, w):
        return TestResult("ks", 0.0, 1.0)
    d, _ = _ks_wasserstein(r, w, 1.0)
    return TestResult("ks", _finite(d), ks_p_value(_sketch_adjusted(d, reference, window), r.n, w.n))


def _rank_error(feature: FeatureSketch) -> float:
    kll = feature.kll
    return kll.normalized_rank_error(False) if kll.is_estimation_mode() else 0.0


def _sketch_adjusted(d: float, reference: FeatureSketch, window: FeatureSketch) -> float:
    """D less half the two sketches' rank error, once the window sketch has compacted.

    A compacted window (more than ~k values) adds its rank error (~0.3% at k=1000) to D,
    while KS resolves ever smaller D as windows grow: unadjusted, 10,000-row windows raised
    ~13% false alarms at alpha 0.05 against a 1M-row reference, 50,000-row ones ~19%.
    Subtracting half the summed rank errors brought them to ~3% and ~1% (measured, 150
    windows each). Exact windows (the default 1,000 rows) are tested on the raw D.
    """
    if not window.kll.is_estimation_mode():
        return d
    return max(0.0, d - (_rank_error(reference) + _rank_error(window)) / 2)


def psi(reference: FeatureSketch, window: FeatureSketch, threshold: float = PSI_THRESHOLD) -> TestResult:
    """Population stability index over the reference's deciles."""
    r, w = _sample(reference), _sample(window)
    score = 0.0 if _empty(r, w) else _psi(*_bin_proportions(r, w, PSI_BINS))
    return TestResult("psi", _finite(score), None, threshold)


def jensen_shannon(reference: FeatureSketch, window: FeatureSketch, threshold: float = JS_THRESHOLD) -> TestResult:
    """Jensen-Shannon distance (base 2, in [0, 1]) over the reference's ``JS_BINS`` quantile bins."""
    r, w = _sample(reference), _sample(window)
    score = 0.0 if _empty(r, w) else _js(*_bin_proportions(r, w, JS_BINS))
    return TestResult("js", _finite(score), None, threshold)


def wasserstein(reference: FeatureSketch, window: FeatureSketch, threshold: float = WASSERSTEIN_THRESHOLD) -> TestResult:
    """Wasserstein-1 distance divided by the reference's standard deviation (scale-free)."""
    r, w = _sample(reference), _sample(window)
    score = 0.0 if _empty(r, w) else _ks_wasserstein(r, w, _scale(reference, window))[1]
    return TestResult("wasserstein", _finite(score), None, threshold)


def numeric_tests(reference: FeatureSketch, window: FeatureSketch, *, psi_threshold: float = PSI_THRESHOLD,
                  js_threshold: float = JS_THRESHOLD,
                  wasserstein_threshold: float = WASSERSTEIN_THRESHOLD) -> tuple[TestResult, ...]:
    """ks, psi, js and wasserstein at once, reading each sketch and sharing the CDF pass once."""
    r, w = _sample(reference), _sample(window)
    if _empty(r, w):
        return (TestResult("ks", 0.0, 1.0), TestResult("psi", 0.0, None, psi_threshold),
                TestResult("js", 0.0, None, js_threshold), TestResult("wasserstein", 0.0, None, wasserstein_threshold))
    d, w1 = _ks_wasserstein(r, w, _scale(reference, window))
    deciles = _bin_proportions(r, w, PSI_BINS)
    js_bins = deciles if JS_BINS == PSI_BINS else _bin_proportions(r, w, JS_BINS)
    return (
        TestResult("ks", _finite(d), ks_p_value(d, r.n, w.n)),
        TestResult("psi", _finite(_psi(*deciles)), None, psi_threshold),
        TestResult("js", _finite(_js(*js_bins)), None, js_threshold),
        TestResult("wasserstein", _finite(w1), None, wasserstein_threshold),
    )


def _contingency(reference: FeatureSketch, window: FeatureSketch) -> np.ndarray:
    """The 2 x K table of counts over the union of categories plus ``other``, empty columns dropped."""
    ref, win = reference.categories, window.categories
    keys = list(dict.fromkeys((*ref, *win)))
    table = np.array([[*(ref.get(k, 0) for k in keys), reference.other],
                      [*(win.get(k, 0) for k in keys), window.other]], dtype=np.float64)
    return table[:, table.sum(axis=0) > 0]


def _pool_sparse(table: np.ndarray) -> np.ndarray:
    """Pool the columns whose smaller expected count is < 5 into one; if that pool is still
    below 5, fold it into the smallest remaining column, so every expected count is >= 5
    (the chi-square approximation's usual validity condition) wherever that is possible."""
    expected_min = table.sum(axis=0) * table.sum(axis=1).min() / table.sum()
    sparse = expected_min < 5
    if not sparse.any():
        return table
    pooled = table[:, sparse].sum(axis=1, keepdims=True)
    dense = table[:, ~sparse]
    if dense.shape[1] and pooled.sum() * table.sum(axis=1).min() / table.sum() < 5:
        smallest = int(np.argmin(dense.sum(axis=0)))
        dense = dense.copy()
        dense[:, smallest] += pooled[:, 0]
        return dense
    return np.hstack((dense, pooled))


def chi_square(reference: FeatureSketch, window: FeatureSketch) -> TestResult:
    """Chi-square test of homogeneity on the category counts; score is Cramer's V."""
    table = _contingency(reference, window)
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or rows.min() == 0:
        return TestResult("chi_square", 0.0, 1.0)
    table = _pool_sparse(table)
    if table.shape[1] < 2:
        return TestResult("chi_square", 0.0, 1.0)
    total = rows.sum()
    expected = np.outer(rows, table.sum(axis=0)) / total
    statistic = float(np.sum((table - expected) ** 2 / expected))
    p = float(chi2.sf(statistic, table.shape[1] - 1))
    v = math.sqrt(min(statistic / total, 1.0))  # min(rows - 1, columns - 1) = 1 for two rows
    return TestResult("chi_square", _finite(v), _finite(min(max(p, 0.0), 1.0), default=1.0))
