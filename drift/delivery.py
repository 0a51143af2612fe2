"""Alert targets, and the deliverer that sends the outbox to them.

Targets are frozen config: ``WebhookTarget`` (our JSON body, or Alertmanager's webhook body
for receivers built for that) and ``AlertmanagerTarget`` (``POST <url>/api/v2/alerts``).
Delivery itself (per-target ordered workers, backoff, ``Retry-After``, 4xx classification,
signing at send time, expiry) is ``sidemesh.notify``'s, shared with the control plane; this
module maps the targets onto it, with the drift metrics and the ``sidemesh-drift`` user agent.

Alertmanager forgets an alert whose ``endsAt`` passes (its ``resolve_timeout`` when none is
given), so an ``AlertmanagerTarget`` also re-posts every alert still firing every
``resend_s``, as Prometheus does (the shared worker's ``repost`` hook). Those re-posts are
best effort (not queued) and wait while the target has rows queued, so a re-post never
overtakes a queued "resolved".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sidemesh import notify
from sidemesh.notify import DeliveryPolicy, Outbox, target_name

from . import alert_format as fmt
from .errors import ConfigError
from .hysteresis import AlertEvent
from .metrics import DriftMetrics

__all__ = [
    "AlertmanagerTarget",
    "Deliverer",
    "DeliveryPolicy",
    "Target",
    "WebhookTarget",
    "check_url",
    "target_name",
]

log = logging.getLogger("sidemesh.drift")

USER_AGENT = "sidemesh-drift"
_FORMATS = {"sidemesh": "--webhook", "alertmanager": "--am-webhook"}


@contextlib.contextmanager
def _as_drift_error() -> Iterator[None]:
    """The shared module's config errors, raised as the drift detector's own."""
    try:
        yield
    except notify.ConfigError as exc:
        raise ConfigError(str(exc)) from None


def check_url(flag: str, url: str) -> None:
    """An http(s) URL with a host and a valid port, or ``ConfigError`` naming the flag."""
    with _as_drift_error():
        notify.check_url(flag, url)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A generic webhook: our body (``format="sidemesh"``, flag ``--webhook``) or Alertmanager's
    webhook body (``format="alertmanager"``, flag ``--am-webhook``); signed when a secret is set."""

    url: str
    secret: bytes | None = None
    format: str = "sidemesh"

    def __post_init__(self) -> None:
        if self.format not in _FORMATS:
            raise ConfigError(f"webhook format: expected 'sidemesh' or 'alertmanager', got {self.format!r}")
        check_url(_FORMATS[self.format], self.url)
        if self.secret is not None and (not isinstance(self.secret, bytes) or not self.secret):
            raise ConfigError("--webhook-secret-file: the secret must be non-empty bytes")

    @property
    def key(self) -> str:
        return f"webhook:{self.format}:{self.url}"

    @property
    def name(self) -> str:
        return target_name(self.url)

    def body(self, event: AlertEvent, external_url: str = "") -> bytes:
        if self.format == "sidemesh":
            return fmt.sidemesh_body(event)
        return fmt.alertmanager_webhook_body(event, external_url=external_url, generator_url=external_url)


@dataclass(frozen=True, slots=True)
class AlertmanagerTarget:
    """An Alertmanager (flag ``--alertmanager``): its base URL, e.g. ``http://am:9093`` (with
    any ``--web.route-prefix``); alerts go to ``<url>/api/v2/alerts``."""

    url: str

    def __post_init__(self) -> None:
        check_url("--alertmanager", self.url)

    @property
    def key(self) -> str:
        return f"alertmanager:{self.url}"

    @property
    def name(self) -> str:
        return target_name(self.url)

    @property
    def api_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/api/v2/alerts") else base + "/api/v2/alerts"

    def body(self, event: AlertEvent, external_url: str = "") -> bytes:
        return fmt.alertmanager_alerts(event, external_url)


Target = WebhookTarget | AlertmanagerTarget


class Deliverer:
    """Delivers the alert outbox to the targets through ``sidemesh.notify.Deliverer``. Use as
    ``async with Deliverer(...) as d:`` or ``await d.start()`` / ``await d.stop()``; call
    ``notify`` on the event loop."""

    def __init__(self, outbox: Outbox, targets: Sequence[Target], metrics: DriftMetrics,
                 firing: Callable[[], list[AlertEvent]], policy: DeliveryPolicy | None = None, *,
                 external_url: str = "", **settings: float) -> None:
        """``settings`` override single fields of ``policy`` (e.g. ``resend_s=30``);
        ``external_url`` (the detector's own URL, for ``generatorURL``) may be set later,
        before the first notification, once the HTTP port is known."""
        keys = [t.key for t in targets]
        if len(set(keys)) != len(keys):
            raise ConfigError("alert targets: the same URL is given twice for one kind of target")
        self.targets = tuple(targets)
        self.firing = firing
        self.external_url = external_url
        instruments = notify.DeliveryMetrics(sent=metrics.alerts_sent, failed=metrics.alerts_failed,
                                             expired=metrics.alerts_expired, pending=metrics.outbox_pending)
        with _as_drift_error():
            self._deliverer = notify.Deliverer(outbox, [self._webhook(t) for t in self.targets], instruments, policy,
                                               user_agent=USER_AGENT, log=log, **settings)

    def _webhook(self, target: Target) -> notify.WebhookTarget:
        """The shared worker's view of a target: same queue key and metrics name as ever (rows
        queued by an older detector are still found), bodies rendered with the current
        external URL, and the firing alerts re-posted to an Alertmanager."""
        def render(event: AlertEvent) -> bytes:
            return target.body(event, self.external_url)
        if isinstance(target, AlertmanagerTarget):
            return notify.WebhookTarget(target.api_url, None, render, flag="--alertmanager", name=target.name,
                                        key=target.key, repost=self._firing_alerts)
        return notify.WebhookTarget(target.url, target.secret, render, flag=_FORMATS[target.format], name=target.name,
                                    key=target.key)

    def _firing_alerts(self) -> bytes | None:
        events = self.firing()
        return fmt.alertmanager_alerts(events, self.external_url) if events else None

    @property
    def policy(self) -> DeliveryPolicy:
        return self._deliverer.policy

    @property
    def outbox(self) -> Outbox:
        return self._deliverer.outbox

    async def __aenter__(self) -> Deliverer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._deliverer.start()

    async def stop(self, grace_s: float = 2.0) -> None:
        """See ``sidemesh.notify.Deliverer.stop``: a request still in flight after ``grace_s``
        stays pending and is sent again after a restart."""
        await self._deliverer.stop(grace_s)

    def notify(self, event: AlertEvent) -> None:
        """Queue the event for every target (one transaction) and wake the workers."""
        self._deliverer.notify(event)
