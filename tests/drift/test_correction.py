"""Multiple-testing correction: Bonferroni and Benjamini-Hochberg adjust as scipy does,
reject exactly what their definitions reject, and refuse malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from drift.correction import CORRECTIONS, benjamini_hochberg, bonferroni, correct

P_VALUES = [0.01, 0.04, 0.03, 0.2, 0.0, 1.0, 0.04, 0.005, 0.6, 0.049]


def _random_p_values(seed: int, size: int) -> np.ndarray:
    gen = np.random.default_rng(seed)
    p = gen.uniform(size=size) ** 3  # many small ones
    p[: size // 10] = np.round(p[: size // 10], 2)  # ties
    return p


class TestBonferroni:
    def test_multiplies_by_the_number_of_tests_capped_at_one(self):
        rejected, adjusted = bonferroni(P_VALUES, 0.05)
        assert adjusted == pytest.approx(np.minimum(np.array(P_VALUES) * 10, 1.0).tolist())
        assert rejected == [p * 10 <= 0.05 for p in P_VALUES]

    @pytest.mark.parametrize("seed", range(5))
    def test_matches_scipy(self, seed):
        p = _random_p_values(seed, 200)
        assert bonferroni(p, 0.05)[1] == pytest.approx(np.minimum(p * 200, 1.0).tolist())


class TestBenjaminiHochberg:
    @pytest.mark.parametrize("seed", range(10))
    def test_adjusts_as_scipy_false_discovery_control(self, seed):
        p = _random_p_values(seed, 1 + seed * 37)
        assert benjamini_hochberg(p, 0.05)[1] == pytest.approx(false_discovery_control(p, method="bh").tolist(), rel=1e-12)

    @pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
    def test_rejects_everything_up_to_the_largest_p_below_its_step(self, alpha):
        p = np.array(P_VALUES)
        ranked = np.sort(p)
        below = np.nonzero(ranked <= alpha * np.arange(1, p.size + 1) / p.size)[0]
        cutoff = ranked[below[-1]] if below.size else -1.0
        assert benjamini_hochberg(p, alpha)[0] == (p <= cutoff).tolist()

    def test_rejects_at_least_what_bonferroni_rejects(self):
        p = _random_p_values(11, 300)
        bh, bonf = benjamini_hochberg(p, 0.05)[0], bonferroni(p, 0.05)[0]
        assert all(b for b, f in zip(bh, bonf) if f) and sum(bh) > sum(bonf)


class TestCorrect:
    @pytest.mark.parametrize("method, function", [("bonferroni", bonferroni), ("bh", benjamini_hochberg)])
    def test_dispatches_on_the_method(self, method, function):
        assert correct(method, P_VALUES, 0.05) == function(P_VALUES, 0.05)

    def test_none_tests_each_p_value_at_alpha(self):
        assert correct("none", P_VALUES, 0.04) == ([p <= 0.04 for p in P_VALUES], P_VALUES)

    @pytest.mark.parametrize("method", CORRECTIONS)
    def test_returns_plain_lists_in_input_order(self, method):
        rejected, adjusted = correct(method, np.array(P_VALUES), 0.05)
        assert len(rejected) == len(adjusted) == len(P_VALUES)
        assert all(type(r) is bool for r in rejected) and all(type(a) is float for a in adjusted)
        assert adjusted[P_VALUES.index(0.0)] == 0.0 and adjusted[P_VALUES.index(1.0)] == 1.0

    @pytest.mark.parametrize("method", CORRECTIONS)
    def test_no_p_values_reject_nothing(self, method):
        assert correct(method, [], 0.05) == ([], [])

    def test_an_unknown_method_names_the_choices(self):
        with pytest.raises(ValueError, match="bonferroni, bh, none"):
            correct("holm", P_VALUES, 0.05)

    @pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan"), True, "0.05"])
    def test_alpha_must_lie_strictly_between_zero_and_one(self, alpha):
        with pytest.raises(ValueError, match="alpha"):
            correct("bh", P_VALUES, alpha)

    @pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf")])
    def test_p_values_must_be_probabilities(self, bad):
        with pytest.raises(ValueError, match="p-values"):
            correct("bonferroni", [0.5, bad], 0.05)
