"""The board's text: a compact form for logs and tests, a full one for terminals, and
events printed at once or kept for the board."""

from __future__ import annotations

import io
import re

from sidemesh.up.board import Console, describe_route, render_compact, render_full
from sidemesh.up.observe import MeshView, VersionView

ROUTE = {"backends": [{"version": "1", "weight": 50}, {"version": "2", "weight": 50}, {"version": "3", "weight": 0}],
         "mirrors": [{"version": "3", "percent": 12.5}]}
VIEW = MeshView(0.0, 5.0, 4, ROUTE, (
    VersionView("1", rps=20.0, share=0.5, shadow_rps=0.0, errors_rps=0.0, p50_s=0.0021, p99_s=0.0123, verdict="clean"),
    VersionView("2", rps=20.0, share=0.5, shadow_rps=0.0, errors_rps=0.2, p50_s=0.003, p99_s=0.02, verdict="drift",
                drifted_in_a_row=1),
    VersionView("3", rps=0.0, share=0.0, shadow_rps=5.0, errors_rps=0.0, agreed=45, compared=50, verdict="drift", firing=True),
), ("drift detector: GET http://127.0.0.1:9000/v1/models: ClientConnectorError",))


def test_a_route_reads_as_weights_and_mirrors():
    assert describe_route(ROUTE) == "1=50 2=50 3=0; mirror 3 12.5%"
    assert describe_route({"backends": [{"version": "1", "weight": 1}]}) == "1=1; no mirror"
    assert describe_route(None).startswith("no route")


def test_the_compact_board_has_the_route_and_one_line_per_version():
    text = render_compact(VIEW, ["demo phase 3/4: mirror"], alerts=["ALERT FIRING a", "ALERT FIRING b"])
    lines = text.splitlines()
    assert re.match(r"board \d\d:\d\d:\d\d: route tabular \(routing version 4\): 1=50 2=50 3=0; mirror 3 12.5%$", lines[0])
    assert lines[1] == "  version 1: 20.0 req/s (50%), p50 2.1 ms, p99 12.3 ms, 5xx 0.0/s; drift clean"
    assert lines[2] == "  version 2: 20.0 req/s (50%), p50 3.0 ms, p99 20.0 ms, 5xx 0.2/s; drift DRIFTED (1 in a row)"
    assert lines[3] == ("  version 3: 0.0 req/s (0%), p50 -, p99 -, 5xx 0.0/s, shadow 5.0/s, agreement 45/50 rows (90.0%); "
                        "drift DRIFTED, ALERT FIRING")
    assert lines[4:] == ["  ! drift detector: GET http://127.0.0.1:9000/v1/models: ClientConnectorError",
                         "  demo phase 3/4: mirror", "  alerts received: 2; last: ALERT FIRING b"]


def test_the_full_board_has_the_urls_a_table_and_the_recent_events():
    text = render_full(VIEW, ["sidemesh up: state in .sidemesh", "  V2 endpoint  http://127.0.0.1:15001"], [],
                       ["12:00:00 demo: phase 1/4"], [f"ALERT FIRING {n}" for n in range(5)])
    assert text.startswith("sidemesh up: state in .sidemesh\n  V2 endpoint  http://127.0.0.1:15001\n\nroute tabular")
    header = next(line for line in text.splitlines() if line.startswith("VERSION"))
    assert header.split() == ["VERSION", "REQ/S", "SHARE", "SHADOW/S", "5XX/S", "P50", "P99", "MIRROR", "AGREEMENT", "DRIFT"]
    assert "45/50 rows (90.0%)" in text and "recent events:\n  12:00:00 demo: phase 1/4" in text
    assert "last alerts received:\n  ALERT FIRING 2\n  ALERT FIRING 3\n  ALERT FIRING 4\n" in text
    assert text.endswith("Ctrl-C stops everything.")


def test_events_are_printed_with_their_time_unless_a_terminal_board_shows_them():
    plain = io.StringIO()
    console = Console(plain, tty=False)
    console.board_on = True
    console.event("demo: phase 1/4")
    assert re.fullmatch(r"\d\d:\d\d:\d\d demo: phase 1/4\n", plain.getvalue())

    screen = io.StringIO()
    terminal = Console(screen, tty=True)
    terminal.board_on = True
    terminal.event("ALERT FIRING x")
    assert screen.getvalue() == "" and terminal.events[-1].endswith(" ALERT FIRING x")
    terminal.redraw("board")
    assert screen.getvalue() == "\x1b[H\x1b[2Jboard\n"
