"""The drift report page: each version's verdict, alert, per-feature tests, verdict history
and one chart per feature; bounded for wide models, escaped throughout, refused clearly when
asked wrongly, and rendered by a real headless Chromium from a real detector."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import struct
import subprocess
import urllib.error
import urllib.request
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from multidict import MultiDict

from drift import report
from drift.errors import InvalidInput, NotFound
from drift.metrics import DriftMetrics
from drift.proto import stats_pb2 as pb
from drift.service import DriftService, ServicePolicy
from drift.sketch import InputSketch
from drift.store import DriftStore
from drift.windows import WindowPolicy
from tests.drift.peers import DriftProcess, StatsStream, report_of

HOSTILE = "<script>alert(\"x\")</script>&'amt'"
NUMERIC = ["age", HOSTILE, "score"]
CHANNELS = ["card", "wire", "cash", "crypto"]
CHROMIUM_TIMEOUT = 60
WIDTH, HEIGHT = 1280, 2000


class _Page(HTMLParser):
    """What a test reads off a page: feature charts (by data-feature), tags, table rows, text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.charts: list[str] = []
        self.tags: set[str] = set()
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "svg" and "feature-chart" in attrs.get("class", ""):
            self.charts.append(attrs.get("data-feature"))
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def body(self) -> str:
        return " ".join(self.text)


# --- the data: 3 numeric features (one shifts) and 1 categorical (its mix changes) ---------

def _numeric(rng, rows: int, shift: float = 0.0) -> np.ndarray:
    data = rng.normal(size=(rows, 3)).astype(np.float32)
    data[:, 1] += shift
    return data


def _channels(rng, rows: int, drifted: bool = False) -> np.ndarray:
    p = [0.3, 0.3, 0.2, 0.2] if drifted else [0.5, 0.3, 0.15, 0.05]
    return np.array([c.encode() for c in rng.choice(CHANNELS, p=p, size=rows)], dtype=object).reshape(-1, 1)


def _references(rng) -> dict[str, InputSketch]:
    x = InputSketch.from_array(_numeric(rng, 20_000), "FP32")
    x.feature_names = list(NUMERIC)
    kind = InputSketch.from_array(_channels(rng, 20_000), "BYTES")
    kind.feature_names = ["channel"]
    return {"x": x, "kind": kind}


def _report(rng, seq: int, model: str, drifted: bool) -> pb.StatsReport:
    message = report_of("sc-r", seq, model, "1", _numeric(rng, 1000, 0.6 if drifted else 0.0), "x")
    message.inputs.append(InputSketch.from_array(_channels(rng, 1000, drifted), "BYTES").to_proto(model, "1", "kind"))
    return message


@contextlib.asynccontextmanager
async def _service(fire_after: int = 2):
    store = DriftStore(":memory:")
    service = DriftService(store, DriftMetrics(), ServicePolicy(windows=WindowPolicy(rows=0, seconds=3600),
                                                                fire_after=fire_after))
    task = asyncio.get_running_loop().create_task(service.run())
    try:
        yield service
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()


async def _fraud(service: DriftService, windows=(False, True, True), model: str = "fraud") -> None:
    rng = np.random.default_rng(1)  # a seed whose clean window is judged clean (at alpha 0.05 some are not)
    for name, sketch in _references(rng).items():
        service.put_reference(model, "1", name, sketch, "upload")
    for seq, drifted in enumerate(windows, 1):
        assert service.apply(_report(rng, seq, model, drifted)) == ""
        service.flush()
        await service.wait_idle()


def _page(query: dict | None = None, windows=(False, True, True), open_rows: int = 0) -> _Page:
    async def run() -> str:
        async with _service() as service:
            await _fraud(service, windows)
            if open_rows:
                rng = np.random.default_rng(8)
                service.apply(report_of("sc-r", 99, "fraud", "1", _numeric(rng, open_rows, 5.0), "x"))
            return await report.model_page(service, "fraud", MultiDict(query or {}))

    html = asyncio.run(run())
    assert "<script>" not in html
    return _Page(html)


# --- the page, in process -----------------------------------------------------------------

def test_the_page_shows_verdict_alert_feature_table_history_and_one_chart_per_feature():
    page = _page()
    assert sorted(page.charts) == sorted(NUMERIC + ["channel"])
    assert set(page.charts[:2]) == {HOSTILE, "channel"}  # drifted features come first
    table = [r for r in page.rows if r]
    assert [r[0] for r in table] == page.charts
    by_name = {r[0]: r for r in table}
    assert by_name["channel"][3] == "chi_square" and by_name["age"][3] == "ks"
    assert by_name[HOSTILE][8] == "yes" and by_name["age"][8] == "no"
    assert by_name["age"][5] == "\u03b1 0.05"
    body = page.body
    assert "drift" in body and "alert firing since" in body
    assert "last 3 windows" in body and "2 of 4 features drifted" in body
    assert body.count("clean, 0 of 4 features drifted, 1000 rows") == 1  # the history strip's bars, oldest first
    assert body.count("drift, 2 of 4 features drifted, 1000 rows") == 2
    assert body.index("clean, 0 of 4") < body.index("drift, 2 of 4")
    assert "the last evaluated window (1,000 rows" in body
    assert "reference \u00b7 20,000 values" in body and "window \u00b7 1,000 values" in body


def test_a_hostile_feature_name_is_text_on_the_page_never_markup():
    page = _page()
    assert "script" not in page.tags
    assert HOSTILE in page.charts and HOSTILE in page.body


def test_the_window_in_progress_can_be_charted_instead_of_the_evaluated_one():
    page = _page({"window": "open"}, open_rows=500)
    assert "the window in progress (500 rows" in page.body
    assert "window \u00b7 500 values" in page.body
    assert sorted(page.charts) == sorted(NUMERIC + ["channel"])  # the reference still has the categorical one


def test_a_version_with_only_a_reference_shows_the_reference_and_says_nothing_was_evaluated():
    page = _page(windows=())
    assert "not evaluated yet" in page.body and "No evaluations yet." in page.body
    assert len(page.charts) == 4 and "window: no values" in page.body


def test_a_wide_model_is_capped_with_a_note_and_features_can_be_picked():
    async def run() -> list[_Page]:
        async with _service() as service:
            rng = np.random.default_rng(3)
            ref = InputSketch.from_array(rng.normal(size=(2000, 120)), "FP32")
            service.put_reference("wide", "1", "", ref, "upload")
            data = rng.normal(size=(1000, 120))
            data[:, 117] += 1.0
            service.apply(report_of("sc-w", 1, "wide", "1", data, "features"))
            service.flush()
            await service.wait_idle()
            queries = [{}, {"features": "117,3", "limit": "1"}, {"features": ["5", "6"]}, {"limit": "500"}]
            pages = []
            for q in queries:
                md = MultiDict([(k, v) for k, vs in q.items() for v in (vs if isinstance(vs, list) else [vs])])
                pages.append(_Page(await report.model_page(service, "wide", md)))
            return pages

    capped, picked, repeated, everything = asyncio.run(run())
    assert len(capped.charts) == 50 and capped.charts[0] == "117"
    assert "Showing 50 of 120 features" in capped.body
    assert picked.charts == ["117"] and "Showing 1 of 2 features" in picked.body
    assert repeated.charts == ["5", "6"]
    assert len(everything.charts) == 120


@pytest.mark.parametrize("query,field", [
    ({"limit": "0"}, "limit"), ({"limit": "ten"}, "limit"), ({"limit": "501"}, "limit"),
    ({"history": "0"}, "history"), ({"window": "latest"}, "window"), ({"colour": "red"}, "colour"),
    ({"features": "age,,score"}, "features"), ({"features": "nope"}, "features"), ({"version": ""}, "version"),
])
def test_bad_query_parameters_are_refused_naming_the_parameter(query, field):
    async def run():
        async with _service() as service:
            await _fraud(service, ())
            await report.model_page(service, "fraud", MultiDict(query))

    with pytest.raises(InvalidInput, match=f"^{field}: "):
        asyncio.run(run())


def test_a_repeated_parameter_and_unknown_models_or_versions_are_refused():
    async def run(model: str, query: MultiDict):
        async with _service() as service:
            await _fraud(service, ())
            await report.model_page(service, model, query)

    with pytest.raises(InvalidInput, match="^limit: given more than once"):
        asyncio.run(run("fraud", MultiDict([("limit", "1"), ("limit", "2")])))
    with pytest.raises(NotFound, match="no model 'ghost'"):
        asyncio.run(run("ghost", MultiDict()))
    with pytest.raises(NotFound, match="^version: model 'fraud' has no version '9'"):
        asyncio.run(run("fraud", MultiDict(version="9")))


def test_the_index_links_every_model_and_escapes_its_name():
    async def run() -> str:
        async with _service() as service:
            await _fraud(service)
            await _fraud(service, (), model="a<b>&c")
            return await report.index_page(service)

    html = asyncio.run(run())
    page = _Page(html)
    assert 'href="/report/fraud"' in html and 'href="/report/a%3Cb%3E%26c"' in html
    assert "a<b>&c" in page.body and "<b>" not in html
    assert "alert firing since" in page.body and "not evaluated yet" in page.body


# --- the real detector, the real browser ----------------------------------------------------

def _chromium(url: str, tmp: Path) -> tuple[Path, str]:
    """Screenshot and rendered DOM of ``url``; Chromium and its helpers end before this returns."""
    shot, dom, log = tmp / "shot.png", tmp / "dom.html", tmp / "chromium.log"
    argv = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}", f"--screenshot={shot}", "--dump-dom",
            f"--window-size={WIDTH},{HEIGHT}", url]
    with open(dom, "wb") as out, open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    exited = False
    try:
        pidfd = os.pidfd_open(proc.pid)
        try:
            exited = bool(select.select([pidfd], [], [], CHROMIUM_TIMEOUT)[0])
        finally:
            os.close(pidfd)
    finally:
        # Until it is reaped, Chromium's process (a zombie once it exits) holds its group, so
        # the group holds only Chromium and its helpers: end whatever is left of them.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert exited, f"chromium did not finish within {CHROMIUM_TIMEOUT} s:\n{log.read_text(errors='replace')[-2000:]}"
    assert proc.returncode == 0, log.read_text(errors="replace")[-2000:]
    return shot, dom.read_text()


def _png(data: bytes) -> tuple[int, int, int]:
    """(width, height, rows that are not one flat colour) of an 8-bit PNG, from its scanlines.

    A row of one colour is coded, whatever its filter, as one pixel then zeros or as one
    pixel repeated (Average's first row aside), so a blank image has (almost) no other row."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + chunk) == struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    assert len(raw) == height * (stride + 1)
    detailed = 0
    for y in range(height):
        row = raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
        if row[bpp:].count(0) != stride - bpp and row != row[:bpp] * width:
            detailed += 1
    return width, height, detailed


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A detector with model "fraud" v1 (3 numeric features, 1 categorical): a clean window,
    then two drifted ones (the alert fires on the second)."""
    tmp = tmp_path_factory.mktemp("report")
    d = DriftProcess(tmp / "drift.db", ["--window-rows", 100_000, "--window-seconds", 0, "--fire-after", 2]).start()
    try:
        rng = np.random.default_rng(11)
        for name, sketch in _references(rng).items():
            body = sketch.to_proto("fraud", "1", name).SerializeToString()
            status, answer = d.api("PUT", f"/v1/references/fraud/1?input={name}", body, "application/x-protobuf")
            assert status == 201, answer
        with StatsStream(d.stats_port) as stream:
            for seq, drifted in enumerate((False, True, True), 1):
                assert stream.send(_report(rng, seq, "fraud", drifted))[0].error == ""
                assert d.api("POST", "/v1/windows/close?wait=true")[0] == 202
        yield d
    finally:
        d.stop()


def test_the_report_opens_in_headless_chromium_with_one_chart_per_feature(detector, tmp_path):
    shot, dom = _chromium(f"{detector.url}/report/fraud", tmp_path)
    width, height, detailed = _png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    assert detailed > 300, f"the screenshot looks blank: {detailed} rows with detail"
    page = _Page(dom)
    assert sorted(page.charts) == sorted(NUMERIC + ["channel"])
    assert "script" not in page.tags and HOSTILE in page.body
    assert "alert firing since" in page.body and "2 of 4 features drifted" in page.body


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_report_routes_answer_html_and_map_errors_like_the_api(detector):
    status, kind, body = _get(f"{detector.url}/report")
    assert (status, kind) == (200, "text/html; charset=utf-8") and 'href="/report/fraud"' in body
    status, kind, body = _get(f"{detector.url}/report/fraud?version=1&features=age,score")
    assert status == 200 and sorted(_Page(body).charts) == ["age", "score"]
    for path, code, field in [("/report/ghost", 404, "no model 'ghost'"), ("/report/fraud?version=2", 404, "version"),
                              ("/report/fraud?limit=-1", 400, "limit"), ("/report/fraud?window=x", 400, "window")]:
        status, kind, body = _get(detector.url + path)
        assert (status, kind) == (code, "application/json") and field in body, (path, body)
