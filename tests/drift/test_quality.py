"""Statistical quality of the drift tests on seeded synthetic traffic, summarized the way the
sidecar summarizes it (``InputSketch.from_array``): false alarms under no drift stay at
alpha, power matches scipy's KS on the raw rows, chi-square catches a few points of
category shift, and correction keeps a 50-feature model's false alerts at alpha.

False-alarm counts are checked against the two-sided 99.9% binomial interval around alpha:
a correct test fails it one run in a thousand, a miscalibrated one almost always.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, ks_2samp

from drift.correction import correct
from drift.evaluate import TestPolicy, evaluate
from drift.sketch import SKETCH_K, FeatureSketch, InputSketch
from drift.stattests import chi_square, ks

ALPHA = 0.05
REFERENCE_ROWS = 20_000
WINDOW_ROWS = 1_000


def _interval(trials: int, p: float = ALPHA) -> tuple[int, int]:
    low, high = binom.interval(0.999, trials, p)
    return int(low), int(high)


def _columns(matrix: np.ndarray, datatype: str) -> list[FeatureSketch]:
    """One sketch per column: a [rows, windows] matrix is that many windows, built at once
    (with the default sketch size: as many columns would otherwise count as a wide input)."""
    return InputSketch.from_array(matrix, datatype, SKETCH_K).features


def _ks_rejects(reference: FeatureSketch, windows: list[FeatureSketch]) -> np.ndarray:
    return np.array([ks(reference, w).p_value <= ALPHA for w in windows])


@pytest.fixture(scope="module")
def normal_reference() -> tuple[np.ndarray, FeatureSketch]:
    rows = np.random.default_rng(1).normal(size=REFERENCE_ROWS)
    return rows, _columns(rows, "FP64")[0]


def test_ks_false_alarms_stay_at_alpha_without_drift(normal_reference):
    rows, reference = normal_reference
    raw = np.random.default_rng(2).normal(size=(WINDOW_ROWS, 600))
    alarms = int(_ks_rejects(reference, _columns(raw, "FP64")).sum())
    scipy = sum(ks_2samp(rows, raw[:, j]).pvalue <= ALPHA for j in range(raw.shape[1]))
    low, high = _interval(raw.shape[1])
    print(f"\nKS false alarms: {alarms}/{raw.shape[1]} = {alarms / raw.shape[1]:.3f} "
          f"(scipy ks_2samp on the raw rows: {scipy}; 99.9% interval {low}-{high})")
    assert low <= alarms <= high


@pytest.mark.parametrize("shift, windows", [(0.25, 200), (0.06, 400)])
def test_ks_power_matches_scipy_on_the_raw_rows(normal_reference, shift, windows):
    rows, reference = normal_reference
    raw = np.random.default_rng(3).normal(shift, 1.0, size=(WINDOW_ROWS, windows))
    ours = _ks_rejects(reference, _columns(raw, "FP64")).mean()
    scipy = np.mean([ks_2samp(rows, raw[:, j]).pvalue <= ALPHA for j in range(windows)])
    print(f"\nKS power at a {shift}-sigma shift: ours {ours:.3f}, scipy ks_2samp {scipy:.3f}")
    assert abs(ours - scipy) <= 0.05
    if shift >= 0.25:
        assert ours >= 0.95
    else:
        assert 0.2 <= ours <= 0.8  # mid-range power, where a sketch error would show


CATEGORIES = np.array([0.40, 0.30, 0.20, 0.10])
MOVED = np.array([0.35, 0.30, 0.20, 0.15])  # five points from the first category to the last


def _categorical(gen: np.random.Generator, p: np.ndarray, shape) -> np.ndarray:
    return gen.choice(p.size, size=shape, p=p).astype(np.int64)


def test_chi_square_catches_a_few_points_of_category_shift_and_not_noise():
    gen = np.random.default_rng(4)
    reference = _columns(_categorical(gen, CATEGORIES, (REFERENCE_ROWS, 1)), "INT64")[0]
    null = _columns(_categorical(gen, CATEGORIES, (WINDOW_ROWS, 500)), "INT64")
    moved = _columns(_categorical(gen, MOVED, (WINDOW_ROWS, 200)), "INT64")
    alarms = sum(chi_square(reference, w).p_value <= ALPHA for w in null)
    power = np.mean([chi_square(reference, w).p_value <= ALPHA for w in moved])
    low, high = _interval(len(null))
    print(f"\nchi-square false alarms {alarms}/{len(null)} (interval {low}-{high}), power {power:.3f}")
    assert low <= alarms <= high
    assert power >= 0.95


def test_correction_keeps_a_fifty_feature_models_false_alerts_at_alpha():
    gen = np.random.default_rng(5)
    features, windows = 50, 500
    references = {"x": InputSketch.from_array(gen.normal(size=(REFERENCE_ROWS, features)), "FP64")}
    alerts = {"bh": 0, "bonferroni": 0, "none": 0}
    for _ in range(windows):
        window = {"x": InputSketch.from_array(gen.normal(size=(WINDOW_ROWS, features)), "FP64")}
        result = evaluate("m", "v", references, window, TestPolicy(correction="bh"))
        assert len(result.features) == features
        alerts["bh"] += result.drifted
        p_values = [f.p_value for f in result.features]
        alerts["bonferroni"] += any(correct("bonferroni", p_values, ALPHA)[0])
        alerts["none"] += any(correct("none", p_values, ALPHA)[0])
    _, high = _interval(windows)
    print(f"\nwindows with any feature flagged, of {windows}: {alerts} (alpha's 99.9% upper bound {high})")
    assert alerts["bh"] <= high and alerts["bonferroni"] <= high
    assert alerts["none"] > windows / 2
