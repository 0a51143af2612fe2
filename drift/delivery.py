"""Alert targets, and the worker that delivers the outbox to them.

Targets are frozen config: ``WebhookTarget`` (our JSON body, or Alertmanager's webhook body
for receivers built for that) and ``AlertmanagerTarget`` (``POST <url>/api/v2/alerts``). Each
knows how to render an event into a stored ``outbox.Request``.

``Deliverer`` runs one worker task per target, so a slow or dead receiver delays only its
own notifications. A worker sends its target's rows in order (the outbox hands it only the
oldest pending one), sleeps on an ``asyncio.Event`` until ``notify`` wakes it or the next
retry is due (never a polling loop), and classifies each answer:

- 2xx: delivered.
- 4xx other than 408 and 429: the receiver refuses this body for good; recorded as failed,
  not retried (retrying a 400 for a day helps nobody and blocks the rows behind it).
- anything else (5xx, 408, 429, 3xx, timeouts, refused connections): retried with
  exponential backoff and jitter, honouring ``Retry-After``, until the row is older than the
  maximum age, when it expires (counted in ``alerts_expired``).

Signatures are computed when a request is sent, from the secret configured then: the
outbox holds no secret-derived bytes, and a rotated secret applies to rows still queued.

Alertmanager forgets an alert whose ``endsAt`` passes (its ``resolve_timeout`` when none is
given), so the worker of an ``AlertmanagerTarget`` also re-posts every alert still firing
every ``resend_s``, as Prometheus does. Those re-posts are best effort (not queued) and wait
while the target has rows queued, so a re-post never overtakes a queued "resolved".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from . import alert_format as fmt
from .errors import ConfigError, DeliveryError
from .hysteresis import AlertEvent
from .metrics import DriftMetrics
from .outbox import Outbox, OutboxRow, Request

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

_FORMATS = {"sidemesh": "--webhook", "alertmanager": "--am-webhook"}
_RETRYABLE_4XX = (408, 429)
_ERROR_BODY_BYTES = 300


def target_name(url: str) -> str:
    """``scheme://host:port/path`` of a URL: safe for metric labels and the alert history
    (the query string and any ``user:password@`` are dropped)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{host}:{port}{parts.path}"


def check_url(flag: str, url: str) -> None:
    """An http(s) URL with a host and a valid port, or ``ConfigError`` naming the flag."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except (ValueError, AttributeError, TypeError):
        raise ConfigError(f"{flag}: expected an http(s):// URL, got {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{flag}: expected an http(s):// URL with a host, got {url!r}")


def _json_headers(event: AlertEvent) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Sidemesh-Event-Id": event.id}


class _Refused(DeliveryError):
    """The target answered, but not 2xx; ``retry_after`` is its ``Retry-After`` in seconds."""

    def __init__(self, target: str, message: str, retryable: bool, retry_after: float | None) -> None:
        super().__init__(target, message, retryable)
        self.retry_after = retry_after


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

    def render(self, event: AlertEvent, external_url: str = "") -> Request:
        if self.format == "sidemesh":
            body = fmt.sidemesh_body(event)
        else:
            body = fmt.alertmanager_webhook_body(event, external_url=external_url, generator_url=external_url)
        return Request(self.key, self.name, self.url, body, _json_headers(event))


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

    def render(self, event: AlertEvent, external_url: str = "") -> Request:
        return Request(self.key, self.name, self.api_url, fmt.alertmanager_alerts(event, external_url), _json_headers(event))


Target = WebhookTarget | AlertmanagerTarget


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry, expiry and re-post timing; the defaults suit production."""

    timeout_s: float = 10.0           # one request, connect to last byte
    backoff_s: float = 0.5            # first retry delay; doubles per attempt...
    backoff_max_s: float = 60.0       # ...up to this
    max_age_s: float = 24 * 3600.0    # a row still undelivered after this expires
    resend_s: float = 60.0            # re-post firing alerts to Alertmanager this often
    keep_s: float = 7 * 86400.0       # finished rows stay in the history this long
    sweep_s: float = 60.0             # how often expiry and pruning run for all targets

    def __post_init__(self) -> None:
        for name in ("timeout_s", "backoff_s", "backoff_max_s", "max_age_s", "resend_s", "keep_s", "sweep_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"delivery {name}: expected seconds > 0, got {value!r}")
        if self.backoff_max_s < self.backoff_s:
            raise ConfigError("delivery backoff_max_s: expected at least backoff_s")

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        """Delay before attempt ``attempts + 1``: exponential with "equal jitter" (half fixed,
        half random), so retries grow and many detectors do not retry in lockstep."""
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** min(max(attempts - 1, 0), 60))
        delay = base / 2 + random.uniform(0, base / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.backoff_max_s)


class Deliverer:
    """Delivers the outbox to the targets (see the module docstring). Use as
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
        unknown = set(settings) - set(DeliveryPolicy.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"delivery settings: unknown {sorted(unknown)}; expected fields of DeliveryPolicy")
        self.outbox = outbox
        self.targets = tuple(targets)
        self.metrics = metrics
        self.firing = firing
        self.policy = dataclasses.replace(policy or DeliveryPolicy(), **settings)
        self.external_url = external_url
        self._wakes = {t.key: asyncio.Event() for t in self.targets}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._sweeper: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Deliverer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        self._stopping = False
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s),
                                              headers={"User-Agent": "sidemesh-drift"})
        self._tasks = [asyncio.create_task(self._work(t), name=f"alerts {t.name}") for t in self.targets]
        self._sweeper = asyncio.create_task(self._sweep(), name="alert outbox sweep")
        self._set_pending()

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop the workers and close the HTTP session. A request in flight gets ``grace_s``
        to finish and be recorded; past that it is abandoned, its row stays pending, and it
        is sent again after a restart (a duplicate the receiver dedupes)."""
        self._stopping = True
        for wake in self._wakes.values():
            wake.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._tasks, *[t for t in (self._sweeper,) if t], return_exceptions=True)
        self._sweeper = None
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def notify(self, event: AlertEvent) -> None:
        """Queue the event for every target (one transaction) and wake the workers."""
        self.outbox.add(event, [t.render(event, self.external_url) for t in self.targets])
        self._set_pending()
        for wake in self._wakes.values():
            wake.set()

    # --- workers ----------------------------------------------------------------------------

    async def _work(self, target: Target) -> None:
        wake = self._wakes[target.key]
        reposts = isinstance(target, AlertmanagerTarget)
        next_repost = 0.0  # at once: an Alertmanager may have lost its alerts while we were down
        while not self._stopping:
            wake.clear()
            now = time.time()
            deadline: float | None = None
            try:
                rows = self.outbox.due(now, 1, target.key)
                if rows:
                    await self._attempt(target, rows[0], now)
                    continue
                if reposts and now >= next_repost:
                    next_repost = now + self.policy.resend_s
                    if not self.outbox.pending(target.key):
                        await self._repost(target)
                deadline = self.outbox.next_attempt_at(target.key)
            except Exception:  # a bug or a broken database must not end delivery for good
                log.exception("alert delivery to %s failed unexpectedly", target.name)
                deadline = now + self.policy.backoff_max_s / 4
            if reposts:
                deadline = next_repost if deadline is None else min(deadline, next_repost)
            await _sleep_until(wake, deadline)

    async def _attempt(self, target: Target, row: OutboxRow, now: float) -> None:
        if row.created_at < now - self.policy.max_age_s:
            self._expire(now)
            return
        headers = dict(row.headers)
        if isinstance(target, WebhookTarget) and target.secret is not None:
            headers[fmt.SIGNATURE_HEADER] = fmt.sign(row.body, target.secret)
        try:
            await self._post(target, row.url, row.body, headers)
        except DeliveryError as exc:
            self.metrics.alerts_failed.labels(target.name).inc()
            done = time.time()
            if exc.retryable:
                retry = self.policy.backoff(row.attempts + 1, exc.retry_after if isinstance(exc, _Refused) else None)
                self.outbox.failed(row.row_id, str(exc), done + retry)
                # The first failure of a notification is worth a warning; its retries are not.
                log.log(logging.WARNING if row.attempts == 0 else logging.INFO,
                        "alert %s to %s: %s; retrying in %.1f s", row.event_id, target.name, exc, retry)
            else:
                self.outbox.failed(row.row_id, str(exc), None, done)
                self._set_pending()
                log.warning("alert %s to %s refused for good: %s", row.event_id, target.name, exc)
            return
        self.outbox.delivered(row.row_id, time.time())
        self.metrics.alerts_sent.labels(target.name, row.status).inc()
        self._set_pending()

    async def _repost(self, target: AlertmanagerTarget) -> None:
        events = self.firing()
        if not events:
            return
        body = fmt.alertmanager_alerts(events, self.external_url)
        try:
            await self._post(target, target.api_url, body, {"Content-Type": "application/json"})
        except DeliveryError as exc:
            self.metrics.alerts_failed.labels(target.name).inc()
            log.info("re-posting %d firing alert(s) to %s: %s", len(events), target.name, exc)

    async def _post(self, target: Target, url: str, body: bytes, headers: dict[str, str]) -> None:
        """POST once; raise ``DeliveryError`` (``retryable`` set, ``retry_after`` if given)."""
        assert self._session is not None, "Deliverer.start() was not called"
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    return
                text = (await resp.content.read(_ERROR_BODY_BYTES)).decode("utf-8", "replace").strip()
                retryable = not (400 <= resp.status < 500) or resp.status in _RETRYABLE_4XX
                raise _Refused(target.name, f"HTTP {resp.status}" + (f": {text}" if text else ""), retryable,
                               _retry_after(resp.headers.get("Retry-After")))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(target.name, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None

    # --- housekeeping ---------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Expire and prune for every target, including rows of targets no longer configured."""
        while True:
            now = time.time()
            try:
                self._expire(now)
                self.outbox.prune(now - self.policy.keep_s)
            except Exception:
                log.exception("alert outbox sweep failed")
            await asyncio.sleep(self.policy.sweep_s)

    def _expire(self, now: float) -> None:
        expired = self.outbox.expire(now - self.policy.max_age_s, now)
        for name, count in expired.items():
            self.metrics.alerts_expired.labels(name).inc(count)
            log.warning("gave up on %d alert notification(s) to %s after %.0f s", count, name, self.policy.max_age_s)
        if expired:
            self._set_pending()
            for wake in self._wakes.values():
                wake.set()

    def _set_pending(self) -> None:
        self.metrics.outbox_pending.set(self.outbox.pending())


async def _sleep_until(wake: asyncio.Event, deadline: float | None) -> None:
    """Wait for a wake-up, or until ``deadline`` (unix seconds; None: only a wake-up)."""
    timeout = None if deadline is None else max(0.0, deadline - time.time())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await wake.wait()


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
