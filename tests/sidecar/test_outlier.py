"""Outlier ejection (Envoy's consecutive-5xx rule with growing ejection time) and the retry budget."""

from __future__ import annotations

import random

from sidecar.budget import RetryBudget
from sidecar.outlier import OutlierDetector
from sidecar.table import Cluster, Endpoint, OutlierPolicy

BAD, GOOD = Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2)
CLUSTER = Cluster("m|1", (BAD, GOOD), outlier=OutlierPolicy(consecutive_5xx=3, base_ejection_s=10, max_ejection_s=25))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _detector(clock: Clock, ejected: list) -> OutlierDetector:
    return OutlierDetector(OutlierPolicy(), on_eject=lambda c, e: ejected.append(e), clock=clock, rand=random.Random(1).random)


def test_an_endpoint_is_ejected_after_consecutive_failures_and_returns_after_the_ejection_time():
    clock, ejected = Clock(), []
    detector = _detector(clock, ejected)
    for _ in range(3):
        detector.record(CLUSTER, BAD, failed=True)
    assert ejected == [BAD]
    assert {detector.pick(CLUSTER) for _ in range(50)} == {GOOD}
    clock.now += 10.01
    assert {detector.pick(CLUSTER) for _ in range(50)} == {BAD, GOOD}


def test_a_success_resets_the_count_and_repeat_ejections_last_longer_up_to_the_cap():
    clock, ejected = Clock(), []
    detector = _detector(clock, ejected)
    detector.record(CLUSTER, BAD, True)
    detector.record(CLUSTER, BAD, True)
    detector.record(CLUSTER, BAD, False)
    detector.record(CLUSTER, BAD, True)
    assert ejected == []
    durations = []
    for _ in range(3):
        for _ in range(3):
            detector.record(CLUSTER, BAD, True)
        start = clock.now
        while detector.ejected():
            clock.now += 1
        durations.append(clock.now - start)
    assert durations == [10, 20, 25]


def test_when_every_endpoint_is_ejected_all_are_used_rather_than_none():
    clock = Clock()
    detector = _detector(clock, [])
    for endpoint in (BAD, GOOD):
        for _ in range(3):
            detector.record(CLUSTER, endpoint, True)
    assert detector.pick(CLUSTER) in (BAD, GOOD)
    assert detector.panics_total == 1


def test_shadow_copies_get_no_endpoint_while_every_one_is_ejected_and_get_one_back_after():
    clock = Clock()
    detector = _detector(clock, [])
    for endpoint in (BAD, GOOD):
        for _ in range(3):
            detector.record(CLUSTER, endpoint, True)
    assert detector.pick(CLUSTER, panic=False) is None
    assert detector.panics_total == 0  # no panic mode for copies: nothing was sent
    clock.now += 10
    assert detector.pick(CLUSTER, panic=False) in (BAD, GOOD)


def test_a_retry_prefers_another_endpoint():
    detector = _detector(Clock(), [])
    assert all(detector.pick(CLUSTER, avoid=BAD) == GOOD for _ in range(50))


def test_the_retry_budget_allows_a_share_of_requests_in_flight_with_a_floor():
    budget = RetryBudget(ratio=0.2, min_concurrency=3)
    assert [budget.acquire(in_flight=5) for _ in range(4)] == [True, True, True, False]
    budget.release()
    assert budget.acquire(in_flight=5)
    assert [budget.acquire(in_flight=50) for _ in range(8)] == [True] * 7 + [False]
