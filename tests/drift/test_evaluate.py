"""Evaluating a window: every feature gets the tests of its kind, the policy's test decides,
p-values are corrected across the whole model version, and the result serializes to JSON
without NaN."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest

from drift.correction import correct
from drift.errors import ConfigError
from drift.evaluate import Evaluation, TestPolicy, evaluate
from drift.sketch import InputSketch

NUMERIC = ["ks", "psi", "js", "wasserstein"]


def _sketch(array, datatype: str = "FP64", names: list[str] | None = None) -> InputSketch:
    sketch = InputSketch.from_array(np.asarray(array), datatype)
    sketch.feature_names = list(names or [])
    return sketch


@pytest.fixture(scope="module")
def gen():
    return np.random.default_rng(99)


@pytest.fixture(scope="module")
def tabular(gen):
    """A reference of 5,000 rows of four features, and a window where only "income" moved."""
    reference = _sketch(gen.normal(size=(5000, 4)), names=["age", "income", "height", "weight"])
    rows = gen.normal(size=(1000, 4))
    rows[:, 1] += 0.5
    return {"x": reference}, {"x": _sketch(rows)}


class TestPolicyValidation:
    def test_defaults(self):
        policy = TestPolicy()
        assert (policy.alpha, policy.correction, policy.numeric_test, policy.min_rows) == (0.05, "bh", "ks", 100)
        assert (policy.psi_threshold, policy.js_threshold, policy.wasserstein_threshold) == (0.2, 0.1, 0.15)

    @pytest.mark.parametrize("field, value", [
        ("alpha", 0), ("alpha", 1), ("alpha", float("nan")), ("alpha", "0.05"), ("alpha", True),
        ("correction", "holm"), ("correction", None),
        ("numeric_test", "chi_square"), ("numeric_test", "KS"),
        ("psi_threshold", 0), ("psi_threshold", -1.0), ("psi_threshold", float("inf")),
        ("js_threshold", 1.0), ("js_threshold", 0), ("wasserstein_threshold", "big"),
        ("min_rows", 0), ("min_rows", 10.5), ("min_rows", True),
    ])
    def test_a_bad_value_names_the_field_and_the_expected_form(self, field, value):
        with pytest.raises(ConfigError, match=rf"^{field}: expected .*, got {re.escape(repr(value))}$"):
            TestPolicy(**{field: value})

    def test_is_frozen(self):
        with pytest.raises(dataclasses.FrozenInstanceError):
            TestPolicy().alpha = 0.1  # type: ignore[misc]


class TestNumericFeatures:
    def test_run_all_four_tests_and_the_moved_one_drifts(self, tabular):
        result = evaluate("m", "v1", *tabular)
        assert result.evaluated and result.reason == "" and result.rows == 1000
        assert [f.name for f in result.features] == ["age", "income", "height", "weight"]
        assert all(f.kind == "numeric" and [r.test for r in f.results] == NUMERIC for f in result.features)
        assert [f.drifted for f in result.features] == [False, True, False, False]
        assert result.drifted and result.drifted_features == 1

    def test_ks_decides_with_a_corrected_p_value(self, tabular):
        result = evaluate("m", "v1", *tabular)
        p_values = [f.p_value for f in result.features]
        assert all(f.decision == "ks" for f in result.features)
        assert p_values == [f.results[0].p_value for f in result.features]
        assert [f.adjusted_p_value for f in result.features] == correct("bh", p_values, 0.05)[1]

    @pytest.mark.parametrize("test, field", [("psi", "psi_threshold"), ("js", "js_threshold"),
                                             ("wasserstein", "wasserstein_threshold")])
    def test_a_distance_decides_by_its_threshold(self, tabular, test, field):
        result = evaluate("m", "v1", *tabular, TestPolicy(numeric_test=test))
        for f in result.features:
            score = f.deciding.score
            assert f.decision == test and f.p_value is None and f.adjusted_p_value is None
            assert f.drifted == (score > getattr(TestPolicy(), field))
        assert result.features[1].drifted
        strict = evaluate("m", "v1", *tabular, TestPolicy(numeric_test=test, **{field: 1e-9}))
        assert all(f.drifted for f in strict.features)

    def test_thresholds_reach_the_reported_results(self, tabular):
        result = evaluate("m", "v1", *tabular, TestPolicy(psi_threshold=0.3, js_threshold=0.2, wasserstein_threshold=0.4))
        assert [r.threshold for r in result.features[0].results] == [None, 0.3, 0.2, 0.4]

    def test_unnamed_features_are_named_by_index(self, gen):
        result = evaluate("m", "v", {"x": _sketch(gen.normal(size=(500, 2)))}, {"x": _sketch(gen.normal(size=(200, 2)))})
        assert [(f.index, f.name) for f in result.features] == [(0, "0"), (1, "1")]


class TestCategoricalFeatures:
    def test_integer_counts_run_chi_square(self, gen):
        reference = _sketch(gen.choice(4, size=(5000, 1), p=[0.4, 0.3, 0.2, 0.1]), "INT64")
        window = _sketch(gen.choice(4, size=(1000, 1), p=[0.25, 0.25, 0.25, 0.25]), "INT64")
        (feature,) = evaluate("m", "v", {"c": reference}, {"c": window}).features
        assert feature.kind == "categorical" and feature.decision == "chi_square"
        assert [r.test for r in feature.results] == ["chi_square"] and feature.drifted

    def test_bytes_run_chi_square(self, gen):
        words = np.array([b"red", b"green", b"blue"], dtype=object)
        reference = _sketch(words[gen.integers(0, 3, size=(3000, 1))], "BYTES")
        window = _sketch(words[gen.integers(0, 3, size=(300, 1))], "BYTES")
        (feature,) = evaluate("m", "v", {"c": reference}, {"c": window}).features
        assert feature.kind == "categorical" and not feature.drifted

    def test_integers_beyond_the_category_cap_are_numeric(self, gen):
        reference = _sketch(gen.integers(0, 100_000, size=(5000, 1)), "INT64")
        assert reference.features[0].other > 0
        window = _sketch(gen.integers(0, 100_000, size=(500, 1)), "INT64")
        (feature,) = evaluate("m", "v", {"c": reference}, {"c": window}).features
        assert feature.kind == "numeric" and feature.decision == "ks"

    def test_are_corrected_together_with_numeric_ones_across_inputs(self, gen, tabular):
        references, windows = dict(tabular[0]), dict(tabular[1])
        references["c"] = _sketch(gen.choice(3, size=(5000, 2)), "INT32")
        windows["c"] = _sketch(gen.choice(3, size=(1000, 2)), "INT32")
        for method in ("bonferroni", "bh", "none"):
            result = evaluate("m", "v", references, windows, TestPolicy(correction=method))
            assert [f.input for f in result.features] == ["c", "c", "x", "x", "x", "x"]
            p_values = [f.p_value for f in result.features]
            rejected, adjusted = correct(method, p_values, 0.05)
            assert [f.adjusted_p_value for f in result.features] == adjusted
            assert [f.drifted for f in result.features] == rejected
            assert result.rows == 2000


class TestWindowsNotEvaluated:
    def test_too_few_rows(self, gen, tabular):
        result = evaluate("m", "v", tabular[0], {"x": _sketch(gen.normal(size=(99, 4)))})
        assert not result.evaluated and not result.drifted and result.features == ()
        assert result.reason == "window has 99 rows per input, fewer than min_rows=100" and result.rows == 99

    def test_no_reference_for_any_input(self, gen):
        result = evaluate("m", "v", {"a": _sketch(gen.normal(size=(500, 1)))}, {"b": _sketch(gen.normal(size=(500, 1)))})
        assert not result.evaluated and "no reference" in result.reason and "b" in result.reason

    def test_inputs_without_a_reference_are_left_out(self, gen, tabular):
        windows = {**tabular[1], "extra": _sketch(gen.normal(size=(1000, 3)))}
        result = evaluate("m", "v", tabular[0], windows)
        assert {f.input for f in result.features} == {"x"} and result.rows == 2000

    def test_features_missing_from_either_side_are_left_out(self, gen):
        reference = _sketch(gen.normal(size=(1000, 3)))
        result = evaluate("m", "v", {"x": reference}, {"x": _sketch(gen.normal(size=(500, 5)))})
        assert [f.index for f in result.features] == [0, 1, 2]
        narrow = evaluate("m", "v", {"x": reference}, {"x": _sketch(gen.normal(size=(500, 2)))})
        assert [f.index for f in narrow.features] == [0, 1]


class TestDegenerateFeatures:
    def test_constant_and_missing_values_give_defined_results(self, gen):
        ref = gen.normal(size=(1000, 3))
        ref[:, 0] = 7.0
        win = gen.normal(size=(300, 3))
        win[:, 0] = 7.0
        win[:, 2] = np.nan  # every value missing in the window
        result = evaluate("m", "v", {"x": _sketch(ref)}, {"x": _sketch(win)})
        constant, _, missing = result.features
        assert not constant.drifted and constant.p_value == 1.0
        assert not missing.drifted and all(r.score == 0.0 for r in missing.results)
        json.dumps(result.to_dict(), allow_nan=False)

    def test_a_reference_without_values_is_not_tested(self, gen):
        ref = gen.normal(size=(1000, 2))
        ref[:, 1] = np.nan
        result = evaluate("m", "v", {"x": _sketch(ref)}, {"x": _sketch(gen.normal(size=(300, 2)))})
        assert [f.index for f in result.features] == [0]


class TestSerialization:
    def test_to_dict_is_plain_json_with_none_for_missing_numbers(self, tabular):
        body = evaluate("m", "v1", *tabular).to_dict()
        text = json.dumps(body, allow_nan=False)
        assert json.loads(text) == body
        assert (body["model"], body["version"], body["evaluated"], body["drifted"], body["drifted_features"]) == \
            ("m", "v1", True, True, 1)
        income = body["features"][1]
        assert income["name"] == "income" and income["decision"] == "ks" and income["drifted"] is True
        assert set(income["tests"]) == set(NUMERIC)
        assert income["tests"]["ks"]["threshold"] is None and income["tests"]["psi"]["p_value"] is None

    def test_non_finite_numbers_become_none(self):
        from drift.evaluate import FeatureResult
        from drift.stattests import TestResult

        feature = FeatureResult("x", 0, "0", "numeric", (TestResult("psi", math.inf, None, 0.2),), "psi", None, None, True)
        body = Evaluation("m", "v", 100, True, "", (feature,), True).to_dict()
        assert body["features"][0]["score"] is None and body["features"][0]["tests"]["psi"]["score"] is None
        json.dumps(body, allow_nan=False)
