"""Webhook receiver down for 30 s while the drift detector raises and resolves alerts for
two model versions: once it is back, every notification arrives, none lost, in the order
they were produced.

The detector retries with its shipped policy (there are no flags for it): exponential
backoff from 0.5 s, doubling, equal jitter, capped at 60 s. After 30 s of refused
connections the next attempt is due between about 2 s and 34 s after the receiver returns
(attempt 8 comes 31.75 s to 63.5 s after the first), so the wait for delivery allows 45 s.
"""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from drift.sketch import InputSketch
from model_server.examples import tabular_data
from tests.drift.peers import DriftProcess, StatsStream, report_of
from tests.faults.peers import SwitchableReceiver, until

MODEL = "tabular"
OUTAGE_S = 30.0       # what the issue names
WINDOW_ROWS = 200
DELIVERY_WAIT_S = 45.0


def produced(detector: DriftProcess) -> list[dict]:
    """Every notification the detector produced, oldest first."""
    status, body = detector.api("GET", "/v1/alerts?limit=100")
    assert status == 200, body
    return body["alerts"][::-1] if "alerts" in body else []


def sample(text: str, name: str) -> float:
    """The sum of a metric's samples on a Prometheus text page."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


def test_alerts_raised_while_the_webhook_receiver_is_down_for_30_s_all_arrive_in_order_after_it_returns(tmp_path, figure):
    receiver = SwitchableReceiver()
    detector = DriftProcess(tmp_path / "drift.db", ["--window-rows", WINDOW_ROWS, "--window-seconds", 0, "--alpha", 0.001,
                                                     "--fire-after", 1, "--resolve-after", 1, "--webhook", receiver.url])
    try:
        detector.start()
        train, _ = tabular_data(11, 4000)
        for version in ("1", "2"):
            reference = InputSketch.from_array(train, "FP32").to_proto(MODEL, version, "features").SerializeToString()
            status, body = detector.api("PUT", f"/v1/references/{MODEL}/{version}?input=features", reference,
                                        "application/x-protobuf")
            assert status == 201, body
        fresh, _ = tabular_data(31, 4 * WINDOW_ROWS)
        windows = {"drift": [fresh[i::4] + 1.0 for i in (0, 1)], "clean": [fresh[i::4] for i in (2, 3)]}
        # v1 fires, v2 fires, v1 resolves, v2 resolves; twice over: eight notifications.
        plan = [(verdict, version, episode) for episode in (0, 1) for verdict in ("drift", "clean") for version in ("1", "2")]

        went_down = receiver.down()
        with StatsStream(detector.stats_port) as stream:
            for seq, (verdict, version, episode) in enumerate(plan, start=1):
                (ack,) = stream.send(report_of("faults", seq, MODEL, version, windows[verdict][episode]))
                assert ack.error == ""
                until(lambda n=seq: len(produced(detector)) == n, 15, f"notification {seq} to be produced", every=0.05)
        events = produced(detector)
        assert [(e["status"], e["version"]) for e in events] == [
            ("firing", "1"), ("firing", "2"), ("resolved", "1"), ("resolved", "2")] * 2
        produced_within_s = time.monotonic() - went_down
        assert receiver.received() == []
        time.sleep(max(0.0, went_down + OUTAGE_S - time.monotonic()))  # the outage itself: a duration, not an event
        refused = sample(detector.metrics(), "sidemesh_drift_alerts_failed_total")
        assert refused >= 1  # the detector tried, and was refused
        came_up = receiver.up()
        ids = [e["id"] for e in events]
        until(lambda: {d.event["id"] for d in receiver.received()} >= set(ids), DELIVERY_WAIT_S,
              "every notification at the receiver", every=0.05)
        deliveries = receiver.received()
        pending = detector.metrics()
        final = produced(detector)
    finally:
        detector.stop()
        receiver.close()

    first_arrival: dict[str, float] = {}
    for d in deliveries:
        first_arrival.setdefault(d.event["id"], d.at)
    states = [(e["deliveries"][0]["state"], e["deliveries"][0]["attempts"]) for e in final]
    figure("webhook receiver down",
           outage_s=came_up - went_down, notifications=len(ids), delivered=len(first_arrival),
           lost=len(set(ids) - set(first_arrival)), duplicates=len(deliveries) - len(first_arrival),
           produced_within_s=produced_within_s, failed_attempts_while_down=int(refused),
           attempts_of_the_first=states[0][1],
           first_delivery_after_return_s=min(first_arrival.values()) - came_up,
           all_delivered_after_return_s=max(first_arrival.values()) - came_up)
    assert sorted(first_arrival, key=first_arrival.get) == ids  # in the order produced, none lost
    by_id = {d.event["id"]: d.event for d in deliveries}
    assert [(by_id[i]["status"], by_id[i]["model"], by_id[i]["modelVersion"]) for i in ids] == [
        (e["status"], e["model"], e["version"]) for e in events]
    assert all(d.headers.get("X-Sidemesh-Event-Id") == d.event["id"] for d in deliveries)
    assert sample(pending, "sidemesh_drift_outbox_pending") == 0
    assert all(state == "delivered" for state, _ in states), states
