"""The canary's pure parts: the spec, the routes it writes, the gates, the ledger of reports."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from control_plane.canary.gates import DriftView, judge
from control_plane.canary.ledger import LoadLedger, Tally
from control_plane.canary.measure import Measurement, quantile
from control_plane.canary.plan import SCALE, promoted_route, shadow_route, step_route
from control_plane.canary.spec import CanarySpec
from control_plane.errors import ValidationError
from control_plane.routing import Route
from sidemesh import load_metrics as lm

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from envoy_data_plane.envoy.config.endpoint.v3 import ClusterStats, EndpointLoadMetricStats, UpstreamLocalityStats


# --- spec ----------------------------------------------------------------------------------

def test_a_spec_needs_only_the_candidate_and_fills_in_defaults():
    spec = CanarySpec.from_dict({"to": "v2"})
    assert spec.steps == (5, 10, 25, 50, 100) and spec.interval_s == 60 and spec.max_error_ratio == 0.01
    assert spec.drift is True and spec.shadow_first is False and spec.timeout_s == 600
    assert CanarySpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("doc, field, expected", [
    ({}, "to", "is required"),
    ({"to": "v 2"}, "to", "version name"),
    ({"to": "v2", "steps": []}, "steps", "non-empty"),
    ({"to": "v2", "steps": "5,10"}, "steps", "list"),
    ({"to": "v2", "steps": [10, 5]}, "steps[1]", "increasing"),
    ({"to": "v2", "steps": [0, 5]}, "steps[0]", "between 1 and 100"),
    ({"to": "v2", "steps": [50, 101]}, "steps[1]", "between 1 and 100"),
    ({"to": "v2", "interval_s": 0}, "interval_s", "greater than 0"),
    ({"to": "v2", "max_error_ratio": 1.5}, "max_error_ratio", "at most 1"),
    ({"to": "v2", "max_p99_ms": -1}, "max_p99_ms", "greater than 0"),
    ({"to": "v2", "min_agreement": float("nan")}, "min_agreement", "number"),
    ({"to": "v2", "min_requests": 0}, "min_requests", "between 1"),
    ({"to": "v2", "mirror_percent": 0}, "mirror_percent", "greater than 0"),
    ({"to": "v2", "drift": "yes"}, "drift", "true or false"),
    ({"to": "v2", "interval_s": 60, "step_timeout_s": 30}, "step_timeout_s", "at least interval_s"),
    ({"to": "v2", "stepz": [1]}, "stepz", "unknown field"),
])
def test_a_bad_spec_names_the_field_and_what_was_expected(doc, field, expected):
    with pytest.raises(ValidationError) as err:
        CanarySpec.from_dict(doc)
    assert err.value.field == field and expected in err.value.message


# --- routes ---------------------------------------------------------------------------------



def _base() -> Route:
    return Route.from_dict("m", {"backends": [{"version": "v1", "weight": 3}, {"version": "v0", "weight": 1},
                                              {"version": "v9", "weight": 0}],
                                 "mirrors": [{"version": "v9", "percent": 5}], "timeout_ms": 1234})


def test_a_step_gives_the_candidate_its_share_and_the_baseline_keeps_its_proportions():
    route = step_route(_base(), "v2", 10)
    assert route.weights == {"v1": 6750, "v0": 2250, "v9": 0, "v2": 1000}
    assert sum(route.weights.values()) == SCALE
    assert route.timeout_ms == 1234 and [m.version for m in route.mirrors] == ["v9"]  # the rest is untouched


def test_promotion_gives_the_candidate_everything_and_keeps_the_others_at_weight_zero():
    assert promoted_route(_base(), "v2").weights == {"v1": 0, "v0": 0, "v9": 0, "v2": SCALE}


def test_the_shadow_phase_mirrors_to_the_candidate_without_changing_the_split():
    route = shadow_route(_base(), "v2", 50)
    assert route.weights == {"v1": 3, "v0": 1, "v9": 0, "v2": 0}
    assert {(m.version, m.percent) for m in route.mirrors} == {("v9", 5), ("v2", 50)}


def test_a_candidate_that_already_had_traffic_is_taken_out_of_the_split_while_it_is_a_shadow():
    base = Route.from_dict("m", {"backends": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}]})
    route = shadow_route(base, "v2", 100)
    assert route.weights == {"v1": SCALE, "v2": 0} and route.mirrors[0].version == "v2"


def test_rounding_never_loses_weight():
    base = Route.from_dict("m", {"backends": [{"version": v, "weight": 1} for v in ("a", "b", "c")]})
    for percent in (1, 5, 33, 50, 99):
        weights = step_route(base, "v2", percent).weights
        assert sum(weights.values()) == SCALE and weights["v2"] == percent * 100


# --- gates ------------------------------------------------------------------------------------

SPEC = CanarySpec(to="v2", interval_s=10, min_requests=100, max_error_ratio=0.01, max_p99_ms=50, min_agreement=0.95)


def test_a_step_waits_for_its_sample_then_for_its_interval_then_passes():
    assert judge(SPEC, "step", Measurement(requests=99), 20, None).outcome == "wait"
    good = Measurement(requests=200, errors=1, p99_s=0.02)
    assert judge(SPEC, "step", good, 5, None).outcome == "wait"
    verdict = judge(SPEC, "step", good, 10, None)
    assert verdict.outcome == "pass" and all(g.ok for g in verdict.gates)


def test_a_failed_gate_fails_the_step_as_soon_as_the_sample_is_reached():
    verdict = judge(SPEC, "step", Measurement(requests=100, errors=5, p99_s=0.02), 1, None)
    assert verdict.outcome == "fail" and verdict.failed_gate == "error_ratio" and "5/100" in verdict.reason
    verdict = judge(SPEC, "step", Measurement(requests=100, p99_s=0.2), 1, None)
    assert verdict.failed_gate == "p99" and "200 ms" in verdict.reason


def test_too_little_traffic_fails_at_the_timeout():
    verdict = judge(SPEC, "step", Measurement(requests=3), SPEC.timeout_s, None)
    assert verdict.outcome == "fail" and verdict.failed_gate == "samples" and "only 3" in verdict.reason


def test_the_shadow_phase_gates_on_agreement_shadow_errors_and_shadow_latency():
    ok = Measurement(shadow_answers=100, compared_rows=400, agreed_rows=396, shadow_p99_s=0.01)
    assert judge(SPEC, "shadow", ok, 10, None).outcome == "pass"
    disagree = Measurement(shadow_answers=100, compared_rows=400, agreed_rows=300, shadow_p99_s=0.01)
    assert judge(SPEC, "shadow", disagree, 1, None).failed_gate == "agreement"
    failing = Measurement(shadow_answers=90, shadow_errors=10, compared_rows=360, agreed_rows=360)
    assert judge(SPEC, "shadow", failing, 1, None).failed_gate == "shadow_errors"
    slow = Measurement(shadow_answers=100, compared_rows=400, agreed_rows=400, shadow_p99_s=0.3)
    assert judge(SPEC, "shadow", slow, 1, None).failed_gate == "p99"
    unlabelled = Measurement(shadow_answers=100)
    verdict = judge(SPEC, "shadow", unlabelled, 1, None)
    assert verdict.failed_gate == "agreement" and "--min-agreement 0" in verdict.reason


def test_mismatched_answers_count_as_disagreement():
    m = Measurement(shadow_answers=100, compared_rows=90, agreed_rows=90, mismatches=10)
    assert m.agreement == pytest.approx(0.9)


def test_a_drift_verdict_fails_at_once_and_an_unreachable_detector_holds_the_step():
    good = Measurement(requests=200, p99_s=0.01)
    drifted = judge(SPEC, "step", Measurement(), 0.5, DriftView(latest="drift", drift_at=1.0, detail="3 drifted"))
    assert drifted.outcome == "fail" and drifted.failed_gate == "drift" and "3 drifted" in drifted.reason
    assert judge(SPEC, "step", good, 20, DriftView(error="refused")).outcome == "wait"
    late = judge(SPEC, "step", good, SPEC.timeout_s, DriftView(error="refused"))
    assert late.outcome == "fail" and late.failed_gate == "drift" and "refused" in late.reason
    assert judge(SPEC, "step", good, 20, DriftView(latest="clean")).outcome == "pass"


# --- ledger ------------------------------------------------------------------------------------

def _stats(cluster: str, issued: int, errors: int, buckets: dict[int, int], **shadow: tuple[int, float]) -> ClusterStats:
    metrics = [EndpointLoadMetricStats(metric_name=lm.bucket_name(lm.LATENCY, i), num_requests_finished_with_metric=n,
                                       total_metric_value=0.0) for i, n in buckets.items()]
    metrics += [EndpointLoadMetricStats(metric_name=name, num_requests_finished_with_metric=n, total_metric_value=v)
                for name, (n, v) in shadow.items()]
    return ClusterStats(cluster_name=cluster, upstream_locality_stats=[UpstreamLocalityStats(
        total_issued_requests=issued, total_successful_requests=issued - errors, total_error_requests=errors,
        load_metric_stats=metrics)])


def test_the_ledger_sums_the_reports_of_a_window_and_only_those():
    ledger = LoadLedger()
    ledger.add("m|v2", Tally.from_cluster_stats(_stats("m|v2", 100, 2, {4: 99, 7: 1})), at=10.0, covers_s=1.0)
    ledger.add("m|v2", Tally.from_cluster_stats(_stats("m|v2", 50, 0, {4: 50})), at=12.0, covers_s=2.0)
    ledger.add("m|v1", Tally.from_cluster_stats(_stats("m|v1", 500, 50, {4: 500})), at=12.0, covers_s=2.0)
    ledger.add("m|v2", Tally.from_cluster_stats(_stats("m|v2", 1000, 1000, {4: 1000})), at=20.0, covers_s=8.0)
    m = asyncio.run(ledger.measure("m", "v2", 9.0, 15.0))
    assert (m.requests, m.errors) == (150, 2)
    assert m.p99_s == pytest.approx(quantile(0.99, lm.LATENCY_BOUNDS, [0, 0, 0, 0, 149, 0, 0, 1] + [0] * 8))
    assert asyncio.run(ledger.measure("m", "v2", 12.0, 30.0)).requests == 1000  # covers (12, 20]
    # A report that began before the window (it straddles a change of weights) is left out.
    assert asyncio.run(ledger.measure("m", "v2", 9.5, 30.0)).requests == 1050
    assert not ledger.add("no-separator", Tally())


def test_shadow_rows_come_from_the_sums_and_nonsense_is_clamped():
    stats = _stats("m|v3", 0, 0, {}, **{"sidemesh.shadow.answers": (40, 40.0), "sidemesh.shadow.errors": (2, 2.0),
                                        "sidemesh.shadow.compared_rows": (40, 160.0), "sidemesh.shadow.agreed_rows": (40, 999.0),
                                        "sidemesh.shadow.mismatches": (1, 1.0), "sidemesh.future.metric": (5, 5.0)})
    m = Tally.from_cluster_stats(stats).measurement()
    assert (m.shadow_answers, m.shadow_errors, m.compared_rows, m.agreed_rows, m.mismatches) == (40, 2, 160, 160, 1)


def test_quantile_interpolates_like_prometheus():
    bounds = (0.1, 0.2, 0.4)
    assert quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(0.15)
    assert quantile(0.99, bounds, [0, 0, 0, 5]) == 0.4  # in +Inf: the highest finite bound
    assert quantile(0.99, bounds, [0, 0, 0, 0]) is None
