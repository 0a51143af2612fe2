"""Real Alertmanager (Debian's prometheus-alertmanager): our alert goes in through
``POST /api/v2/alerts`` and comes out of its webhook notifier with our labels, firing and
then resolved. The same receiver also gets our own Alertmanager-format body (``--am-webhook``)
for the same alert, and the two bodies must agree field for field."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

from drift import alert_format as fmt
from drift.delivery import AlertmanagerTarget, Deliverer, DeliveryPolicy, WebhookTarget
from drift.hysteresis import AlertTracker
from drift.metrics import DriftMetrics
from sidemesh.notify import Outbox
from tests.drift.alert_peers import AlertmanagerProcess, Hook, eventually

DETECTOR = "http://127.0.0.1:9000"
DETAILS = {"window": {"rows": 800}, "features": [{"input": "x", "index": 1, "name": "amount", "decision": "ks",
                                                  "score": 0.5, "p_value": 1e-9, "adjusted_p_value": 2e-9}]}


def instant(text: str) -> float:
    """Alertmanager writes Go's RFC 3339 with nanoseconds; compare instants to the millisecond."""
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp(), 3)


def bodies(requests, path: str, status: str) -> list[dict]:
    return [b for b in (json.loads(r.body) for r in requests if r.path == path) if b["status"] == status]


def assert_same_shape(ours: dict, theirs: dict) -> None:
    """Our --am-webhook body against what Alertmanager itself sent for the same alert."""
    assert list(ours) == list(theirs)
    assert list(ours["alerts"][0]) == list(theirs["alerts"][0])
    for key in ("receiver", "status", "groupLabels", "commonLabels", "commonAnnotations", "version", "groupKey",
                "truncatedAlerts"):
        assert ours[key] == theirs[key], key
    a, b = ours["alerts"][0], theirs["alerts"][0]
    for key in ("status", "labels", "annotations", "generatorURL", "fingerprint"):
        assert a[key] == b[key], key
    assert (list(a["labels"]), list(a["annotations"])) == (list(b["labels"]), list(b["annotations"]))
    assert instant(a["startsAt"]) == instant(b["startsAt"])
    if a["status"] == "firing":
        assert a["endsAt"] == b["endsAt"] == fmt.ZERO_TIME
    else:
        assert instant(a["endsAt"]) == instant(b["endsAt"])


def test_alertmanager_notifies_our_alert_with_our_labels_firing_then_resolved(tmp_path):
    async def main():
        outbox = Outbox(tmp_path / "state.db")
        async with Hook() as hook:
            am = AlertmanagerProcess(tmp_path, hook.url("/from-alertmanager"))
            try:
                await am.ready()
                tracker = AlertTracker(fire_after=1, resolve_after=1)
                targets = [AlertmanagerTarget(am.url), WebhookTarget(hook.url("/direct"), format="alertmanager")]
                metrics = DriftMetrics()
                policy = DeliveryPolicy(timeout_s=5.0, backoff_s=0.1, backoff_max_s=1.0)
                async with Deliverer(outbox, targets, metrics, tracker.firing, policy, external_url=DETECTOR) as deliverer:
                    firing = tracker.observe("fraud", "2", True, time.time(), "Input drift in fraud version 2", DETAILS)
                    deliverer.notify(firing)
                    got, = await hook.wait_for(lambda rs: bodies(rs, "/from-alertmanager", "firing"), timeout=15,
                                               what=f"Alertmanager's firing notification; log:\n{am.log()}")
                    alert, = got["alerts"]
                    assert alert["labels"] == {"alertname": "SidemeshInputDrift", "model": "fraud", "version": "2",
                                               "severity": "warning"}
                    assert alert["annotations"]["summary"] == "Input drift in fraud version 2"
                    assert "x[amount]" in alert["annotations"]["description"]
                    assert instant(alert["startsAt"]) == round(firing.starts_at, 3)
                    assert alert["endsAt"] == fmt.ZERO_TIME and alert["generatorURL"] == DETECTOR
                    assert alert["fingerprint"] == fmt.fingerprint(alert["labels"])
                    ours, = await hook.wait_for(lambda rs: bodies(rs, "/direct", "firing"), what="our --am-webhook body")
                    assert_same_shape(ours, json.loads(fmt.alertmanager_webhook_body(
                        firing, external_url=got["externalURL"], generator_url=DETECTOR)))
                    assert_same_shape(ours | {"externalURL": got["externalURL"]}, got)

                    resolved = tracker.observe("fraud", "2", False, time.time(), "fraud version 2: inputs match", {})
                    deliverer.notify(resolved)
                    got, = await hook.wait_for(lambda rs: bodies(rs, "/from-alertmanager", "resolved"), timeout=15,
                                               what=f"Alertmanager's resolved notification; log:\n{am.log()}")
                    alert, = got["alerts"]
                    assert alert["status"] == "resolved" and alert["labels"]["model"] == "fraud"
                    assert instant(alert["endsAt"]) == round(resolved.ends_at, 3)
                    assert instant(alert["startsAt"]) == round(firing.starts_at, 3)
                    ours, = await hook.wait_for(lambda rs: bodies(rs, "/direct", "resolved"), what="our resolved body")
                    assert_same_shape(ours | {"externalURL": got["externalURL"]}, got)
                    await eventually(lambda: outbox.pending() == 0, what="every notification recorded as delivered")
                for target in targets:
                    for status in ("firing", "resolved"):
                        assert metrics.registry.get_sample_value(
                            "sidemesh_drift_alerts_sent_total", {"target": target.name, "status": status}) == 1
            finally:
                am.stop()
                outbox.close()
    asyncio.run(main())
