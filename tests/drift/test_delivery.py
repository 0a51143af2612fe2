"""Alert delivery against real HTTP receivers on 127.0.0.1: retries, permanent refusals,
signatures checked the way docs/drift.md tells receivers to, restarts, expiry, and
re-posting firing alerts to an Alertmanager endpoint."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
from pathlib import Path

import pytest

from drift import alert_format as fmt
from drift.delivery import AlertmanagerTarget, Deliverer, DeliveryPolicy, WebhookTarget, target_name
from drift.errors import ConfigError
from drift.hysteresis import AlertEvent
from drift.metrics import DriftMetrics
from sidemesh.notify import Outbox
from tests.control_plane.peers import free_port
from tests.drift.alert_peers import Hook, eventually

SECRET = b"s3cret-shared-with-the-receiver"
FAST = DeliveryPolicy(timeout_s=2.0, backoff_s=0.05, backoff_max_s=1.0, sweep_s=0.2)


def event(status: str = "firing", model: str = "fraud", version: str = "2", at: float = 1_700_000_000.0) -> AlertEvent:
    details = {"window": {"rows": 500}, "features": [{"input": "x", "index": 0, "name": "age", "decision": "ks",
                                                      "score": 0.4, "p_value": 1e-6, "adjusted_p_value": 1e-5}]}
    return AlertEvent.new(status, model, version, at - 60, at if status == "resolved" else None, at, f"{model} {status}",
                          details)


def sample(metrics: DriftMetrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def ids(requests) -> list[str]:
    return [r.headers["X-Sidemesh-Event-Id"] for r in requests]


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "state.db")
    yield box
    box.close()


# --- the receiver a user would write from docs/drift.md ------------------------------------

def verify(secret: bytes, body: bytes, header: str) -> bool:
    """body: the raw request bytes; header: the X-Sidemesh-Signature value."""
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def documented_receiver(secret: bytes):
    """401 unless the signature verifies; 2xx once the notification is taken."""
    def script(n, request):
        return 200 if verify(secret, request.body, request.headers.get("X-Sidemesh-Signature", "")) else 401
    return script


def test_a_receiver_written_from_the_docs_verifies_the_signature_and_a_tampered_body_fails(outbox):
    async def main():
        async with Hook(documented_receiver(SECRET)) as hook:
            metrics = DriftMetrics()
            target = WebhookTarget(hook.url(), SECRET)
            async with Deliverer(outbox, [target], metrics, list) as deliverer:
                sent = event()
                deliverer.notify(sent)
                got, = await hook.wait_for(lambda rs: rs, what="the notification")
            assert sample(metrics, "sidemesh_drift_alerts_sent_total", target=target.name, status="firing") == 1
            body = json.loads(got.body)
            assert list(body) == ["version", "kind", "status", "id", "model", "modelVersion", "startsAt", "endsAt", "at",
                                  "summary", "details"]
            assert (body["version"], body["kind"], body["status"], body["id"], body["model"], body["modelVersion"]) == (
                "1", "drift", "firing", sent.id, "fraud", "2")
            assert (body["startsAt"], body["endsAt"], body["details"]) == ("2023-11-14T22:12:20.000Z", None, sent.details)
            assert got.headers["Content-Type"] == "application/json" and got.headers["X-Sidemesh-Event-Id"] == sent.id

            header = got.headers["X-Sidemesh-Signature"]
            assert verify(SECRET, got.body, header)
            assert not verify(SECRET, got.body.replace(b'"firing"', b'"resolved"', 1), header)
            assert not verify(b"another secret", got.body, header)
    asyncio.run(main())


def test_a_wrong_secret_is_refused_for_good_and_not_retried(outbox):
    async def main():
        async with Hook(documented_receiver(b"the receiver's secret")) as hook:
            metrics = DriftMetrics()
            target = WebhookTarget(hook.url(), SECRET)
            async with Deliverer(outbox, [target], metrics, list, FAST) as deliverer:
                deliverer.notify(event())
                await eventually(lambda: outbox.history(limit=1)[0]["deliveries"][0]["state"] == "failed", what="failed")
            assert len(hook.requests) == 1
            delivery = outbox.history()[0]["deliveries"][0]
            assert (delivery["attempts"], delivery["last_error"]) == (1, f"{target.name}: HTTP 401: status 401")
            assert sample(metrics, "sidemesh_drift_alerts_failed_total", target=target.name) == 1
            assert outbox.pending() == 0
    asyncio.run(main())


def test_a_permanent_400_is_recorded_and_the_notifications_behind_it_still_go_out(outbox):
    async def main():
        bad, good = event(model="bad"), event(model="good")
        async with Hook(lambda n, r: 400 if r.headers["X-Sidemesh-Event-Id"] == bad.id else 200) as hook:
            metrics = DriftMetrics()
            target = WebhookTarget(hook.url())
            async with Deliverer(outbox, [target], metrics, list, FAST) as deliverer:
                deliverer.notify(bad)
                deliverer.notify(good)
                await hook.wait_for(lambda rs: good.id in ids(rs), what="the notification behind the refused one")
            assert ids(hook.requests) == [bad.id, good.id]         # the 400 was tried once, never again
            history = {e["model"]: e["deliveries"][0] for e in outbox.history()}
            assert (history["bad"]["state"], history["bad"]["attempts"]) == ("failed", 1)
            assert history["bad"]["last_error"].endswith("HTTP 400: status 400")
            assert history["good"]["state"] == "delivered"
            assert "X-Sidemesh-Signature" not in hook.requests[0].headers           # no secret, no signature
            assert sample(metrics, "sidemesh_drift_outbox_pending") == 0
    asyncio.run(main())


def test_a_receiver_that_is_down_then_failing_then_back_gets_every_event_in_order(outbox):
    async def main():
        port = free_port()                                   # nothing listens yet: connection refused
        metrics = DriftMetrics()
        target = WebhookTarget(f"http://127.0.0.1:{port}/hook", SECRET)
        events = [event(model="a"), event(model="b"), event("resolved", model="a")]
        async with Deliverer(outbox, [target], metrics, list, FAST) as deliverer:
            for e in events:
                deliverer.notify(e)
            assert sample(metrics, "sidemesh_drift_outbox_pending") == 3
            await eventually(lambda: sample(metrics, "sidemesh_drift_alerts_failed_total", target=target.name) >= 3,
                             what="three refused connections")
            # Back, but failing its first two answers with 503, then healthy.
            async with Hook(lambda n, r: 503 if n < 2 else 200, port=port) as hook:
                await hook.wait_for(lambda rs: len(set(ids(rs))) == 3 and ids(rs)[-1] == events[2].id,
                                    what="all three events")
                await eventually(lambda: outbox.pending() == 0, what="the outbox to drain")
        delivered = [i for n, i in enumerate(ids(hook.requests)) if n >= 2]       # after the two 503s
        assert delivered == [e.id for e in events]                                 # every event, once, in order
        assert all(verify(SECRET, r.body, r.headers["X-Sidemesh-Signature"]) for r in hook.requests)
        first = next(e for e in outbox.history() if e["id"] == events[0].id)["deliveries"][0]
        assert first["state"] == "delivered" and first["attempts"] >= 4 and "HTTP 503" in first["last_error"]
        assert sample(metrics, "sidemesh_drift_alerts_sent_total", target=target.name, status="firing") == 2
        assert sample(metrics, "sidemesh_drift_alerts_sent_total", target=target.name, status="resolved") == 1
        assert sample(metrics, "sidemesh_drift_outbox_pending") == 0
    asyncio.run(main())


def test_retries_back_off_with_growing_delays_and_honour_retry_after(outbox):
    async def main():
        policy = DeliveryPolicy(timeout_s=2.0, backoff_s=0.08, backoff_max_s=2.0)

        def script(n, r):
            if n == 0:
                return 429, {"Retry-After": "0.5"}      # longer than the first backoff (0.04-0.08 s)
            return 503 if n < 4 else 200
        async with Hook(script) as hook:
            async with Deliverer(outbox, [WebhookTarget(hook.url())], DriftMetrics(), list, policy) as deliverer:
                deliverer.notify(event())
                await hook.wait_for(lambda rs: len(rs) == 5, timeout=15, what="five attempts")
                await eventually(lambda: outbox.pending() == 0, what="delivery to be recorded")
        times = [r.at for r in hook.requests]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert 0.5 - 0.01 <= gaps[0] < 1.0, gaps
        # Equal jitter: the wait before attempt n+1 is between half and all of 0.08 s * 2**(n-1).
        for n, gap in ((2, gaps[1]), (3, gaps[2]), (4, gaps[3])):
            assert 0.08 * 2 ** (n - 1) / 2 - 0.01 <= gap <= 0.08 * 2 ** (n - 1) + 0.1, gaps
        assert gaps[3] > gaps[1] * 1.5
        assert outbox.history()[0]["deliveries"][0]["attempts"] == 5
    asyncio.run(main())


def test_queued_notifications_survive_a_restart_and_are_delivered_after_it(tmp_path):
    async def main():
        path = tmp_path / "state.db"
        port = free_port()
        target = WebhookTarget(f"http://127.0.0.1:{port}/hook")
        box = Outbox(path)
        metrics = DriftMetrics()
        try:
            async with Deliverer(box, [target], metrics, list, FAST) as deliverer:
                queued = event()
                deliverer.notify(queued)
                await eventually(lambda: sample(metrics, "sidemesh_drift_alerts_failed_total", target=target.name),
                                 what="a refused attempt")
        finally:
            box.close()

        box = Outbox(path)                                   # the detector starts again
        try:
            assert box.pending() == 1
            async with Hook(port=port) as hook:
                async with Deliverer(box, [target], DriftMetrics(), list, FAST):
                    got, = await hook.wait_for(lambda rs: rs, what="the queued notification")
            assert got.headers["X-Sidemesh-Event-Id"] == queued.id and box.pending() == 0
        finally:
            box.close()
    asyncio.run(main())


def test_notifications_older_than_the_maximum_age_expire_and_are_counted(outbox):
    async def main():
        target = WebhookTarget(f"http://127.0.0.1:{free_port()}/hook")
        metrics = DriftMetrics()
        policy = DeliveryPolicy(timeout_s=1.0, backoff_s=0.05, backoff_max_s=0.1, max_age_s=0.4, sweep_s=10.0)
        async with Deliverer(outbox, [target], metrics, list, policy) as deliverer:
            deliverer.notify(event())
            await eventually(lambda: sample(metrics, "sidemesh_drift_alerts_expired_total", target=target.name) == 1,
                             what="the notification to expire")
        delivery = outbox.history()[0]["deliveries"][0]
        assert delivery["state"] == "expired" and "older than the maximum age" in delivery["last_error"]
        assert outbox.pending() == 0 and sample(metrics, "sidemesh_drift_outbox_pending") == 0
    asyncio.run(main())


def test_firing_alerts_are_reposted_to_alertmanager_until_resolved(outbox):
    async def main():
        async with Hook() as am:
            fired = event()
            firing = [fired]
            target = AlertmanagerTarget(am.url(""))
            policy = DeliveryPolicy(timeout_s=2.0, backoff_s=0.05, backoff_max_s=1.0, resend_s=0.1)
            metrics = DriftMetrics()
            async with Deliverer(outbox, [target], metrics, lambda: list(firing), policy,
                                 external_url="http://127.0.0.1:9000") as deliverer:
                deliverer.notify(fired)
                await am.wait_for(lambda rs: len(rs) >= 3, what="the alert and two re-posts")
                resolved = event("resolved")
                firing.clear()
                deliverer.notify(resolved)
                await am.wait_for(lambda rs: resolved.id in [r.headers.get("X-Sidemesh-Event-Id") for r in rs],
                                  what="the resolved alert")
        assert {r.path for r in am.requests} == {"/api/v2/alerts"}
        bodies = [json.loads(r.body) for r in am.requests]
        assert all(len(b) == 1 and b[0]["labels"] == {"alertname": "SidemeshInputDrift", "model": "fraud",
                                                      "version": "2", "severity": "warning"} for b in bodies)
        assert all("endsAt" not in b[0] for b in bodies[:-1])
        assert bodies[-1][0]["endsAt"] == "2023-11-14T22:13:20.000Z"
        assert bodies[-1][0]["generatorURL"] == "http://127.0.0.1:9000"
        assert sample(metrics, "sidemesh_drift_alerts_sent_total", target=target.name, status="firing") == 1
        assert sample(metrics, "sidemesh_drift_alerts_sent_total", target=target.name, status="resolved") == 1
    asyncio.run(main())


def test_target_names_for_metrics_drop_credentials_and_query_strings():
    assert target_name("https://user:pw@hooks.example/a/b?token=x#frag") == "https://hooks.example:443/a/b"
    assert target_name("http://[::1]:8080/hook") == "http://[::1]:8080/hook"
    assert AlertmanagerTarget("http://am:9093/prefix/").api_url == "http://am:9093/prefix/api/v2/alerts"
    assert AlertmanagerTarget("http://am:9093/api/v2/alerts").api_url == "http://am:9093/api/v2/alerts"


@pytest.mark.parametrize("make, flag", [
    (lambda: WebhookTarget("ftp://x/"), "--webhook"),
    (lambda: WebhookTarget("http:///nohost"), "--webhook"),
    (lambda: WebhookTarget("http://x:99999/", format="alertmanager"), "--am-webhook"),
    (lambda: WebhookTarget("http://x/", format="slack"), "format"),
    (lambda: WebhookTarget("http://x/", secret=b""), "--webhook-secret-file"),
    (lambda: AlertmanagerTarget("am:9093"), "--alertmanager"),
    (lambda: Deliverer(None, [WebhookTarget("http://x/")] * 2, DriftMetrics(), list), "twice"),
    (lambda: Deliverer(None, [], DriftMetrics(), list, resend_s=0), "resend_s"),
    (lambda: Deliverer(None, [], DriftMetrics(), list, resend_every=5), "resend_every"),
])
def test_bad_targets_and_settings_are_refused_naming_the_flag(make, flag):
    with pytest.raises(ConfigError, match=flag):
        make()


def test_single_settings_override_the_policy():
    deliverer = Deliverer(None, [], DriftMetrics(), list, DeliveryPolicy(backoff_s=0.2), resend_s=30)
    assert (deliverer.policy.resend_s, deliverer.policy.backoff_s, deliverer.policy.max_age_s) == (30, 0.2, 86400)


def test_the_documented_examples_are_exactly_what_the_code_sends():
    doc = (Path(__file__).parents[2] / "docs" / "drift.md").read_text()
    section = doc[doc.index("## Alerts"):]
    section = section[:m.start() + 3] if (m := re.search(r"^## ", section[3:], re.MULTILINE)) else section
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]
    details = {"window": {"rows": 5000, "started_at": 1793786040.0, "closed_at": 1793786100.0,
                          "first_row_at": 1793786040.2, "last_row_at": 1793786099.8},
               "features_tested": 12, "drifted_features": 1,
               "features": [{"input": "features", "index": 3, "name": "amount", "kind": "numeric", "decision": "ks",
                             "score": 0.31, "p_value": 1.2e-09, "adjusted_p_value": 1.4e-08, "drifted": True,
                             "tests": {"ks": {"score": 0.31, "p_value": 1.2e-09, "threshold": 0.05},
                                       "psi": {"score": 0.42, "p_value": None, "threshold": 0.2}}}]}
    firing = AlertEvent("3f2b9c0e5d8a4f1b9e6c7d2a1b0c9e8f", "firing", "fraud", "2", 1793786100.0, None, 1793786100.0,
                        "Input drift in fraud version 2: 1 of 12 features drifted (features[amount])", details)
    resolved = AlertEvent("9a8b7c6d5e4f40318293a4b5c6d7e8f9", "resolved", "fraud", "2", 1793786100.0, 1793786400.0,
                          1793786400.0, "fraud version 2: inputs match the reference (12 features tested)",
                          {"window": {"rows": 5000}, "features_tested": 12, "drifted_features": 0, "features": []})
    detector = "http://drift.example:9000"
    assert examples == [
        json.loads(fmt.sidemesh_body(firing)),
        json.loads(fmt.alertmanager_alerts(resolved, detector)),
        json.loads(fmt.alertmanager_webhook_body(firing, external_url=detector, generator_url=detector)),
    ]
    # The docs' own verify(), run as a reader would paste it.
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    namespace: dict = {}
    exec(snippet, namespace)
    body = fmt.sidemesh_body(firing)
    assert namespace["verify"](SECRET, body, fmt.sign(body, SECRET))
    assert not namespace["verify"](SECRET, body + b" ", fmt.sign(body, SECRET))
    assert fmt.sign(body, SECRET) == "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
