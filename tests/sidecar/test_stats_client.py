"""The stats stream client against a fake drift detector: reports arrive in order and are
acknowledged; while the detector is away they pile up to the byte bound and the oldest are
dropped and counted; when it comes back the unacknowledged ones are sent again; a report
refused with an error is counted and not sent again."""

from __future__ import annotations

import asyncio

import pytest

from drift.proto import stats_pb2 as pb
from sidecar.instruments import StatsInstruments
from sidecar.metrics import MetricSet
from sidecar.stats_client import StatsClient, StatsClientConfig
from tests.control_plane.peers import free_port
from tests.sidecar.stats_peer import StatsPeer

SOURCE = "m-1-test/0001"


def _inputs(n: int = 1, rows: int = 3, padding: int = 0) -> list[pb.InputStats]:
    return [pb.InputStats(model="m", version="1", input=f"in{i}", datatype="FP32", rows=rows,
                          feature_names=["x" * padding] if padding else []) for i in range(n)]


def _client(address: str, **overrides) -> StatsClient:
    config = StatsClientConfig(target=address, source=SOURCE, backoff_base_s=0.01, backoff_max_s=0.1, **overrides)
    return StatsClient(config, StatsInstruments(MetricSet()))


def _count(client: StatsClient, name: str) -> float:
    return getattr(client._m, name).values.get((), 0.0)


async def _wait(peer: StatsPeer, predicate, what: str):
    return await asyncio.to_thread(peer.wait_for, predicate, 30.0, what)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_reports_arrive_in_order_and_are_acknowledged():
    async def main(peer):
        client = _client(peer.address)
        client.start()
        try:
            for i in range(5):
                client.submit(_inputs(rows=i + 1), 100.0 + i, 101.0 + i)
            await client.wait_empty()
        finally:
            await client.stop()
        return client

    with StatsPeer() as peer:
        client = _run(main(peer))
    assert [r.sequence for r in peer.received] == [1, 2, 3, 4, 5]
    assert [r.inputs[0].rows for r in peer.received] == [1, 2, 3, 4, 5]
    first = peer.received[0]
    assert (first.source, first.start_unix, first.end_unix, first.dropped_reports) == (SOURCE, 100.0, 101.0, 0)
    assert (_count(client, "reports_sent"), _count(client, "reports_acked")) == (5, 5)
    assert client.queue_bytes == 0 and client.pending() == []


def test_without_the_detector_reports_pile_up_to_the_bound_dropping_the_oldest_then_arrive_when_it_comes_back():
    one = len(pb.StatsReport(source=SOURCE, sequence=1, inputs=_inputs(padding=20_000), dropped_reports=1).SerializeToString())
    peer = StatsPeer(port=free_port())

    async def main():
        client = _client(peer.address, queue_bytes=3 * one + 100)
        client.start()
        try:
            for _ in range(10):
                client.submit(_inputs(padding=20_000), 1.0, 2.0)
            assert not client.connected
            assert client.pending() == [8, 9, 10]
            assert client.queue_bytes <= 3 * one + 100
            assert client.dropped == 7 and _count(client, "reports_dropped") == 7
            peer.start()
            await client.wait_empty()
        finally:
            await client.stop()
        return client

    try:
        client = _run(main())
    finally:
        peer.stop()
    assert [r.sequence for r in peer.received] == [8, 9, 10]
    assert [r.dropped_reports for r in peer.received] == [4, 5, 6]  # as counted when each was built
    assert _count(client, "reports_acked") == 3


def test_reports_sent_but_not_acknowledged_are_sent_again_after_a_reconnect():
    peer = StatsPeer().start()
    peer.ack = False

    async def main():
        client = _client(peer.address)
        client.start()
        try:
            client.submit(_inputs(), 1.0, 2.0)
            client.submit(_inputs(), 2.0, 3.0)
            await _wait(peer, lambda p: len(p.received) == 2, "two reports, unacknowledged")
            assert client.pending() == [1, 2]
            peer.stop()  # the detector goes away before acknowledging
            peer.ack = True
            peer.start()
            await client.wait_empty()
        finally:
            await client.stop()
        return client

    try:
        client = _run(main())
    finally:
        peer.stop()
    assert [r.sequence for r in peer.received] == [1, 2, 1, 2]
    assert sorted(peer.applied) == [(SOURCE, 1), (SOURCE, 2)]
    assert (_count(client, "reports_sent"), _count(client, "reports_acked")) == (4, 2)


def test_a_report_refused_with_an_error_is_counted_and_not_sent_again(capsys):
    async def main(peer):
        client = _client(peer.address)
        client.start()
        try:
            for _ in range(3):
                client.submit(_inputs(), 1.0, 2.0)
            await client.wait_empty()
        finally:
            await client.stop()
        return client

    with StatsPeer(reject=lambda r: "input 'in0': unknown model" if r.sequence == 2 else "") as peer:
        client = _run(main(peer))
    assert [r.sequence for r in peer.received] == [1, 2, 3]
    assert (_count(client, "reports_acked"), _count(client, "reports_rejected")) == (2, 1)
    assert "refused statistics report 2: input 'in0': unknown model" in capsys.readouterr().out


def test_a_window_too_big_for_one_report_is_split_per_input():
    async def main(peer):
        client = _client(peer.address, max_report_bytes=30_000)
        client.start()
        try:
            client.submit(_inputs(n=3, padding=12_000), 1.0, 2.0)
            await client.wait_empty()
        finally:
            await client.stop()

    with StatsPeer() as peer:
        _run(main(peer))
    assert [(r.sequence, [i.input for i in r.inputs]) for r in peer.received] == [(1, ["in0", "in1"]), (2, ["in2"])]


def test_stop_sends_what_is_queued_within_the_grace_and_returns_when_the_detector_is_away():
    async def main(address):
        client = _client(address)
        client.start()
        await asyncio.sleep(0)
        client.submit(_inputs(), 1.0, 2.0)
        await client.stop()
        return client

    with StatsPeer() as peer:
        _run(main(peer.address))
        peer.wait_for(lambda p: p.received, what="the last report")
    absent = _run(main(f"127.0.0.1:{free_port()}"))
    assert absent.pending() == [1] and not absent.connected


@pytest.mark.parametrize("field, value", [("queue_bytes", 0), ("backoff_base_s", -1.0), ("stop_grace_s", float("nan"))])
def test_the_config_refuses_values_out_of_range(field, value):
    with pytest.raises(ValueError, match=field):
        StatsClientConfig(target="127.0.0.1:1", source="s", **{field: value})
