"""Multiple-testing correction across the p-values of one model version's window.

A model with 100 features tested at alpha = 0.05 would flag some feature in almost every
window of unchanged traffic; correcting across all of a version's p-values at once keeps the
chance of a false alert per window (Bonferroni: any false flag; Benjamini-Hochberg: the
expected share of false flags among the flagged) at alpha.

Every function returns ``(rejected, adjusted)`` as plain lists in the input's order; a null
hypothesis is rejected when its adjusted p-value is <= alpha.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CORRECTIONS", "benjamini_hochberg", "bonferroni", "correct", "no_correction"]

CORRECTIONS = ("bonferroni", "bh", "none")


def _check(p_values: Sequence[float], alpha: float) -> np.ndarray:
    if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < 1):
        raise ValueError(f"alpha must be a number strictly between 0 and 1, not {alpha!r}")
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if p.size and not (np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1):
        raise ValueError("p-values must be finite and within [0, 1]")
    return p


def _result(adjusted: np.ndarray, alpha: float) -> tuple[list[bool], list[float]]:
    return (adjusted <= alpha).tolist(), adjusted.tolist()


def no_correction(p_values: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Each test at alpha on its own (the p-values unchanged)."""
    return _result(_check(p_values, alpha), alpha)


def bonferroni(p_values: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Family-wise error <= alpha under any dependence: p * m, capped at 1."""
    p = _check(p_values, alpha)
    return _result(np.minimum(p * p.size, 1.0), alpha)


def benjamini_hochberg(p_values: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """False discovery rate <= alpha (independent or positively dependent tests): the step-up
    procedure, adjusted p_(i) = min over j >= i of p_(j) * m / j, capped at 1."""
    p = _check(p_values, alpha)
    m = p.size
    if m == 0:
        return [], []
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return _result(adjusted, alpha)


_METHODS = {"bonferroni": bonferroni, "bh": benjamini_hochberg, "none": no_correction}


def correct(method: str, p_values: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Dispatch on ``method``: "bonferroni", "bh" (Benjamini-Hochberg) or "none"."""
    try:
        function = _METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, not {method!r}") from None
    return function(p_values, alpha)

