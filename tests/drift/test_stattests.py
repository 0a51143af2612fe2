"""The per-feature drift tests: each agrees with scipy (or the textbook formula) on data the
sketch holds exactly, stays within the sketch's rank error when it does not, and answers
degenerate input with "no evidence" instead of an exception or NaN."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, kstwo, wasserstein_distance

from drift import stattests
from drift.sketch import FeatureSketch, InputSketch
from drift.stattests import (
    JS_BINS,
    KS_EXACT_MAX_N,
    PSI_BINS,
    PSI_FLOOR,
    TestResult,
    chi_square,
    jensen_shannon,
    ks,
    ks_p_value,
    numeric_tests,
    psi,
    wasserstein,
)


def _feature(values, datatype: str = "FP64") -> FeatureSketch:
    return InputSketch.from_array(np.asarray(values), datatype).features[0]


def _counts(counts: dict[str, int], other: int = 0) -> FeatureSketch:
    feature = FeatureSketch(categorical=True)
    feature.add_categories(counts.items())
    feature.other = other
    feature.count = sum(counts.values()) + other
    return feature


def _bins(reference: np.ndarray, window: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference-quantile bin proportions computed straight from raw values (no sketch)."""
    ref = np.sort(reference)
    ranks = np.arange(1, bins) / bins
    edges = ref[np.ceil(ranks * ref.size).astype(int) - 1]  # smallest value whose rank reaches q
    ref_p = np.diff(np.concatenate(([0], np.searchsorted(ref, edges, side="right"), [ref.size]))) / ref.size
    win = np.sort(window)
    win_p = np.diff(np.concatenate(([0], np.searchsorted(win, edges, side="right"), [win.size]))) / win.size
    return ref_p, win_p


rng = np.random.default_rng(20240601)
REFERENCE = np.round(rng.normal(0, 1, 900), 2)  # ties on purpose; under k values: sketch is exact
SHIFTED = np.round(rng.normal(0.1, 1.1, 700), 2)


class TestSortedView:
    @pytest.mark.parametrize("n", [1, 2, 999, 1000, 1001, 20_000, 300_000])
    def test_ranks_and_quantiles_match_the_library(self, n):
        values = np.random.default_rng(n).normal(size=n)
        values[: n // 3] = np.round(values[: n // 3], 1)
        feature = _feature(values)
        sample = stattests._sample(feature)
        points = np.unique(np.concatenate((sample.items, np.linspace(-5, 5, 101))))
        ranks = np.concatenate((np.linspace(0, 1, 201), [1e-9, 1 - 1e-9]))
        assert sample.n == n
        assert np.array_equal(sample.cdf(points), np.array(feature.kll.get_cdf(points.tolist(), inclusive=True))[:-1])
        assert np.array_equal(sample.quantiles(ranks), feature.kll.get_quantiles(ranks.tolist(), inclusive=True))

    @pytest.mark.parametrize("n", [1, 5, 1000, 50_000])
    def test_parsing_the_serialized_sketch_reads_what_iteration_reads(self, n):
        kll = _feature(np.random.default_rng(n).normal(size=n)).kll
        parsed, iterated = stattests._retained(kll), stattests._iterated(kll)
        assert parsed is not None
        assert sorted(zip(*map(np.ndarray.tolist, parsed))) == sorted(zip(*map(np.ndarray.tolist, iterated)))


    def test_falls_back_to_iteration_when_the_layout_does_not_add_up(self, monkeypatch):
        reference, window = _feature(np.random.default_rng(8).normal(size=50_000)), _feature(SHIFTED)
        parsed = numeric_tests(reference, window)
        monkeypatch.setattr(stattests, "_retained", lambda kll: None)
        assert numeric_tests(reference, window) == parsed


class TestKolmogorovSmirnov:
    def test_equals_scipy_on_exactly_sketched_data(self):
        result = ks(_feature(REFERENCE), _feature(SHIFTED))
        expected = ks_2samp(REFERENCE, SHIFTED, method="asymp")
        assert result.test == "ks" and result.threshold is None
        assert result.score == pytest.approx(expected.statistic, abs=1e-12)
        assert result.p_value == pytest.approx(expected.pvalue, rel=0.01)

    def test_small_samples_use_kstwo_exactly_as_scipy_does(self):
        ref, win = REFERENCE[:200], SHIFTED[:150]
        assert round(200 * 150 / 350) <= KS_EXACT_MAX_N
        result = ks(_feature(ref), _feature(win))
        assert result.p_value == pytest.approx(ks_2samp(ref, win, method="asymp").pvalue, rel=1e-9)

    @pytest.mark.parametrize("n", [KS_EXACT_MAX_N + 1, 1000, 5000, 100_000])
    def test_large_sample_p_values_stay_close_to_kstwo(self, n):
        for p in (0.9, 0.5, 0.1, 0.05, 0.01, 1e-3, 1e-4):
            d = kstwo.isf(p, n)
            tolerance = 0.007 if p >= 0.01 else 0.03
            assert ks_p_value(d, n * 2, n * 2) == pytest.approx(p, rel=tolerance)

    def test_stays_within_the_sketch_rank_error_in_estimation_mode(self):
        gen = np.random.default_rng(7)
        ref, win = gen.normal(size=200_000), gen.normal(0.02, 1, 50_000)
        reference, window = _feature(ref), _feature(win)
        assert reference.kll.is_estimation_mode() and window.kll.is_estimation_mode()
        bound = 2 * reference.kll.normalized_rank_error(False)
        assert abs(ks(reference, window).score - ks_2samp(ref, win).statistic) <= bound

    def test_is_symmetric_in_its_statistic(self):
        a, b = _feature(REFERENCE), _feature(SHIFTED)
        assert ks(a, b).score == pytest.approx(ks(b, a).score, abs=1e-12)


class TestPopulationStabilityIndex:
    def test_equals_the_formula_over_reference_deciles(self):
        ref_p, win_p = (np.maximum(p, PSI_FLOOR) for p in _bins(REFERENCE, SHIFTED, PSI_BINS))
        result = psi(_feature(REFERENCE), _feature(SHIFTED))
        assert result.score == pytest.approx(np.sum((win_p - ref_p) * np.log(win_p / ref_p)), rel=1e-9)
        assert result.p_value is None and result.threshold == 0.2

    def test_is_zero_for_the_same_distribution_and_large_for_a_moved_one(self):
        assert psi(_feature(REFERENCE), _feature(REFERENCE)).score == pytest.approx(0.0, abs=1e-12)
        assert psi(_feature(REFERENCE), _feature(REFERENCE + 2.0)).score > 1.0

    def test_an_empty_bin_costs_a_large_but_finite_amount(self):
        result = psi(_feature(np.arange(1000.0)), _feature(np.full(100, 5000.0)))
        assert math.isfinite(result.score) and result.score > 5


class TestJensenShannon:
    def test_equals_scipy_over_reference_quantile_bins(self):
        ref_p, win_p = _bins(REFERENCE, SHIFTED, JS_BINS)
        result = jensen_shannon(_feature(REFERENCE), _feature(SHIFTED))
        assert result.score == pytest.approx(jensenshannon(ref_p, win_p, base=2), rel=1e-9)
        assert result.test == "js" and result.threshold == stattests.JS_THRESHOLD

    def test_is_zero_for_the_same_distribution(self):
        assert jensen_shannon(_feature(REFERENCE), _feature(REFERENCE)).score == pytest.approx(0.0, abs=1e-7)

    def test_a_window_beyond_the_reference_lands_in_the_open_top_bin(self):
        score = jensen_shannon(_feature(REFERENCE), _feature(REFERENCE + 100)).score
        top = np.eye(JS_BINS)[-1]
        assert score == pytest.approx(jensenshannon(np.full(JS_BINS, 1 / JS_BINS), top, base=2), abs=0.01) and score < 1


class TestWasserstein:
    def test_equals_scipy_in_reference_standard_deviations(self):
        result = wasserstein(_feature(REFERENCE), _feature(SHIFTED))
        expected = wasserstein_distance(REFERENCE, SHIFTED) / np.std(REFERENCE, ddof=1)
        assert result.score == pytest.approx(expected, rel=1e-9)

    def test_equals_scipy_on_the_weighted_items_of_estimating_sketches(self):
        gen = np.random.default_rng(3)
        reference, window = _feature(gen.normal(5, 2, 100_000)), _feature(gen.normal(5.5, 2, 30_000))
        r, w = stattests._iterated(reference.kll), stattests._iterated(window.kll)
        expected = wasserstein_distance(r[0], w[0], r[1], w[1]) / math.sqrt(reference.variance)
        assert wasserstein(reference, window).score == pytest.approx(expected, rel=1e-9)

    def test_a_mean_shift_reads_in_standard_deviations_whatever_the_unit(self):
        gen = np.random.default_rng(4)
        base = gen.normal(size=900)
        for scale in (1e-6, 1.0, 1e6):
            score = wasserstein(_feature(1000 + base * scale), _feature(1000 + (base + 0.5) * scale)).score
            assert score == pytest.approx(0.5 / np.std(base, ddof=1), rel=1e-6)

    def test_values_spanning_the_whole_float_range_stay_finite(self):
        huge = np.array([-1.7e308, 1.7e308, 0.0])
        assert math.isfinite(wasserstein(_feature(huge), _feature(huge[::-1] * 0.5)).score)


class TestNumericTestsTogether:
    def test_give_the_same_results_as_each_test_alone(self):
        reference, window = _feature(REFERENCE), _feature(SHIFTED)
        together = numeric_tests(reference, window, psi_threshold=0.3, js_threshold=0.2, wasserstein_threshold=0.4)
        alone = (ks(reference, window), psi(reference, window, 0.3), jensen_shannon(reference, window, 0.2),
                 wasserstein(reference, window, 0.4))
        assert [r.test for r in together] == ["ks", "psi", "js", "wasserstein"]
        for a, b in zip(together, alone):
            assert a.test == b.test and a.threshold == b.threshold and a.p_value == b.p_value
            assert a.score == pytest.approx(b.score, rel=1e-12, abs=1e-15)


class TestChiSquare:
    def test_equals_scipy_when_every_expected_count_is_at_least_five(self):
        ref, win = {"a": 400, "b": 300, "c": 300}, {"a": 60, "b": 25, "c": 15}
        result = chi_square(_counts(ref), _counts(win))
        expected = chi2_contingency(np.array([list(ref.values()), list(win.values())]), correction=False)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
        assert result.score == pytest.approx(math.sqrt(expected.statistic / 1100), rel=1e-9)  # Cramer's V

    def test_pools_rare_categories_so_the_approximation_holds(self):
        ref = {"a": 500, "b": 400, "c": 30, "d": 25, "e": 45}
        win = {"a": 45, "b": 40, "c": 5, "d": 5, "f": 1, "e": 4}
        result = chi_square(_counts(ref), _counts(win))
        # c, d, e, f each expect < 5 window rows: pooled into one column, which expects 10.5.
        table = np.array([[500, 400, 30 + 25 + 45], [45, 40, 5 + 5 + 1 + 4]])
        expected = chi2_contingency(table, correction=False)
        assert np.all(expected.expected_freq >= 5)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)

    def test_a_pool_still_too_small_joins_the_smallest_category(self):
        result = chi_square(_counts({"a": 900, "b": 95, "c": 5}), _counts({"a": 90, "b": 9, "c": 1}))
        expected = chi2_contingency(np.array([[900, 100], [90, 10]]), correction=False)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)

    def test_other_counts_as_a_category_of_its_own(self):
        plain = chi_square(_counts({"a": 500, "b": 500}), _counts({"a": 50, "b": 50}))
        with_other = chi_square(_counts({"a": 500, "b": 500}), _counts({"a": 50, "b": 50}, other=100))
        assert plain.p_value == pytest.approx(1.0) and with_other.p_value < 1e-6

    def test_a_moved_distribution_is_caught(self):
        result = chi_square(_counts({"x": 5000, "y": 5000}), _counts({"x": 700, "y": 300}))
        assert result.p_value < 1e-20 and 0 < result.score <= 1


DEGENERATE = {
    "empty reference": (FeatureSketch(), _feature(REFERENCE)),
    "empty window": (_feature(REFERENCE), FeatureSketch()),
    "both empty": (FeatureSketch(), FeatureSketch()),
    "same constant": (_feature(np.full(500, 3.0)), _feature(np.full(80, 3.0))),
    "one value each": (_feature([1.0]), _feature([1.0])),
}


class TestDegenerateInput:
    @pytest.mark.parametrize("case", list(DEGENERATE))
    def test_gives_no_evidence_of_drift_and_plain_finite_numbers(self, case):
        reference, window = DEGENERATE[case]
        for result in numeric_tests(reference, window):
            assert isinstance(result.score, float) and result.score == pytest.approx(0.0, abs=1e-12)
            assert result.p_value in (None, 1.0)

    def test_different_constants_are_a_full_shift(self):
        results = {r.test: r for r in numeric_tests(_feature(np.full(500, 3.0)), _feature(np.full(500, 4.0)))}
        assert results["ks"].score == 1.0 and results["ks"].p_value < 1e-100
        assert results["psi"].score > 1 and results["js"].score == pytest.approx(1.0)
        assert results["wasserstein"].score == pytest.approx(1.0)  # no spread anywhere: in the feature's own unit

    def test_a_constant_reference_is_scaled_by_the_window_spread(self):
        window = np.random.default_rng(5).normal(3.0, 2.0, 500)
        score = wasserstein(_feature(np.full(500, 3.0)), _feature(window)).score
        assert score == pytest.approx(wasserstein_distance(np.full(500, 3.0), window) / np.std(window, ddof=1))

    @pytest.mark.parametrize("reference, window", [
        ({}, {}), ({"a": 10}, {"a": 5}), ({"a": 100}, {}), ({}, {"a": 3}), ({"a": 1000, "b": 1}, {"a": 10, "b": 0}),
    ])
    def test_chi_square_without_two_usable_categories_gives_p_one(self, reference, window):
        assert chi_square(_counts(reference), _counts(window)) == TestResult("chi_square", 0.0, 1.0)


def test_results_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ks(_feature(REFERENCE), _feature(SHIFTED)).score = 0.0  # type: ignore[misc]
