"""One window of one model version against its reference: every feature tested, one verdict.

Numeric features run all four numeric tests (their scores are all reported) and the policy's
``numeric_test`` decides; categorical features run chi-square. The p-value decisions of the
whole model version (all inputs, all features) are corrected together, because that is the
family one alert stands for; distance decisions compare the score with their threshold. The
model version drifted when any feature did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .correction import CORRECTIONS, correct
from .errors import ConfigError
from .sketch import FeatureSketch, InputSketch
from .stattests import JS_THRESHOLD, PSI_THRESHOLD, WASSERSTEIN_THRESHOLD, TestResult, chi_square, numeric_tests

__all__ = ["NUMERIC_TESTS", "Evaluation", "FeatureResult", "TestPolicy", "evaluate"]

NUMERIC_TESTS = ("ks", "psi", "js", "wasserstein")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TestPolicy:
    """How windows are judged; validated on construction (``ConfigError`` names the field)."""

    __test__ = False  # not a pytest test class, despite the name

    alpha: float = 0.05
    correction: str = "bh"
    numeric_test: str = "ks"
    psi_threshold: float = PSI_THRESHOLD
    js_threshold: float = JS_THRESHOLD
    wasserstein_threshold: float = WASSERSTEIN_THRESHOLD
    min_rows: int = 100

    def __post_init__(self) -> None:
        if not (_number(self.alpha) and 0 < self.alpha < 1):
            raise ConfigError(f"alpha: expected a number strictly between 0 and 1, got {self.alpha!r}")
        if self.correction not in CORRECTIONS:
            raise ConfigError(f"correction: expected one of {', '.join(CORRECTIONS)}, got {self.correction!r}")
        if self.numeric_test not in NUMERIC_TESTS:
            raise ConfigError(f"numeric_test: expected one of {', '.join(NUMERIC_TESTS)}, got {self.numeric_test!r}")
        for name in ("psi_threshold", "js_threshold", "wasserstein_threshold"):
            value = getattr(self, name)
            if not (_number(value) and value > 0):
                raise ConfigError(f"{name}: expected a positive number, got {value!r}")
        if not 0 < self.js_threshold < 1:
            raise ConfigError(f"js_threshold: expected a number strictly between 0 and 1 "
                              f"(the Jensen-Shannon distance is at most 1), got {self.js_threshold!r}")
        if not (isinstance(self.min_rows, int) and not isinstance(self.min_rows, bool) and self.min_rows >= 1):
            raise ConfigError(f"min_rows: expected a whole number >= 1, got {self.min_rows!r}")


def _json(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class FeatureResult:
    """One feature's tests and verdict; ``decision`` names the test that decided it."""

    input: str
    index: int
    name: str
    kind: str  # "numeric" | "categorical"
    results: tuple[TestResult, ...]
    decision: str
    p_value: float | None
    adjusted_p_value: float | None
    drifted: bool

    @property
    def deciding(self) -> TestResult:
        return next(r for r in self.results if r.test == self.decision)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input, "index": self.index, "name": self.name, "kind": self.kind,
            "decision": self.decision, "score": _json(self.deciding.score),
            "p_value": _json(self.p_value), "adjusted_p_value": _json(self.adjusted_p_value),
            "drifted": self.drifted,
            "tests": {r.test: {"score": _json(r.score), "p_value": _json(r.p_value), "threshold": _json(r.threshold)}
                      for r in self.results},
        }


@dataclass(frozen=True)
class Evaluation:
    """A model version's window verdict. ``evaluated`` is False (with ``reason``) when the
    window could not be tested: no input with a reference, or too few rows."""

    model: str
    version: str
    rows: int
    evaluated: bool
    reason: str
    features: tuple[FeatureResult, ...]
    drifted: bool

    @property
    def drifted_features(self) -> int:
        return sum(f.drifted for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain types only, None where a number is missing or not finite."""
        return {
            "model": self.model, "version": self.version, "rows": self.rows, "evaluated": self.evaluated,
            "reason": self.reason, "drifted": self.drifted, "drifted_features": self.drifted_features,
            "features": [f.to_dict() for f in self.features],
        }


def _has_values(feature: FeatureSketch) -> bool:
    return bool(feature.count or feature.missing or feature.categories or feature.other)


def _tests(reference: InputSketch, ref: FeatureSketch, win: FeatureSketch,
           policy: TestPolicy) -> tuple[str, tuple[TestResult, ...]] | None:
    """The feature's kind and test results; None when the reference gives nothing to compare.
    Counts decide only when they are complete (nothing beyond the category cap) or the values
    have no order (BYTES); otherwise the quantile sketch does."""
    if ref.categorical and (ref.other == 0 or reference.datatype == "BYTES"):
        if not (ref.categories or ref.other):
            return None
        return "categorical", (chi_square(ref, win),)
    if ref.kll.is_empty():
        return None
    return "numeric", numeric_tests(ref, win, psi_threshold=policy.psi_threshold, js_threshold=policy.js_threshold,
                                    wasserstein_threshold=policy.wasserstein_threshold)


def _skipped(model: str, version: str, rows: int, reason: str) -> Evaluation:
    return Evaluation(model, version, rows, False, reason, (), False)


def evaluate(model: str, version: str, references: Mapping[str, InputSketch], windows: Mapping[str, InputSketch],
             policy: TestPolicy = TestPolicy()) -> Evaluation:
    """Test every feature of every window input that has a reference (same input name).

    An input whose window holds fewer than ``policy.min_rows`` rows is not tested; when no
    input is tested the evaluation says why instead of guessing a verdict.
    """
    rows = sum(w.rows for w in windows.values())
    paired = [(name, references[name], windows[name]) for name in sorted(windows) if name in references]
    if not paired:
        missing = ", ".join(sorted(windows)) or "none"
        return _skipped(model, version, rows, f"no reference for the window's inputs ({missing})")
    ready = [(name, ref, win) for name, ref, win in paired if win.rows >= policy.min_rows]
    if not ready:
        most = max(win.rows for _, _, win in paired)
        return _skipped(model, version, rows, f"window has {most} rows per input, fewer than min_rows={policy.min_rows}")

    tested: list[tuple[str, int, str, str, tuple[TestResult, ...]]] = []
    for name, reference, window in ready:
        for index, (ref, win) in enumerate(zip(reference.features, window.features)):
            if not _has_values(win):
                continue
            outcome = _tests(reference, ref, win, policy)
            if outcome is not None:
                tested.append((name, index, reference.feature_name(index), *outcome))

    def deciding(kind: str) -> str:
        return "chi_square" if kind == "categorical" else policy.numeric_test

    # One correction over every p-value decision of the model version.
    p_values = [next(r for r in results if r.test == deciding(kind)).p_value for *_, kind, results in tested]
    p_decided = [p for p in p_values if p is not None]
    rejected, adjusted = correct(policy.correction, p_decided, policy.alpha)
    corrected = iter(zip(rejected, adjusted))

    features = []
    for (name, index, label, kind, results), p in zip(tested, p_values):
        decision = deciding(kind)
        if p is not None:
            drifted, adjusted_p = next(corrected)
        else:
            result = next(r for r in results if r.test == decision)
            drifted, adjusted_p = result.score > result.threshold, None
        features.append(FeatureResult(name, index, label, kind, results, decision, p, adjusted_p, bool(drifted)))
    return Evaluation(model, version, rows, True, "", tuple(features), any(f.drifted for f in features))
