"""Inline SVG charts for the drift report page: numbers in, self-contained SVG text out.

Each chart is one ``<svg>`` element with its own ``viewBox``, axis labels and legend, no
scripts, fonts or links, so it renders the same inline in the page, saved alone, or in a
mail. Every caller-provided string (feature and category names) is escaped here, once,
with ``html.escape`` (which is also valid XML). Coordinates are clamped to the viewBox.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import datasketches
import numpy as np

__all__ = [
    "REFERENCE_COLOR",
    "VERDICT_COLORS",
    "WINDOW_COLOR",
    "Bars",
    "Histogram",
    "StripPoint",
    "bars_of",
    "bars_svg",
    "histogram_of",
    "histogram_svg",
    "nice_ticks",
    "number",
    "strip_svg",
]

REFERENCE_COLOR = "#4c78a8"
WINDOW_COLOR = "#f58518"
VERDICT_COLORS = {"drift": "#d62728", "clean": "#2ca02c", "insufficient": "#9e9e9e", "no_reference": "#c7c7c7"}
_INK, _MUTED, _GRID = "#222", "#666", "#e6e6e6"
_W = 480  # feature charts: width of the viewBox (the page scales them to their column)
MAX_BINS = 40
TOP_CATEGORIES = 12


@dataclass(frozen=True)
class Histogram:
    """Densities over shared bins: ``edges`` has one more entry than each density list; a
    side is None when it has no values. ``outside``: each side's share beyond the axis."""

    edges: tuple[float, ...]
    reference: tuple[float, ...] | None
    window: tuple[float, ...] | None
    reference_label: str
    window_label: str
    outside: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or any(not b > a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError("edges: expected at least two strictly increasing bin edges")
        for side in (self.reference, self.window):
            if side is not None and len(side) != len(self.edges) - 1:
                raise ValueError(f"densities: expected {len(self.edges) - 1} values, got {len(side)}")


@dataclass(frozen=True)
class Bars:
    """Shares (0..1) per category for each side; a side is None when it has no values."""

    labels: tuple[str, ...]
    reference: tuple[float, ...] | None
    window: tuple[float, ...] | None
    reference_label: str
    window_label: str

    def __post_init__(self) -> None:
        for side in (self.reference, self.window):
            if side is not None and len(side) != len(self.labels):
                raise ValueError(f"shares: expected {len(self.labels)} values, got {len(side)}")


@dataclass(frozen=True)
class StripPoint:
    """One evaluation in the verdict history."""

    at: float
    verdict: str
    rows: int
    drifted: int
    features: int


def histogram_of(reference: bytes | None, window: bytes | None, labels: tuple[str, str]) -> Histogram:
    """Densities of two serialized KLL sketches over shared bins spanning both sides' 0.1% to
    99.9% quantiles (outliers would squash the bulk into a bin or two). The bin count follows
    Rice's rule for the smaller side (2 n^(1/3), 16 to ``MAX_BINS``): finer bins than the
    data supports only draw noise."""
    sides = [datasketches.kll_doubles_sketch.deserialize(b) if b else None for b in (reference, window)]
    present = [k for k in sides if k is not None and not k.is_empty()]
    if not present:
        return Histogram((0.0, 1.0), None, None, *labels)
    lo, hi = min(k.get_quantile(0.001) for k in present), max(k.get_quantile(0.999) for k in present)
    if hi <= lo:
        lo, hi = min(k.get_min_value() for k in present), max(k.get_max_value() for k in present)
    span = max(hi - lo, abs(hi + lo) * 1e-6, 1e-9)
    if hi - lo < span:  # constant (or nearly): centre a narrow axis on the value
        lo, hi = (lo + hi - span) / 2, (lo + hi + span) / 2
    lo, hi = lo - span * 0.03, hi + span * 0.03
    bins = int(min(MAX_BINS, max(16, 2 * min(k.n for k in present) ** (1 / 3))))
    edges = np.unique(np.linspace(lo, hi, bins + 1))
    widths = np.diff(edges)
    densities: list[tuple[float, ...] | None] = []
    outside = []
    for k in sides:
        if k is None or k.is_empty():
            densities.append(None)
            outside.append(0.0)
            continue
        pmf = np.asarray(k.get_pmf(edges.tolist()))
        densities.append(tuple((pmf[1:-1] / widths).tolist()))
        outside.append(float(pmf[0] + pmf[-1]))
    return Histogram(tuple(edges.tolist()), densities[0], densities[1], *labels, outside=(outside[0], outside[1]))


Counts = tuple[Sequence[tuple[str, int]], int]  # (category counts, values beyond the category cap)


def bars_of(reference: Counts | None, window: Counts | None, labels: tuple[str, str]) -> Bars:
    """Shares of the ``TOP_CATEGORIES`` categories largest on either side, the rest pooled
    as "other" (which also holds the values counted beyond the sketch's category cap)."""
    shares = []
    for side in (reference, window):
        total = sum(c for _, c in side[0]) + side[1] if side else 0
        shares.append({k: c / total for k, c in side[0]} if total else None)
    ref, win = shares
    order = sorted(set(ref or {}) | set(win or {}), key=lambda k: (-max((ref or {}).get(k, 0.0), (win or {}).get(k, 0.0)), k))
    top, rest = order[:TOP_CATEGORIES], len(order) - TOP_CATEGORIES
    names = list(top)
    columns = [None if s is None else [s.get(k, 0.0) for k in top] for s in shares]
    leftover = [0.0 if c is None else max(1.0 - sum(c), 0.0) for c in columns]
    if rest > 0 or max(leftover) > 5e-4:
        names.append(f"other ({rest} more)" if rest > 0 else "other")
        for c, extra in zip(columns, leftover):
            if c is not None:
                c.append(extra)
    return Bars(tuple(names), *(None if c is None else tuple(c) for c in columns), *labels)


def number(x: float) -> str:
    """Compact, locale-free number text for ticks and tables."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    text = f"{x:.3g}" if (abs(x) >= 1e5 or abs(x) < 1e-3) else f"{x:.4g}"
    return text.replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 x 10^k) within [lo, hi], about ``count`` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    magnitude = 10 ** math.floor(math.log10((hi - lo) / max(count - 1, 1)))

    def ticks_of(step: float) -> int:
        return math.floor(hi / step + 1e-9) - math.ceil(lo / step - 1e-9) + 1

    # The round step whose tick count is closest to ``count`` (the larger step on a tie).
    step = min((m * magnitude for m in (0.5, 1, 2, 2.5, 5, 10)), key=lambda st: (abs(ticks_of(st) - count), -st))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    for i in range(first, first + count * 3):
        value = i * step
        if value > hi + step * 1e-9:
            break
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
    return ticks


def _c(value: float, lo: float, hi: float) -> str:
    """A coordinate clamped into [lo, hi], one decimal."""
    return f"{min(max(value, lo), hi):.1f}"


def _legend(x: float, y: float, items: Sequence[tuple[str, str]]) -> str:
    parts = []
    for color, label in items:
        parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="10" rx="2" fill="{color}" '
                     f'fill-opacity="0.6" stroke="{color}"/>'
                     f'<text x="{x + 17:.1f}" y="{y:.1f}" font-size="12" fill="{_INK}">{escape(label)}</text>')
        x += 34 + 6.6 * len(label)
    return "".join(parts)


def _open(title: str, width: int, height: int, css_class: str, feature: str | None) -> str:
    data = f' data-feature="{escape(feature)}"' if feature is not None else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}"{data} viewBox="0 0 {width} {height}" '
            f'role="img" font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif">'
            f'<title>{escape(title)}</title>')


def histogram_svg(title: str, h: Histogram, feature: str | None = None) -> str:
    """Reference and window densities as overlaid step areas over one value axis."""
    width, height = _W, 250
    left, right, top, bottom = 56, _W - 14, 36, height - 46
    lo, hi = h.edges[0], h.edges[-1]
    peak = max([max(s) for s in (h.reference, h.window) if s] or [0.0]) or 1.0
    y_ticks = nice_ticks(0.0, peak * 1.08, 4)
    y_top = max(y_ticks[-1], peak) if y_ticks else peak

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    def sy(d: float) -> float:
        return bottom - d / y_top * (bottom - top)

    out = [_open(title, width, height, "chart feature-chart", feature)]
    for t in y_ticks:
        y = _c(sy(t), top, bottom)
        out.append(f'<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="{_GRID}"/>'
                   f'<text x="{left - 6}" y="{float(y) + 4:.1f}" font-size="11" fill="{_MUTED}" '
                   f'text-anchor="end">{number(t)}</text>')
    for t in nice_ticks(lo, hi, 6):
        x = _c(sx(t), left, right)
        out.append(f'<line x1="{x}" y1="{bottom}" x2="{x}" y2="{bottom + 4}" stroke="{_MUTED}"/>'
                   f'<text x="{x}" y="{bottom + 17}" font-size="11" fill="{_MUTED}" text-anchor="middle">{number(t)}</text>')
    for side, color, opacity, stroke in ((h.reference, REFERENCE_COLOR, 0.32, 1.2), (h.window, WINDOW_COLOR, 0.08, 2.2)):
        if not side:
            continue
        points = [f"M{_c(sx(lo), left, right)} {bottom}"]
        for i, d in enumerate(side):
            y = _c(sy(d), top, bottom)
            points.append(f"L{_c(sx(h.edges[i]), left, right)} {y}L{_c(sx(h.edges[i + 1]), left, right)} {y}")
        points.append(f"L{_c(sx(hi), left, right)} {bottom}Z")
        out.append(f'<path d="{"".join(points)}" fill="{color}" fill-opacity="{opacity}" stroke="{color}" '
                   f'stroke-width="{stroke}" stroke-linejoin="round"/>')
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{_MUTED}"/>'
               f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{_MUTED}"/>'
               f'<text x="{(left + right) / 2:.1f}" y="{height - 8}" font-size="12" fill="{_INK}" '
               f'text-anchor="middle">value</text>'
               f'<text transform="translate(14 {(top + bottom) / 2:.1f}) rotate(-90)" font-size="12" fill="{_INK}" '
               f'text-anchor="middle">density</text>')
    out.append(_legend(left, 18, [(REFERENCE_COLOR, h.reference_label), (WINDOW_COLOR, h.window_label)]))
    if max(h.outside) >= 0.01:
        out.append(f'<text x="{right}" y="{height - 8}" font-size="11" fill="{_MUTED}" text-anchor="end">'
                   f'beyond axis: ref {h.outside[0]:.1%}, window {h.outside[1]:.1%}</text>')
    out.append("</svg>")
    return "".join(out)


def _short(label: str, limit: int = 16) -> str:
    return label if len(label) <= limit else label[:limit - 1] + "\u2026"


def bars_svg(title: str, b: Bars, feature: str | None = None) -> str:
    """One row per category: the reference's share and the window's share as paired bars,
    each labelled with its percentage."""
    row, width = 30, _W
    left, right, top = 124, _W - 46, 36
    bottom = top + row * max(len(b.labels), 1)
    height = bottom + 44
    peak = max([max(s) for s in (b.reference, b.window) if s] or [0.0]) or 1.0
    ticks = nice_ticks(0.0, peak, 4)
    x_top = max(ticks[-1], peak) if ticks else peak

    def sx(share: float) -> float:
        return left + share / x_top * (right - left)

    out = [_open(title, width, height, "chart feature-chart", feature)]
    for t in ticks:
        x = _c(sx(t), left, right)
        out.append(f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="{_GRID}"/>'
                   f'<text x="{x}" y="{bottom + 16}" font-size="11" fill="{_MUTED}" text-anchor="middle">'
                   f'{number(t * 100)}%</text>')
    for i, label in enumerate(b.labels):
        y = top + i * row
        ref = b.reference[i] if b.reference else 0.0
        win = b.window[i] if b.window else 0.0
        tip = f"{label}: reference {ref:.1%}, window {win:.1%}"
        out.append(f'<g><title>{escape(tip)}</title>'
                   f'<text x="{left - 8}" y="{y + 19}" font-size="12" fill="{_INK}" text-anchor="end">'
                   f'{escape(_short(label))}</text>')
        for offset, share, color, present in ((4, ref, REFERENCE_COLOR, b.reference), (15, win, WINDOW_COLOR, b.window)):
            if present:
                end = float(_c(sx(share), left, right))
                out.append(f'<rect x="{left}" y="{y + offset}" width="{end - left:.1f}" height="10" fill="{color}" rx="1.5"/>'
                           f'<text x="{_c(end + 4, left, width - 2)}" y="{y + offset + 9}" font-size="10" '
                           f'fill="{_MUTED}">{share * 100:.1f}%</text>')
        out.append("</g>")
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="{_MUTED}"/>'
               f'<text x="{(left + right) / 2:.1f}" y="{height - 8}" font-size="12" fill="{_INK}" '
               f'text-anchor="middle">share of values</text>')
    out.append(_legend(left, 18, [(REFERENCE_COLOR, b.reference_label), (WINDOW_COLOR, b.window_label)]))
    out.append("</svg>")
    return "".join(out)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def strip_svg(points: Sequence[StripPoint]) -> str:
    """Verdict history, oldest left: one bar per window, coloured by verdict, taller for a
    larger share of drifted features."""
    width, height = 720, 78
    left, right, base, tallest = 4, width - 4, 46, 36
    out = [_open(f"verdict history: {len(points)} windows", width, height, "chart history-chart", None)]
    slot = min(18.0, (right - left) / max(len(points), 1))
    for i, p in enumerate(points):
        color = VERDICT_COLORS.get(p.verdict, VERDICT_COLORS["insufficient"])
        if p.verdict == "drift":
            bar = 14 + (tallest - 14) * (p.drifted / p.features if p.features else 1.0)
        else:
            bar = 10 if p.verdict == "clean" else 6
        x = left + i * slot
        tip = f"{_when(p.at)}: {p.verdict}, {p.drifted} of {p.features} features drifted, {p.rows} rows"
        out.append(f'<rect x="{x + 1:.1f}" y="{base - bar:.1f}" width="{max(slot - 2, 1):.1f}" height="{bar:.1f}" '
                   f'rx="1.5" fill="{color}"><title>{escape(tip)}</title></rect>')
    out.append(f'<line x1="{left}" y1="{base + 0.5}" x2="{right}" y2="{base + 0.5}" stroke="{_MUTED}"/>')
    if points:
        out.append(f'<text x="{left}" y="{base + 15}" font-size="10" fill="{_MUTED}">{escape(_when(points[0].at))}</text>'
                   f'<text x="{right}" y="{base + 15}" font-size="10" fill="{_MUTED}" text-anchor="end">'
                   f'{escape(_when(points[-1].at))} (newest)</text>')
    legend = [(VERDICT_COLORS["clean"], "clean"), (VERDICT_COLORS["drift"], "drift (taller: more features)"),
              (VERDICT_COLORS["insufficient"], "not tested")]
    out.append(_legend(left, height - 4, legend))
    out.append("</svg>")
    return "".join(out)
