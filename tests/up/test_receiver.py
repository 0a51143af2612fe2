"""The local alert receiver: verifies the detector's signature, prints each alert once,
takes Alertmanager's webhook too, and refuses what it cannot trust."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import aiohttp

from sidemesh.up.receiver import AlertReceiver, verify_signature
from tests.control_plane.peers import free_port

SECRET = b"s3cret"
BODY = {"version": "1", "kind": "drift", "status": "firing", "id": "abc123", "model": "tabular", "modelVersion": "2",
        "startsAt": "2026-11-04T09:55:00.000Z", "endsAt": None, "at": "2026-11-04T09:55:00.000Z",
        "summary": "Input drift in tabular version 2: 1 of 8 features drifted (features[3])", "details": {}}


def _signed(body: bytes, secret: bytes = SECRET) -> dict:
    return {"Content-Type": "application/json",
            "X-Sidemesh-Signature": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}


async def _with_receiver(scenario):
    alerts, refused = [], []
    receiver = AlertReceiver("127.0.0.1", free_port(), SECRET, alerts.append, refused.append)
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            await scenario(session, receiver)
    finally:
        await receiver.stop()
    return alerts, refused


def test_a_signed_alert_is_printed_once_even_when_delivered_twice():
    body = json.dumps(BODY, separators=(",", ":")).encode()

    async def scenario(session, receiver):
        for _ in range(2):  # at-least-once delivery: the same id again
            async with session.post(receiver.url("detector"), data=body, headers=_signed(body)) as response:
                assert response.status == 200
        async with session.get(receiver.url("detector")) as response:
            listed = await response.json()
        assert [a["version"] for a in listed["alerts"]] == ["2"]

    alerts, refused = asyncio.run(_with_receiver(scenario))
    assert refused == []
    assert [a.line() for a in alerts] == [
        "ALERT FIRING SidemeshInputDrift model tabular version 2: Input drift in tabular version 2: 1 of 8 features "
        "drifted (features[3]) [from the drift detector, signature verified]"]


def test_a_wrong_or_missing_signature_is_refused_with_401():
    body = json.dumps(BODY).encode()
    attempts = [_signed(body, b"another secret"),  # signed with another secret
                {"Content-Type": "application/json"},  # not signed
                _signed(body + b" ")]  # signed over other bytes than those sent

    async def scenario(session, receiver):
        for headers in attempts:
            async with session.post(receiver.url("detector"), data=body, headers=headers) as response:
                assert response.status == 401
                assert "X-Sidemesh-Signature" in (await response.json())["error"]

    alerts, refused = asyncio.run(_with_receiver(scenario))
    assert alerts == [] and len(refused) == 3
    assert refused[0].startswith("alert receiver: refused a notification (401)")


def test_a_signed_body_that_is_not_an_alert_is_refused_with_400():
    body = b'{"hello": 1}'

    async def scenario(session, receiver):
        async with session.post(receiver.url("detector"), data=body, headers=_signed(body)) as response:
            assert response.status == 400

    alerts, refused = asyncio.run(_with_receiver(scenario))
    assert alerts == [] and "'id' and 'status'" in refused[0]


def test_alertmanager_notifications_are_printed_per_alert():
    doc = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "SidemeshDriftDetected", "model": "tabular", "version": "1"},
         "annotations": {"summary": "The inputs of tabular version 1 drifted from its reference"}},
        {"status": "resolved", "labels": {"alertname": "SidemeshInputDrift", "model": "tabular", "version": "3"},
         "annotations": {"description": "tabular version 3: window of 300 rows"}}]}

    async def scenario(session, receiver):
        async with session.post(receiver.url("alertmanager"), json=doc) as response:
            assert response.status == 200

    alerts, _ = asyncio.run(_with_receiver(scenario))
    assert [a.line() for a in alerts] == [
        "ALERT FIRING SidemeshDriftDetected model tabular version 1: The inputs of tabular version 1 drifted from its "
        "reference [via Alertmanager]",
        "ALERT RESOLVED SidemeshInputDrift model tabular version 3: tabular version 3: window of 300 rows [via Alertmanager]"]


def test_the_signature_check_follows_docs_drift_md():
    body = b'{"id":"x"}'
    header = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert verify_signature(SECRET, body, header)
    assert not verify_signature(SECRET, body, header.upper())
    assert not verify_signature(SECRET, body, None)
