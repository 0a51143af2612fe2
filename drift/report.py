"""The drift report page: per model version, the verdict, the alert state, the latest window's
per-feature tests, the verdict history and one chart per feature (reference against window),
as plain server-rendered HTML with inline CSS and inline SVG, no scripts and no external assets.

Work is split by thread. On the event loop, where open windows are written, ``_snapshot``
picks the features to show and copies only their statistics (serialized KLL bytes and category
counts). The history query, quantiles, densities, SVG and HTML are then built on a worker
thread from those copies, so a wide model never stalls ingestion and the thread never reads
a sketch the loop is writing. The page is bounded: ``limit`` features per version (drifted
first, then the smallest p-value), ``history`` windows in the strip.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

from .errors import InvalidInput, NotFound
from .report_svg import VERDICT_COLORS, StripPoint, bars_of, bars_svg, histogram_of, histogram_svg, number, strip_svg
from .sketch import FeatureSketch, InputSketch

__all__ = ["HEADERS", "MAX_LIMIT", "ReportQuery", "index_page", "model_page"]

# The page may load nothing from anywhere: the browser is told so, too.
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
           "Cache-Control": "no-store"}
MAX_LIMIT = 500
_PARAMS = ("version", "features", "limit", "history", "window")
_WINDOWS = ("evaluated", "open")


def _whole(name: str, text: str | None, default: int, most: int) -> int:
    if text is None:
        return default
    # ASCII digits, and few of them: int() refuses other Unicode digits ("²") and numbers of thousands of digits.
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not 0 < int(text) <= most:
        raise InvalidInput(f"{name}: expected a whole number 1-{most}, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class ReportQuery:
    """What a report request asks for; ``parse`` reads the query string (400 naming the field)."""

    version: str | None = None
    features: tuple[str, ...] = ()
    limit: int = 50
    history: int = 60
    window: str = "evaluated"

    def __post_init__(self) -> None:
        if self.version == "":
            raise InvalidInput("version: expected a version of the model, got ''")
        if any(not name for name in self.features):
            raise InvalidInput("features: expected comma-separated feature names, got an empty name")
        if not 0 < self.limit <= MAX_LIMIT:
            raise InvalidInput(f"limit: expected a whole number 1-{MAX_LIMIT}, got {self.limit!r}")
        if not 0 < self.history <= 1000:
            raise InvalidInput(f"history: expected a whole number 1-1000, got {self.history!r}")
        if self.window not in _WINDOWS:
            raise InvalidInput(f"window: expected 'evaluated' (the last evaluated window) or 'open' (the window "
                               f"in progress), got {self.window!r}")

    @classmethod
    def parse(cls, query) -> ReportQuery:
        """``query``: a multidict (aiohttp's ``request.query``); ``features`` may repeat."""
        for name in query:
            if name not in _PARAMS:
                raise InvalidInput(f"{name}: unknown query parameter; expected {', '.join(_PARAMS)}")
            if name != "features" and len(query.getall(name)) > 1:
                raise InvalidInput(f"{name}: given more than once")
        features = tuple(n.strip() for text in query.getall("features", []) for n in text.split(","))
        return cls(query.get("version"), features, _whole("limit", query.get("limit"), 50, MAX_LIMIT),
                   _whole("history", query.get("history"), 60, 1000), query.get("window", "evaluated"))


# --- on the event loop: pick features, copy their statistics -------------------------------

@dataclass(frozen=True)
class _Side:
    """One side (reference or window) of one feature, copied off the live sketch."""

    count: int
    missing: int
    kll: bytes
    categories: tuple[tuple[str, int], ...]
    other: int


@dataclass(frozen=True)
class _Feature:
    input: str
    index: int
    name: str
    kind: str
    result: dict | None
    reference: _Side | None
    window: _Side | None


@dataclass(frozen=True)
class _Version:
    version: str
    latest: dict | None
    alert: dict
    references: tuple[tuple[str, int, str, float], ...]  # input, rows, source, created_at
    window: str  # which window the charts show: "evaluated", "open" or "" (none held)
    window_rows: int
    window_started: float
    features: tuple[_Feature, ...]
    total: int  # features of the version that pass the filter
    alpha: float  # what a corrected p-value is compared with


def _has_values(f: FeatureSketch) -> bool:
    return bool(f.count or f.missing or f.categories or f.other)


def _side(sketch: InputSketch | None, index: int) -> _Side | None:
    if sketch is None or index >= len(sketch.features) or not _has_values(sketch.features[index]):
        return None
    f = sketch.features[index]
    return _Side(f.count, f.missing, b"" if f.kll.is_empty() else f.kll.serialize(), tuple(f.categories.items()), f.other)


def _kind(sketch: InputSketch, f: FeatureSketch) -> str:
    """As ``evaluate`` decides: complete category counts are categorical, the rest numeric."""
    complete = f.other == 0 or sketch.datatype == "BYTES"
    return "categorical" if f.categorical and (f.categories or f.other) and complete else "numeric"


def _rank(result: dict | None, input_name: str, index: int) -> tuple:
    """Drifted first, then the smallest p-value (or the largest score/threshold), then position."""
    if result is None:
        return (2, 1.0, 0.0, input_name, index)
    p = result.get("adjusted_p_value", result.get("p_value"))
    test = (result.get("tests") or {}).get(result.get("decision"), {})
    ratio = (test.get("score") or 0.0) / test["threshold"] if test.get("threshold") else 0.0
    return (0 if result.get("drifted") else 1, p if p is not None else 1.0, -ratio, input_name, index)


def _natural(version: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", version))


def _versions(service, model: str) -> list[str]:
    keys = set(service.latest) | set(service.references) | set(service.windows.open) | set(service.captures)
    return sorted({v for m, v in keys if m == model}, key=_natural)


def _version(service, key: tuple[str, str], q: ReportQuery, wanted: set[str], seen: set[str]) -> _Version:
    window, which = (service.evaluated.get(key), "evaluated") if q.window == "evaluated" else (None, "")
    if window is None:
        window, which = service.windows.open.get(key), "open"
    refs = service.references.get(key, {})
    if window is None:
        pairs = [(name, ref, None) for name, ref in sorted(refs.items())]
        which = ""
    else:
        matched = service.references_for(*key, window.inputs)
        used = {id(r) for r in matched.values()}
        pairs = [(name, matched.get(name), window.inputs[name]) for name in sorted(window.inputs)]
        pairs += [(name, ref, None) for name, ref in sorted(refs.items()) if id(ref) not in used]
    latest = service.latest.get(key)
    results = {(f["input"], f["index"]): f for f in (latest or {}).get("features", [])}
    candidates = []
    for name, ref, win in pairs:
        for index in range(max(len(ref.features) if ref else 0, len(win.features) if win else 0)):
            r = ref.features[index] if ref and index < len(ref.features) else None
            w = win.features[index] if win and index < len(win.features) else None
            if not ((r and _has_values(r)) or (w and _has_values(w))):
                continue
            label = ref.feature_name(index) if ref and index < len(ref.feature_names) else (win or ref).feature_name(index)
            if wanted and label not in wanted:
                continue
            seen.add(label)
            result = results.get((name, index))
            candidates.append((_rank(result, name, index), name, index, label, result, ref, win,
                               _kind(ref, r) if r and _has_values(r) else _kind(win, w)))
    candidates.sort(key=lambda c: c[0])
    features = tuple(_Feature(name, index, label, (result or {}).get("kind", kind), result, _side(ref, index),
                              _side(win, index))
                     for _, name, index, label, result, ref, win, kind in candidates[:q.limit])
    meta = tuple((name, sketch.rows, *service.reference_meta.get((*key, name), ("", 0.0)))
                 for name, sketch in sorted(refs.items()))
    return _Version(key[1], latest, service.tracker.status(*key), meta, which, window.rows if window else 0,
                    window.started_at if window else 0.0, features, len(candidates), service.policy.tests.alpha)


def _snapshot(service, model: str, q: ReportQuery) -> list[_Version]:
    versions = _versions(service, model)
    if not versions:
        raise NotFound(f"no model {model!r}: the detector has no reference, window or evaluation for it "
                       f"(GET /report lists the models)")
    if q.version is not None:
        if q.version not in versions:
            raise NotFound(f"version: model {model!r} has no version {q.version!r} (known: {', '.join(versions)})")
        versions = [q.version]
    wanted, seen = set(q.features), set()
    out = [_version(service, (model, v), q, wanted, seen) for v in versions]
    missing = sorted(wanted - seen)
    if missing:
        raise InvalidInput(f"features: model {model!r} has no feature named {missing[0]!r}")
    return out


# --- on a worker thread: densities, charts, HTML --------------------------------------------

def _label(side_name: str, side: _Side | None) -> str:
    return f"{side_name}: no values" if side is None or not side.count else f"{side_name} \u00b7 {side.count:,} values"


def _chart(f: _Feature, title: str) -> str:
    labels = _label("reference", f.reference), _label("window", f.window)
    if f.kind == "categorical":
        counts = [(s.categories, s.other) if s else None for s in (f.reference, f.window)]
        return bars_svg(title, bars_of(*counts, labels), f.name)
    sketches = [s.kll if s and s.kll else None for s in (f.reference, f.window)]
    return histogram_svg(title, histogram_of(*sketches, labels), f.name)


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at)) if at else "never"


def _p(value: Any) -> str:
    return "\u2013" if value is None else (f"{value:.2e}" if value < 1e-3 else f"{value:.4f}")


def _verdict(verdict: str | None) -> str:
    text = {"no_reference": "no reference", None: "not evaluated yet"}.get(verdict, verdict)
    return f'<span class="badge" style="background:{VERDICT_COLORS.get(verdict or "", "#9e9e9e")}">{escape(text)}</span>'


def _alert(alert: dict) -> str:
    if alert.get("firing"):
        return f'<span class="alert firing">alert firing since {escape(_when(alert.get("since")))}</span>'
    return (f'<span class="alert">alert not firing: {alert.get("drifted_in_a_row", 0)} drifted window(s) in a row, '
            f'fires at {alert.get("fire_after")}</span>')


def _row(f: _Feature, alpha: float) -> str:
    r = f.result
    if r is None:
        return (f'<tr><td class="name">{escape(f.name)}</td><td>{escape(f.input)}</td><td>{f.kind}</td>'
                f'<td colspan="7" class="muted">not tested in the latest window</td></tr>')
    decided = r.get("tests", {}).get(r["decision"], {})
    if r.get("p_value") is not None:
        threshold = f"\u03b1 {number(alpha)}"
    else:
        threshold = number(decided["threshold"]) if decided.get("threshold") is not None else "\u2013"
    others = " \u00b7 ".join(f"{escape(t)} {number(v['score'])}" for t, v in r.get("tests", {}).items()
                             if t != r["decision"] and v.get("score") is not None)
    cls = ' class="drifted"' if r.get("drifted") else ""
    return (f'<tr{cls}><td class="name">{escape(f.name)}</td><td>{escape(f.input)}</td><td>{escape(r["kind"])}</td>'
            f'<td>{escape(r["decision"])}</td><td class="num">{number(r["score"] or 0.0)}</td>'
            f'<td class="num">{threshold}</td>'
            f'<td class="num">{_p(r.get("p_value"))}</td><td class="num">{_p(r.get("adjusted_p_value"))}</td>'
            f'<td>{"<b>yes</b>" if r.get("drifted") else "no"}</td><td class="muted">{others}</td></tr>')


def _missing(side: _Side | None) -> str:
    total = side.count + side.missing if side else 0
    return f"{side.missing / total:.1%}" if total else "\u2013"


def _card(f: _Feature) -> str:
    title = f"{f.name} (input {f.input or 'any'}, feature {f.index}): reference vs window"
    chart = _chart(f, title)
    r = f.result
    chip = "" if r is None else (f'<span class="chip {"drift" if r["drifted"] else "clean"}">'
                                 f'{"drifted" if r["drifted"] else "no drift"}</span>')
    stat = "" if r is None else f'<span class="muted">{escape(r["decision"])} {number(r["score"] or 0.0)}, p {_p(r.get("p_value"))}</span>'
    return (f'<figure class="card{" drifted" if r and r["drifted"] else ""}"><figcaption><span class="name">'
            f'{escape(f.name)}</span> <span class="muted">{escape(f.input)}[{f.index}] \u00b7 {f.kind}</span> {chip} {stat}'
            f'</figcaption>{chart}<p class="foot">missing values: reference {_missing(f.reference)}, '
            f'window {_missing(f.window)}</p></figure>')


def _section(n: int, v: _Version, history: list[StripPoint], q: ReportQuery) -> str:
    latest = v.latest or {}
    window = latest.get("window") or {}
    refs = "; ".join(f"input {escape(name or '(any)')}: {rows:,} rows from {escape(source or '?')}, {escape(_when(at))}"
                     for name, rows, source, at in v.references) or "none (upload one with `sidemesh drift reference`)"
    tested = len(latest.get("features", []))
    summary = (f"Latest window: {window.get('rows', 0):,} rows, evaluated {escape(_when(latest.get('evaluated_at')))}; "
               f"{latest.get('drifted_features', 0)} of {tested} features drifted."
               if latest else "No window of this version has been evaluated yet.")
    if latest.get("reason"):
        summary += f" {escape(latest['reason'])}."
    shown = (f"Showing {len(v.features)} of {v.total} features: drifted first, then by smallest p-value. "
             f"<code>?limit=N</code> (up to {MAX_LIMIT}) shows more, <code>?features=a,b</code> picks some."
             if len(v.features) < v.total else f"{v.total} features, drifted first, then by smallest p-value.")
    what = {"evaluated": f"the last evaluated window ({v.window_rows:,} rows, opened {escape(_when(v.window_started))})",
            "open": f"the window in progress ({v.window_rows:,} rows since {escape(_when(v.window_started))}); "
                    f"the scores above are the last evaluated window's",
            "": "nothing: no window is in progress" + ("" if q.window == "open" else
                 " and none was evaluated since the detector started (window statistics live in memory only)")}[v.window]
    strip = strip_svg(history) if history else '<p class="muted">No evaluations yet.</p>'
    rows = "".join(_row(f, v.alpha) for f in v.features) or '<tr><td colspan="10" class="muted">no features</td></tr>'
    cards = "".join(_card(f) for f in v.features)
    return (f'<section class="version" id="v{n}"><div class="head"><h2>version <code>{escape(v.version)}</code></h2>'
            f'{_verdict(latest.get("verdict"))}{_alert(v.alert)}</div>'
            f'<p>{summary}</p><p class="muted">Reference: {refs}</p>'
            f'<h3>Verdict history <span class="muted">(last {len(history)} windows, oldest left)</span></h3>{strip}'
            f'<h3>Latest window, per feature</h3><p class="muted">{shown}</p>'
            f'<table><thead><tr><th>feature</th><th>input</th><th>kind</th><th>test</th><th>score</th>'
            f'<th>threshold</th><th>p-value</th><th>adjusted p</th><th>drifted</th><th>other tests</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>'
            f'<h3>Distributions</h3><p class="muted">Reference (blue) against {what}.</p>'
            f'<div class="grid">{cards}</div></section>')


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:#222;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1240px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:0}h3{font-size:15px;margin:22px 0 8px}
a{color:#2f5d8a}code{font:13px ui-monospace,Menlo,Consolas,monospace;background:#eef0f3;padding:1px 4px;border-radius:3px}
.muted{color:#666}.top{display:flex;justify-content:space-between;align-items:baseline;gap:16px;flex-wrap:wrap}
.version{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:16px 20px;margin:18px 0}
.head{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
.badge{color:#fff;font-weight:600;padding:2px 10px;border-radius:12px;font-size:13px}
.alert{font-size:13px;color:#555}.alert.firing{color:#b71c1c;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff2}th{background:#f0f2f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.name{font-weight:600;word-break:break-all}
tr.drifted td{background:#fdecea}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:16px}
.card{margin:0;border:1px solid #e1e4e8;border-radius:6px;padding:8px 10px;background:#fff}
.card.drifted{border-color:#e57373;box-shadow:inset 3px 0 0 #d62728}
.card figcaption{font-size:13px;margin-bottom:2px}.card .name{font-weight:600;word-break:break-all}
.chip{font-size:11px;padding:1px 7px;border-radius:9px;color:#fff}.chip.drift{background:#d62728}.chip.clean{background:#2ca02c}
.foot{margin:0;font-size:12px;color:#666}
svg.chart{display:block;width:100%;height:auto}svg.history-chart{max-width:720px}
"""


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
            f'<style>{_CSS}</style></head><body><main>{body}</main></body></html>')


def _render(store, model: str, versions: list[_Version], q: ReportQuery, now: float) -> str:
    sections = []
    for n, v in enumerate(versions):
        history = [StripPoint(*row) for row in reversed(store.verdicts(model, v.version, q.history))]
        sections.append(_section(n, v, history, q))
    nav = " \u00b7 ".join(f'<a href="#v{n}">version {escape(v.version)}</a>' for n, v in enumerate(versions))
    head = (f'<div class="top"><h1>Drift report: <code>{escape(model)}</code></h1>'
            f'<span class="muted">generated {escape(_when(now))} \u00b7 <a href="/report">all models</a></span></div>'
            f'<p class="muted">{nav}</p>')
    return _page(f"drift report: {model}", head + "".join(sections))


async def model_page(service, model: str, query) -> str:
    """The report of one model (all its versions, or ``?version=``); rendered off the loop."""
    q = ReportQuery.parse(query)
    versions = _snapshot(service, model, q)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _render, service.store, model, versions, q, time.time())


async def index_page(service) -> str:
    """Every model the detector knows, each version's latest verdict and alert, linked."""
    models = sorted({m for m, _ in set(service.latest) | set(service.references) | set(service.windows.open)
                     | set(service.captures)})
    rows = []
    for model in models:
        for i, version in enumerate(_versions(service, model)):
            latest = service.latest.get((model, version)) or {}
            link = f'<a href="/report/{quote(model, safe="")}"><code>{escape(model)}</code></a>' if i == 0 else ""
            rows.append(f'<tr><td>{link}</td><td><a href="/report/{quote(model, safe="")}?version='
                        f'{quote(version, safe="")}">{escape(version)}</a></td><td>{_verdict(latest.get("verdict"))}</td>'
                        f'<td>{_alert(service.tracker.status(model, version))}</td>'
                        f'<td>{escape(_when(latest.get("evaluated_at")))}</td></tr>')
    table = (f'<table><thead><tr><th>model</th><th>version</th><th>latest verdict</th><th>alert</th>'
             f'<th>evaluated</th></tr></thead><tbody>{"".join(rows)}</tbody></table>' if rows else
             '<p>No models yet: upload a reference (<code>sidemesh drift reference</code>) or point sidecars at '
             'the detector.</p>')
    return _page("drift reports", f'<h1>Drift reports</h1><section class="version">{table}</section>')
