"""Webhook targets, and the worker that delivers an outbox to them.

A ``WebhookTarget`` is frozen config: where to POST, the secret to sign with, how to render
an event into body bytes (the owner's own JSON), and optionally a ``repost`` hook (a body to
re-send every ``resend_s`` while the target's queue is empty, best effort and not queued;
the drift detector re-posts firing alerts to Alertmanager with it).

``Deliverer`` runs one worker task per target, so a slow or dead receiver delays only its
own notifications. A worker sends its target's rows in order (the outbox hands it only the
oldest pending one), sleeps on an ``asyncio.Event`` until ``notify`` wakes it or the next
retry is due (never a polling loop), and classifies each answer:

- 2xx: delivered.
- 4xx other than 408 and 429: the receiver refuses this body for good; recorded as failed,
  not retried (retrying a 400 for a day helps nobody and blocks the rows behind it).
- anything else (5xx, 408, 429, 3xx, timeouts, refused connections): retried with
  exponential backoff and jitter, honouring ``Retry-After``, until the row is older than the
  maximum age, when it expires (counted in ``metrics.expired``).

Signatures are computed when a request is sent, from the secret configured then: the
outbox holds no secret-derived bytes, and a rotated secret applies to rows still queued.
Metrics are injected (``DeliveryMetrics``), so each owner keeps its own metric names.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from .errors import ConfigError, DeliveryError
from .outbox import Event, Outbox, OutboxRow, Request
from .wire import EVENT_ID_HEADER, SIGNATURE_HEADER, dumps, sign

__all__ = [
    "SIGNATURE_HEADER",
    "Deliverer",
    "DeliveryMetrics",
    "DeliveryPolicy",
    "Request",
    "WebhookTarget",
    "check_url",
    "json_body",
    "sign",
    "target_name",
]

_RETRYABLE_4XX = (408, 429)
_ERROR_BODY_BYTES = 300


def target_name(url: str) -> str:
    """``scheme://host:port/path`` of a URL: safe for metric labels and the delivery history
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


def json_body(event: Event) -> bytes:
    """The default body: the event's ``to_dict()`` as compact JSON."""
    return dumps(event.to_dict())


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """POST every event, rendered by ``render``, to ``url``; signed when ``secret`` is set.

    ``flag`` names the setting in errors; ``name`` (the metrics label, default
    ``target_name(url)``) and ``key`` (the outbox queue, default ``webhook:<url>``) may be
    given to keep existing labels and queued rows; ``repost`` returns a body to re-send every
    ``DeliveryPolicy.resend_s`` while nothing is queued (None: nothing to re-send now)."""

    url: str
    secret: bytes | None = None
    render: Callable[[Any], bytes] = json_body
    _: KW_ONLY
    flag: str = "--webhook"
    name: str = ""
    key: str = ""
    repost: Callable[[], bytes | None] | None = None

    def __post_init__(self) -> None:
        check_url(self.flag, self.url)
        if self.secret is not None and (not isinstance(self.secret, bytes) or not self.secret):
            raise ConfigError("--webhook-secret-file: the secret must be non-empty bytes")
        if not callable(self.render):
            raise ConfigError(f"{self.flag} render: expected a callable event -> body bytes, got {self.render!r}")
        if self.repost is not None and not callable(self.repost):
            raise ConfigError(f"{self.flag} repost: expected a callable () -> body bytes or None, got {self.repost!r}")
        for field in ("name", "key"):
            if not isinstance(getattr(self, field), str):
                raise ConfigError(f"{self.flag} {field}: expected a string, got {getattr(self, field)!r}")
        if not self.name:
            object.__setattr__(self, "name", target_name(self.url))
        if not self.key:
            object.__setattr__(self, "key", f"webhook:{self.url}")

    def request(self, event: Event) -> Request:
        """The stored form of one event for this target (unsigned: signing happens at send time)."""
        body = self.render(event)
        if not isinstance(body, bytes):
            raise ConfigError(f"{self.flag} render: expected body bytes, got {type(body).__name__}")
        return Request(self.key, self.name, self.url, body, {"Content-Type": "application/json", EVENT_ID_HEADER: event.id})


@dataclass(frozen=True, slots=True)
class DeliveryMetrics:
    """The four instruments a ``Deliverer`` updates, named by their owner: ``sent`` (labels
    target, status), ``failed`` and ``expired`` (label target), ``pending`` (no labels)."""

    sent: Counter
    failed: Counter
    expired: Counter
    pending: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, *, sent: str, failed: str, expired: str, pending: str,
               what: str = "Notifications") -> DeliveryMetrics:
        """Register the four under the owner's names (write the names out where you call this,
        so they can be found and documented)."""
        return cls(
            Counter(sent, f"{what} delivered, by target and status.", ("target", "status"), registry=registry),
            Counter(failed, "Failed delivery attempts (retried with backoff unless the target refused it with a 4xx).",
                    ("target",), registry=registry),
            Counter(expired, f"{what} given up on after the outbox's maximum age.", ("target",), registry=registry),
            Gauge(pending, f"{what} waiting in the outbox.", registry=registry))


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry, expiry and re-post timing; the defaults suit production."""

    timeout_s: float = 10.0           # one request, connect to last byte
    backoff_s: float = 0.5            # first retry delay; doubles per attempt...
    backoff_max_s: float = 60.0       # ...up to this
    max_age_s: float = 24 * 3600.0    # a row still undelivered after this expires
    resend_s: float = 60.0            # call targets' repost hooks this often
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
        half random), so retries grow and many senders do not retry in lockstep."""
        base = min(self.backoff_max_s, self.backoff_s * 2.0 ** min(max(attempts - 1, 0), 60))
        delay = base / 2 + random.uniform(0, base / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.backoff_max_s)


class Deliverer:
    """Delivers the outbox to the targets (see the module docstring). Use as
    ``async with Deliverer(...) as d:`` or ``await d.start()`` / ``await d.stop()``; call
    ``notify`` on the event loop."""

    def __init__(self, outbox: Outbox, targets: Sequence[WebhookTarget], metrics: DeliveryMetrics,
                 policy: DeliveryPolicy | None = None, *, user_agent: str, log: logging.Logger | None = None,
                 **settings: float) -> None:
        """``settings`` override single fields of ``policy`` (e.g. ``max_age_s=3600``);
        ``user_agent`` names the sender to receivers (e.g. "sidemesh-control-plane")."""
        if not all(isinstance(t, WebhookTarget) for t in targets):
            raise ConfigError("delivery targets: expected WebhookTarget instances")
        keys = [t.key for t in targets]
        if len(set(keys)) != len(keys):
            raise ConfigError("delivery targets: the same target is given twice")
        unknown = set(settings) - set(DeliveryPolicy.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"delivery settings: unknown {sorted(unknown)}; expected fields of DeliveryPolicy")
        if not isinstance(user_agent, str) or not user_agent:
            raise ConfigError(f"delivery user_agent: expected a non-empty string, got {user_agent!r}")
        if not isinstance(metrics, DeliveryMetrics):
            raise ConfigError("delivery metrics: expected a DeliveryMetrics")
        self.outbox = outbox
        self.targets = tuple(targets)
        self.metrics = metrics
        self.policy = dataclasses.replace(policy or DeliveryPolicy(), **settings)
        self.user_agent = user_agent
        self.log = log or logging.getLogger("sidemesh.notify")
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
                                              headers={"User-Agent": self.user_agent})
        self._tasks = [asyncio.create_task(self._work(t), name=f"notify {t.name}") for t in self.targets]
        self._sweeper = asyncio.create_task(self._sweep(), name="notify outbox sweep")
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

    def notify(self, event: Event) -> None:
        """Queue the event for every target (one transaction) and wake the workers."""
        self.outbox.add(event, [t.request(event) for t in self.targets])
        self._set_pending()
        for wake in self._wakes.values():
            wake.set()

    # --- workers ----------------------------------------------------------------------------

    async def _work(self, target: WebhookTarget) -> None:
        wake = self._wakes[target.key]
        reposts = target.repost is not None
        next_repost = 0.0  # at once: a receiver may have lost its state while we were down
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
                self.log.exception("delivery to %s failed unexpectedly", target.name)
                deadline = now + self.policy.backoff_max_s / 4
            if reposts:
                deadline = next_repost if deadline is None else min(deadline, next_repost)
            await _sleep_until(wake, deadline)

    async def _attempt(self, target: WebhookTarget, row: OutboxRow, now: float) -> None:
        if row.created_at < now - self.policy.max_age_s:
            self._expire(now)
            return
        try:
            await self._post(target, row.url, row.body, dict(row.headers))
        except DeliveryError as exc:
            self.metrics.failed.labels(target.name).inc()
            done = time.time()
            if exc.retryable:
                retry = self.policy.backoff(row.attempts + 1, exc.retry_after)
                self.outbox.failed(row.row_id, str(exc), done + retry)
                # The first failure of a notification is worth a warning; its retries are not.
                self.log.log(logging.WARNING if row.attempts == 0 else logging.INFO,
                             "notification %s to %s: %s; retrying in %.1f s", row.event_id, target.name, exc, retry)
            else:
                self.outbox.failed(row.row_id, str(exc), None, done)
                self._set_pending()
                self.log.warning("notification %s to %s refused for good: %s", row.event_id, target.name, exc)
            return
        self.outbox.delivered(row.row_id, time.time())
        self.metrics.sent.labels(target.name, row.status).inc()
        self._set_pending()

    async def _repost(self, target: WebhookTarget) -> None:
        body = target.repost()
        if body is None:
            return
        try:
            await self._post(target, target.url, body, {"Content-Type": "application/json"})
        except DeliveryError as exc:
            self.metrics.failed.labels(target.name).inc()
            self.log.info("re-posting to %s: %s", target.name, exc)

    async def _post(self, target: WebhookTarget, url: str, body: bytes, headers: dict[str, str]) -> None:
        """POST once, signed with the target's current secret; raise ``DeliveryError``."""
        assert self._session is not None, "Deliverer.start() was not called"
        if target.secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, target.secret)
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    return
                text = (await resp.content.read(_ERROR_BODY_BYTES)).decode("utf-8", "replace").strip()
                retryable = not (400 <= resp.status < 500) or resp.status in _RETRYABLE_4XX
                raise DeliveryError(target.name, f"HTTP {resp.status}" + (f": {text}" if text else ""), retryable,
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
                self.log.exception("outbox sweep failed")
            await asyncio.sleep(self.policy.sweep_s)

    def _expire(self, now: float) -> None:
        expired = self.outbox.expire(now - self.policy.max_age_s, now)
        for name, count in expired.items():
            self.metrics.expired.labels(name).inc(count)
            self.log.warning("gave up on %d notification(s) to %s after %.0f s", count, name, self.policy.max_age_s)
        if expired:
            self._set_pending()
            for wake in self._wakes.values():
                wake.set()

    def _set_pending(self) -> None:
        self.metrics.pending.set(self.outbox.pending())


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
