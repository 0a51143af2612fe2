"""The shared deliverer with an owner of its own (a canary-like event, its own JSON body, its
own metric names and user agent), against real HTTP receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest
from prometheus_client import CollectorRegistry

from sidemesh.notify import (
    SIGNATURE_HEADER,
    ConfigError,
    Deliverer,
    DeliveryMetrics,
    DeliveryPolicy,
    Outbox,
    WebhookTarget,
    rfc3339,
    sign,
)
from tests.control_plane.peers import free_port
from tests.drift.alert_peers import Hook, eventually
from tests.notify.events import body, note

SECRET = b"canary-webhook-secret"
FAST = DeliveryPolicy(timeout_s=2.0, backoff_s=0.05, backoff_max_s=0.5, sweep_s=0.2)
AGENT = "sidemesh-test-owner"


def instruments() -> DeliveryMetrics:
    return DeliveryMetrics.create(CollectorRegistry(), sent="notes_sent_total", failed="notes_failed_total",
                                  expired="notes_expired_total", pending="notes_outbox_pending", what="Notes")


def sample(metrics: DeliveryMetrics, name: str, **labels) -> float:
    """One sample's value from the four instruments (0 when it does not exist yet)."""
    for instrument in (metrics.sent, metrics.failed, metrics.expired, metrics.pending):
        for family in instrument.collect():
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return s.value
    return 0.0


def ids(requests) -> list[str]:
    return [r.headers["X-Sidemesh-Event-Id"] for r in requests]


def verify(secret: bytes, raw: bytes, header: str) -> bool:
    return hmac.compare_digest("sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest(), header)


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "control-plane.db", prefix="canary")
    yield box
    box.close()


def test_events_reach_a_receiver_that_was_down_then_failing_once_each_in_order_with_the_owners_body(outbox):
    async def main():
        port = free_port()                                   # nothing listens yet: connection refused
        metrics = instruments()
        target = WebhookTarget(f"http://127.0.0.1:{port}/events", SECRET, body)
        events = [note("started"), note("step", step=0, weight=5), note("step", step=1, weight=10), note("promoted")]
        async with Deliverer(outbox, [target], metrics, FAST, user_agent=AGENT) as deliverer:
            for e in events:
                deliverer.notify(e)
            assert sample(metrics, "notes_outbox_pending") == 4
            await eventually(lambda: sample(metrics, "notes_failed_total", target=target.name) >= 2,
                             what="refused connections")
            async with Hook(lambda n, r: 503 if n < 2 else 200, port=port) as hook:
                await hook.wait_for(lambda rs: ids(rs)[-1:] == [events[-1].id], what="the last event")
                await eventually(lambda: outbox.pending() == 0, what="the outbox to drain")
        assert ids(hook.requests)[2:] == [e.id for e in events]             # after the two 503s: each once, in order
        got = [json.loads(r.body) for r in hook.requests[2:]]
        assert [(b["kind"], b["status"], b["modelVersion"]) for b in got] == [
            ("canary", "started", "v2"), ("canary", "step", "v2"), ("canary", "step", "v2"), ("canary", "promoted", "v2")]
        assert got[1]["details"] == {"step": 0, "weight": 5} and got[0]["at"] == rfc3339(events[0].at)
        assert all(r.headers["User-Agent"] == AGENT and r.headers["Content-Type"] == "application/json"
                   for r in hook.requests)
        assert all(verify(SECRET, r.body, r.headers[SIGNATURE_HEADER]) for r in hook.requests)
        assert sample(metrics, "notes_sent_total", target=target.name, status="step") == 2
        assert sample(metrics, "notes_sent_total", target=target.name, status="promoted") == 1
        assert sample(metrics, "notes_outbox_pending") == 0
        first = next(e for e in outbox.history() if e["id"] == events[0].id)["deliveries"][0]
        assert first["state"] == "delivered" and first["attempts"] >= 4 and "HTTP 503" in first["last_error"]
    asyncio.run(main())


def test_the_signature_verifies_with_the_secret_and_not_over_other_bytes_or_another_secret(outbox):
    async def main():
        async with Hook() as hook:
            signed, plain = WebhookTarget(hook.url("/signed"), SECRET, body), WebhookTarget(hook.url("/plain"), render=body)
            async with Deliverer(outbox, [signed, plain], instruments(), FAST, user_agent=AGENT) as deliverer:
                sent = note("aborted")
                deliverer.notify(sent)
                await hook.wait_for(lambda rs: len(rs) == 2, what="both deliveries")
        by_path = {r.path: r for r in hook.requests}
        got = by_path["/signed"]
        header = got.headers[SIGNATURE_HEADER]
        assert header == sign(got.body, SECRET) and verify(SECRET, got.body, header)
        assert not verify(SECRET, got.body.replace(b'"aborted"', b'"promoted"'), header)
        assert not verify(b"another secret", got.body, header)
        assert SIGNATURE_HEADER not in by_path["/plain"].headers                # no secret, no signature
        assert by_path["/plain"].body == got.body == body(sent)                 # the stored bytes, unchanged
    asyncio.run(main())


def test_a_permanent_4xx_is_marked_failed_once_and_later_events_still_go_out(outbox):
    async def main():
        bad, good = note("started", model="bad"), note("started", model="good")
        async with Hook(lambda n, r: 422 if r.headers["X-Sidemesh-Event-Id"] == bad.id else 200) as hook:
            metrics = instruments()
            target = WebhookTarget(hook.url(), render=body)
            async with Deliverer(outbox, [target], metrics, FAST, user_agent=AGENT) as deliverer:
                deliverer.notify(bad)
                deliverer.notify(good)
                await hook.wait_for(lambda rs: good.id in ids(rs), what="the event behind the refused one")
                await eventually(lambda: outbox.pending() == 0, what="both recorded")
        assert ids(hook.requests) == [bad.id, good.id]
        history = {e["model"]: e["deliveries"][0] for e in outbox.history()}
        assert (history["bad"]["state"], history["bad"]["attempts"]) == ("failed", 1)
        assert history["bad"]["last_error"] == f"{target.name}: HTTP 422: status 422"
        assert history["good"]["state"] == "delivered"
        assert sample(metrics, "notes_failed_total", target=target.name) == 1
    asyncio.run(main())


def test_a_new_outbox_on_the_same_file_resends_what_was_still_pending(tmp_path):
    async def main():
        path = tmp_path / "control-plane.db"
        port = free_port()
        target = WebhookTarget(f"http://127.0.0.1:{port}/events", SECRET, body)
        box = Outbox(path, prefix="canary")
        metrics = instruments()
        try:
            async with Deliverer(box, [target], metrics, FAST, user_agent=AGENT) as deliverer:
                queued = [note("started"), note("step", step=0)]
                for e in queued:
                    deliverer.notify(e)
                await eventually(lambda: sample(metrics, "notes_failed_total", target=target.name), what="a refusal")
        finally:
            box.close()

        box = Outbox(path, prefix="canary")                  # the control plane starts again
        try:
            assert box.pending() == 2
            async with Hook(port=port) as hook, Deliverer(box, [target], instruments(), FAST, user_agent=AGENT):
                await hook.wait_for(lambda rs: len(rs) == 2, what="the queued events")
                await eventually(lambda: box.pending() == 0, what="both recorded")
            assert ids(hook.requests) == [e.id for e in queued]
            assert all(verify(SECRET, r.body, r.headers[SIGNATURE_HEADER]) for r in hook.requests)
        finally:
            box.close()
    asyncio.run(main())


def test_events_older_than_the_maximum_age_expire_into_the_owners_counter(outbox):
    async def main():
        target = WebhookTarget(f"http://127.0.0.1:{free_port()}/events", render=body)
        metrics = instruments()
        policy = DeliveryPolicy(timeout_s=1.0, backoff_s=0.05, backoff_max_s=0.1, max_age_s=0.3, sweep_s=10.0)
        async with Deliverer(outbox, [target], metrics, policy, user_agent=AGENT) as deliverer:
            deliverer.notify(note())
            await eventually(lambda: sample(metrics, "notes_expired_total", target=target.name) == 1, what="expiry")
        assert outbox.history()[0]["deliveries"][0]["state"] == "expired"
        assert sample(metrics, "notes_outbox_pending") == 0
    asyncio.run(main())


def test_a_repost_hook_resends_its_body_while_nothing_is_queued_and_nothing_when_it_returns_none(outbox):
    async def main():
        state = {"body": b'{"still":"running"}', "calls": 0}

        def repost() -> bytes | None:
            state["calls"] += 1
            return state["body"]
        async with Hook() as hook:
            target = WebhookTarget(hook.url(), SECRET, body, repost=repost)
            policy = DeliveryPolicy(timeout_s=2.0, backoff_s=0.05, backoff_max_s=0.5, resend_s=0.05)
            async with Deliverer(outbox, [target], instruments(), policy, user_agent=AGENT) as deliverer:
                await hook.wait_for(lambda rs: len(rs) >= 2, what="two re-posts")
                state["body"] = None
                event = note("promoted")
                deliverer.notify(event)
                await hook.wait_for(lambda rs: event.id in [r.headers.get("X-Sidemesh-Event-Id") for r in rs],
                                    what="the queued event")
                await eventually(lambda: outbox.pending() == 0, what="the event recorded")
                count, calls = len(hook.requests), state["calls"]
                await eventually(lambda: state["calls"] >= calls + 3, what="three more re-post periods")
            assert len(hook.requests) == count                  # the hook had nothing to send
        reposts = [r for r in hook.requests if "X-Sidemesh-Event-Id" not in r.headers]
        assert reposts and all(r.body == b'{"still":"running"}' and verify(SECRET, r.body, r.headers[SIGNATURE_HEADER])
                               for r in reposts)
    asyncio.run(main())


def test_metrics_registered_under_the_owners_names():
    registry = CollectorRegistry()
    metrics = DeliveryMetrics.create(registry, sent="x_sent_total", failed="x_failed_total", expired="x_expired_total",
                                     pending="x_pending")
    metrics.sent.labels("http://h:80/", "step").inc()
    metrics.pending.set(3)
    assert registry.get_sample_value("x_sent_total", {"target": "http://h:80/", "status": "step"}) == 1
    assert registry.get_sample_value("x_pending") == 3


@pytest.mark.parametrize("make, message", [
    (lambda: DeliveryPolicy(backoff_s=0), "backoff_s"),
    (lambda: DeliveryPolicy(backoff_s=2, backoff_max_s=1), "backoff_max_s"),
    (lambda: WebhookTarget("ftp://x/"), "--webhook"),
    (lambda: WebhookTarget("http://x:99999/", flag="--canary-webhook"), "--canary-webhook"),
    (lambda: WebhookTarget("http://x/", secret=b""), "--webhook-secret-file"),
    (lambda: WebhookTarget("http://x/", render="json"), "render"),
    (lambda: WebhookTarget("http://x/", repost=b"{}"), "repost"),
    (lambda: WebhookTarget("http://x/", render=lambda e: "text").request(note()), "render: expected body bytes"),
    (lambda: Deliverer(None, [WebhookTarget("http://x/")] * 2, instruments(), user_agent=AGENT), "twice"),
    (lambda: Deliverer(None, ["http://x/"], instruments(), user_agent=AGENT), "WebhookTarget"),
    (lambda: Deliverer(None, [], instruments(), user_agent=AGENT, resend_s=0), "resend_s"),
    (lambda: Deliverer(None, [], instruments(), user_agent=AGENT, retries=5), "retries"),
    (lambda: Deliverer(None, [], instruments(), user_agent=""), "user_agent"),
    (lambda: Deliverer(None, [], object(), user_agent=AGENT), "DeliveryMetrics"),
])
def test_bad_targets_and_settings_are_refused_naming_the_field(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_targets_default_their_metrics_name_and_queue_key_from_the_url():
    target = WebhookTarget("https://user:pw@hooks.example/canary?token=x")
    assert (target.name, target.key) == ("https://hooks.example:443/canary", "webhook:https://user:pw@hooks.example/canary?token=x")
    kept = WebhookTarget("http://am:9093/api/v2/alerts", name="http://am:9093", key="alertmanager:http://am:9093")
    assert (kept.name, kept.key) == ("http://am:9093", "alertmanager:http://am:9093")
    request = WebhookTarget("http://h/x", render=body).request(event := note())
    assert (request.target, request.url, request.body) == ("webhook:http://h/x", "http://h/x", body(event))
    assert dict(request.headers) == {"Content-Type": "application/json", "X-Sidemesh-Event-Id": event.id}
