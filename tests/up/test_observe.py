"""The board's numbers: rates from the difference of two scrapes, the observed split
without double counts, latency quantiles from histogram buckets."""

from __future__ import annotations

import pytest

from sidemesh.up.observe import Sample, mesh_view, parse_sidecar, quantile


def _page(requests: dict | None = None, buckets: dict | None = None, mirrored: dict | None = None,
          compared: dict | None = None, agreed: dict | None = None) -> str:
    """A sidecar's /metrics page in the Prometheus text format, as sidecar/metrics.py writes it."""
    requests, buckets, mirrored, compared, agreed = (t or {} for t in (requests, buckets, mirrored, compared, agreed))
    lines = ["# TYPE sidemesh_requests_total counter"]
    lines += [f'sidemesh_requests_total{{model="tabular",version="{v}",code="{c}"}} {n}' for (v, c), n in requests.items()]
    lines.append('sidemesh_requests_total{model="_other",version="1",code="404"} 1000')  # another model: not ours
    lines.append("# TYPE sidemesh_request_duration_seconds histogram")
    for v, pairs in buckets.items():
        lines += [f'sidemesh_request_duration_seconds_bucket{{model="tabular",version="{v}",le="{le}"}} {n}' for le, n in pairs]
        lines += [f'sidemesh_request_duration_seconds_count{{model="tabular",version="{v}"}} {pairs[-1][1]}',
                  f'sidemesh_request_duration_seconds_sum{{model="tabular",version="{v}"}} 1.0']
    lines.append("# TYPE sidemesh_mirror_requests_total counter")
    lines += [f'sidemesh_mirror_requests_total{{model="tabular",version="{v}",shadow_version="{s}",outcome="{o}"}} {n}'
              for (v, s, o), n in mirrored.items()]
    for name, table in (("compared", compared), ("agreed", agreed)):
        lines.append(f"# TYPE sidemesh_mirror_{name}_rows_total counter")
        lines += [f'sidemesh_mirror_{name}_rows_total{{model="tabular",version="{v}",shadow_version="{s}"}} {n}'
                  for (v, s), n in table.items()]
    return "\n".join(lines) + "\n"


def _sample(at: float, pages: dict[str, str]) -> Sample:
    sample = Sample(at)
    for sidecar, text in pages.items():
        parse_sidecar(sample, sidecar, text)
    return sample


EMPTY = {"1": _page(), "2": _page(), "3": _page()}


def test_the_split_counts_each_request_once_and_leaves_shadow_copies_out():
    later = _sample(10.0, {
        # version 1's sidecar: 900 served here, 100 forwarded to version 2; half of them copied to 3
        "1": _page({("1", "200"): 900, ("2", "200"): 100}, mirrored={("1", "3", "ok"): 450, ("2", "3", "ok"): 50,
                                                                     ("1", "3", "dropped_queue_full"): 7},
                   compared={("1", "3"): 3600, ("2", "3"): 400}, agreed={("1", "3"): 3000, ("2", "3"): 380}),
        "2": _page({("2", "200"): 100}),  # the forwarded ones, served here after the hop
        "3": _page({("3", "200"): 500}),  # the shadow copies
    })
    view = mesh_view(_sample(0.0, EMPTY), later, 7, {"backends": []}, {"2": {"verdict": "drift", "alert": {"firing": True}}})
    v1, v2, v3 = view.versions
    assert (v1.rps, v2.rps, v3.rps) == (90.0, 10.0, 0.0)
    assert (v1.share, v2.share, v3.share) == (0.9, 0.1, 0.0)
    assert v3.shadow_rps == 50.0  # dropped copies never reached it
    assert (v3.agreed, v3.compared) == (3380, 4000)
    assert (v2.verdict, v2.firing, v1.verdict) == ("drift", True, None)
    assert view.window_s == 10.0 and view.route_version == 7


def test_a_restarted_sidecar_counts_from_zero_and_an_unscraped_one_not_at_all():
    before = _sample(0.0, {"1": _page({("1", "200"): 1000, ("1", "503"): 10}), "2": _page({("2", "200"): 40}), "3": _page()})
    after = _sample(5.0, {"1": _page({("1", "200"): 50, ("1", "503"): 5}), "3": _page()})  # 1 restarted; 2 did not answer
    v1, v2, _ = mesh_view(before, after, None, None, {}).versions
    assert (v1.rps, v1.errors_rps) == (11.0, 1.0)  # 55 answers since the restart, 5 of them 503
    assert v2.rps == 0.0


def test_latency_quantiles_come_from_the_bucket_increases_of_every_sidecar():
    first = [("0.005", 10), ("0.01", 10), ("0.025", 10), ("+Inf", 10)]
    before = _sample(0.0, {"1": _page(buckets={"1": first}), "2": _page(), "3": _page()})
    after = _sample(5.0, {"1": _page(buckets={"1": [("0.005", 60), ("0.01", 90), ("0.025", 99), ("+Inf", 100)]}),
                          "2": _page(buckets={"1": [("0.005", 0), ("0.01", 10), ("0.025", 10), ("+Inf", 10)]}), "3": _page()})
    v1 = mesh_view(before, after, None, None, {}).versions[0]
    # increases: 50 below 5 ms, 40 more below 10 ms (30 + 10 from sidecar 2), 9 below 25 ms, 1 above
    assert v1.p50_s == pytest.approx(0.005)
    assert v1.p99_s == pytest.approx(0.025)


def test_quantile_interpolates_within_the_bucket_as_prometheus_does():
    buckets = [(0.005, 50.0), (0.01, 90.0), (0.025, 99.0), (float("inf"), 100.0)]
    assert quantile(0.25, buckets) == pytest.approx(0.0025)
    assert quantile(0.7, buckets) == pytest.approx(0.0075)
    assert quantile(0.995, buckets) == 0.025  # in +Inf: the highest finite bound
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.5, []) is None
