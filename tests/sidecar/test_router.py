"""Routing decisions: hop marks, pins, sticky keys, weighted shares, mirror shares."""

from __future__ import annotations

import math
import random

import pytest

from sidecar.router import HOP_HEADER, PIN_HEADER, RouteRefused, Router
from sidecar.table import Cluster, Endpoint, MirrorTarget, ModelRoute, RoutingTable, Target


def _table(weights: dict[str, int], sticky: bytes | None = None, mirrors=()) -> RoutingTable:
    targets = tuple(Target(v, f"m|{v}", w, ((HOP_HEADER, v.encode()),)) for v, w in weights.items())
    route = ModelRoute("m", targets, mirrors=tuple(mirrors), sticky_key=sticky)
    clusters = {f"m|{v}": Cluster(f"m|{v}", (Endpoint("127.0.0.1", 9000 + i),)) for i, v in enumerate([*weights, "3"])}
    return RoutingTable({"m": route}, clusters, {})


def _router(table: RoutingTable, seed: int = 7) -> Router:
    router = Router("m", "1", rand=random.Random(seed).random)
    router.table = table
    return router


def no_headers(name: bytes) -> None:
    return None


def test_weighted_split_matches_the_weights_within_binomial_tolerance():
    router = _router(_table({"1": 70, "2": 30}))
    n = 20_000
    ones = sum(router.decide("m", None, no_headers).version == "1" for _ in range(n))
    assert abs(ones - 0.7 * n) < 5 * math.sqrt(n * 0.7 * 0.3)


def test_the_own_version_is_served_locally_and_others_go_to_their_cluster_with_the_hop_mark():
    router = _router(_table({"1": 50, "2": 50}))
    decisions = [router.decide("m", None, no_headers) for _ in range(200)]
    local = [d for d in decisions if d.local]
    remote = [d for d in decisions if not d.local]
    assert local and remote
    assert all(d.version == "1" and d.cluster is None for d in local)
    assert all(d.version == "2" and d.cluster.name == "m|2" and d.headers == ((HOP_HEADER, b"2"),) for d in remote)


def test_a_hop_marked_request_is_always_served_locally_and_never_split_again():
    router = _router(_table({"2": 100}))
    decision = router.decide("m", None, lambda name: b"2" if name == HOP_HEADER else None)
    assert decision.local and decision.route is None


def test_a_model_without_a_route_goes_to_the_local_model_server():
    decision = _router(_table({"2": 100})).decide("other", None, no_headers)
    assert decision.local and decision.version == "1"


def test_the_pin_header_and_the_path_version_override_the_weights():
    router = _router(_table({"1": 100, "2": 0}))
    assert router.decide("m", None, lambda n: b"2" if n == PIN_HEADER else None).version == "2"
    assert router.decide("m", "2", no_headers).version == "2"


def test_a_shadow_with_weight_zero_can_still_be_pinned_while_it_has_a_cluster():
    router = _router(_table({"1": 100}))
    decision = router.decide("m", None, lambda n: b"3" if n == PIN_HEADER else None)
    assert decision.version == "3" and decision.cluster.name == "m|3" and decision.headers == ((HOP_HEADER, b"3"),)


def test_pinning_an_unknown_version_is_refused_naming_the_header_or_the_path():
    router = _router(_table({"1": 50, "2": 50}))
    with pytest.raises(RouteRefused) as header:
        router.decide("m", None, lambda n: b"9" if n == PIN_HEADER else None)
    assert header.value.status == 400 and "x-sidemesh-version header" in str(header.value) and "'9'" in str(header.value)
    with pytest.raises(RouteRefused) as path:
        router.decide("m", "9", no_headers)
    assert path.value.status == 404 and "request path" in str(path.value) and "known versions: 1, 2" in str(path.value)


def test_a_sticky_key_keeps_its_version_and_shares_across_keys_match_the_weights():
    router = _router(_table({"1": 80, "2": 20}, sticky=b"x-user"))
    first = {}
    for key in range(5_000):
        value = str(key).encode()
        first[key] = router.decide("m", None, lambda n, v=value: v if n == b"x-user" else None).version
    for key in range(0, 5_000, 7):  # asked again, same answer
        value = str(key).encode()
        assert router.decide("m", None, lambda n, v=value: v if n == b"x-user" else None).version == first[key]
    twos = sum(v == "2" for v in first.values())
    assert abs(twos - 1_000) < 5 * math.sqrt(5_000 * 0.2 * 0.8)


def test_raising_a_canary_weight_moves_keys_only_towards_the_canary():
    before = _router(_table({"1": 90, "2": 10}, sticky=b"k"))
    after = _router(_table({"1": 50, "2": 50}, sticky=b"k"))
    for key in range(2_000):
        value = str(key).encode()
        old = before.decide("m", None, lambda n, v=value: v).version
        new = after.decide("m", None, lambda n, v=value: v).version
        assert not (old == "2" and new == "1")


def test_each_mirror_gets_its_share_of_requests():
    table = _table({"1": 100}, mirrors=[MirrorTarget("3", "m|3", 250_000)])
    router = _router(table)
    route = table.routes["m"]
    n = 20_000
    copies = sum(len(router.mirrors(route)) for _ in range(n))
    assert abs(copies - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75)


def test_metric_labels_name_routed_models_and_our_own_and_bucket_the_rest():
    router = _router(_table({"1": 100}))
    assert [router.label(m) for m in ("m", None, "unknown-from-a-client")] == ["m", "m", "_other"]
