"""The report's charts: well-formed standalone SVG, every mark inside the viewBox, every
caller-provided string escaped, and densities and shares that add up."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import datasketches
import numpy as np
import pytest

from drift.report_svg import (
    TOP_CATEGORIES,
    Bars,
    Histogram,
    StripPoint,
    bars_of,
    bars_svg,
    histogram_of,
    histogram_svg,
    nice_ticks,
    strip_svg,
)

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(\"x\")</script> & 'q' ]]>"
LABELS = ("reference", "window")


def _kll(values) -> bytes:
    sketch = datasketches.kll_doubles_sketch(200)
    sketch.update(np.asarray(values, dtype=np.float64))
    return sketch.serialize()


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    assert root.tag == SVG + "svg"
    return root


def _box(root: ET.Element) -> tuple[float, float]:
    x, y, w, h = map(float, root.get("viewBox").split())
    assert (x, y) == (0, 0)
    return w, h


def _assert_inside(root: ET.Element) -> int:
    """Every coordinate of every path, rect, line and text lies within the viewBox; returns
    how many coordinates were checked."""
    w, h = _box(root)
    checked = 0
    for el in root.iter():
        tag = el.tag.removeprefix(SVG)
        points: list[tuple[float, float]] = []
        if tag == "path":
            numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", el.get("d"))]
            assert re.fullmatch(r"(?:[MLZ][\d. -]*)+", el.get("d")), el.get("d")
            points = list(zip(numbers[::2], numbers[1::2]))
        elif tag == "rect":
            x, y = float(el.get("x")), float(el.get("y"))
            points = [(x, y), (x + float(el.get("width")), y + float(el.get("height")))]
        elif tag == "line":
            points = [(float(el.get("x1")), float(el.get("y1"))), (float(el.get("x2")), float(el.get("y2")))]
        elif tag == "text" and el.get("x") is not None:
            points = [(float(el.get("x")), float(el.get("y")))]
        for x, y in points:
            assert 0 <= x <= w and 0 <= y <= h, f"{tag} point ({x}, {y}) outside the viewBox {w}x{h}"
            checked += 1
    return checked


def test_a_histogram_is_standalone_svg_with_its_marks_inside_the_viewbox():
    rng = np.random.default_rng(1)
    h = histogram_of(_kll(rng.normal(size=20_000)), _kll(rng.normal(0.5, 1.0, size=1000)), LABELS)
    svg = histogram_svg("amount: reference vs window", h, "amount")
    root = _parse(svg)
    assert _assert_inside(root) > 80
    assert root.get("data-feature") == "amount" and "feature-chart" in root.get("class")
    assert len(root.findall(SVG + "path")) == 2  # one area per side
    texts = [t.text for t in root.iter(SVG + "text")]
    assert {"value", "density", "reference", "window"} <= set(texts)
    assert not re.search(r"<script|href=|url\(|@import|@font-face", svg)


def test_a_hostile_feature_name_is_escaped_and_comes_back_intact():
    h = histogram_of(_kll(range(100)), None, LABELS)
    svg = histogram_svg(f"{HOSTILE}: reference vs window", h, HOSTILE)
    assert "<script>" not in svg and "]]>" not in svg
    root = _parse(svg)
    assert root.get("data-feature") == HOSTILE
    assert root.find(SVG + "title").text == f"{HOSTILE}: reference vs window"
    assert not [el for el in root.iter() if el.tag.removeprefix(SVG) == "script"]


def test_category_bars_escape_labels_and_stay_inside_the_viewbox():
    b = bars_of(([(HOSTILE, 60), ("b", 40)], 0), ([(HOSTILE, 20), ("b", 80)], 0), (HOSTILE, "window"))
    svg = bars_svg("channel", b, "channel")
    assert "<script>" not in svg
    root = _parse(svg)
    _assert_inside(root)
    texts = [t.text for t in root.iter(SVG + "text")]
    assert HOSTILE in texts  # the legend, whole
    assert any(t.startswith("<script>al") and t.endswith("\u2026") for t in texts)  # the row label, shortened
    tips = [g.find(SVG + "title").text for g in root.iter(SVG + "g")]
    assert f"{HOSTILE}: reference 60.0%, window 20.0%" in tips
    assert "60.0%" in texts and "80.0%" in texts


def test_densities_integrate_to_the_share_on_the_axis_and_follow_a_shift():
    rng = np.random.default_rng(2)
    h = histogram_of(_kll(rng.normal(size=50_000)), _kll(rng.normal(2.0, 1.0, size=5000)), LABELS)
    widths = np.diff(h.edges)
    for side, outside in ((h.reference, h.outside[0]), (h.window, h.outside[1])):
        assert float(np.dot(side, widths)) + outside == pytest.approx(1.0, abs=1e-9)
        assert outside < 0.01
    centres = (np.asarray(h.edges[:-1]) + np.asarray(h.edges[1:])) / 2
    assert float(np.dot(centres, np.asarray(h.reference) * widths)) == pytest.approx(0.0, abs=0.1)
    assert float(np.dot(centres, np.asarray(h.window) * widths)) == pytest.approx(2.0, abs=0.1)
    assert 16 <= len(h.edges) - 1 <= 40


@pytest.mark.parametrize("values", [[5.0] * 300, [1e12 + 1] * 10, [0.0]])
def test_a_constant_feature_gets_a_real_axis_around_its_value(values):
    h = histogram_of(_kll(values), _kll(values), LABELS)
    assert h.edges[0] < values[0] < h.edges[-1]
    assert float(np.dot(h.reference, np.diff(h.edges))) == pytest.approx(1.0)
    _assert_inside(_parse(histogram_svg("c", h, "c")))


def test_a_side_without_values_is_drawn_as_absent():
    h = histogram_of(None, b"", ("reference: no values", "window: no values"))
    assert h.reference is None and h.window is None
    root = _parse(histogram_svg("empty", h, "empty"))
    assert not root.findall(SVG + "path")
    assert "reference: no values" in [t.text for t in root.iter(SVG + "text")]


def test_many_categories_keep_the_largest_and_pool_the_rest_as_other():
    ref = ([(f"c{i:02d}", 100 - i) for i in range(30)], 50)
    b = bars_of(ref, None, LABELS)
    assert len(b.labels) == TOP_CATEGORIES + 1 and b.labels[-1] == "other (18 more)"
    assert b.labels[0] == "c00" and b.window is None
    assert sum(b.reference) == pytest.approx(1.0)
    _assert_inside(_parse(bars_svg("wide", b, "wide")))


def test_the_verdict_strip_has_one_bar_per_window_coloured_by_verdict():
    points = [StripPoint(1.8e9 + i, v, 1000, d, 4) for i, (v, d) in
              enumerate([("clean", 0), ("drift", 1), ("drift", 4), ("insufficient", 0)])]
    root = _parse(strip_svg(points))
    _assert_inside(root)
    bars = [r for r in root.iter(SVG + "rect") if r.find(SVG + "title") is not None]
    assert [r.get("fill") for r in bars] == ["#2ca02c", "#d62728", "#d62728", "#9e9e9e"]
    heights = [float(r.get("height")) for r in bars]
    assert heights[2] > heights[1] > heights[0] > heights[3]
    assert "1 of 4 features drifted" in bars[1].find(SVG + "title").text
    _assert_inside(_parse(strip_svg([StripPoint(1.8e9 + i, "clean", 10, 0, 1) for i in range(1000)])))


def test_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 0.43, 4) == pytest.approx([0, 0.2, 0.4])
    assert nice_ticks(-3.2, 3.3, 6) == pytest.approx([-3, -2, -1, 0, 1, 2, 3])
    assert nice_ticks(1e12, 1e12 + 1, 5)[0] >= 1e12
    assert nice_ticks(2.0, 2.0) == [2.0]


def test_malformed_chart_data_is_refused():
    with pytest.raises(ValueError, match="edges"):
        Histogram((1.0, 1.0), None, None, *LABELS)
    with pytest.raises(ValueError, match="densities"):
        Histogram((0.0, 1.0, 2.0), (1.0,), None, *LABELS)
    with pytest.raises(ValueError, match="shares"):
        Bars(("a", "b"), (1.0,), None, *LABELS)
