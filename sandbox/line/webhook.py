"""The webhook: the endpoint setting, delivery of signed event batches, redelivery.

What LINE documents and the sandbox does:

- **Request** (reference, "Webhooks"): ``POST <endpoint>`` with ``{"destination": <bot user id>,
  "events": [...]}``; ``x-line-signature`` is base64(HMAC-SHA256(channel secret, raw body)).
  Header names are lower-case, as LINE announced they may be ("field names are case
  insensitive"). One request may carry several events, of several users.
- **Response**: the bot must answer 200. A response that is not ``20x``, no response within 2
  seconds (``request_timeout``: "didn't return a response within 2 seconds", "Check the reason
  for errors"), or no connection, is a failure.
- **Redelivery** ("Redeliver a webhook that failed to be received"): failed events are sent
  again "for a pre-defined number of times with a time interval", with
  ``deliveryContext.isRedelivery: true`` and otherwise unchanged — same ``webhookEventId``, same
  ``replyToken``, same ``timestamp``. Later events do not wait for them, so the bot may see events
  out of order, as LINE warns. LINE's redelivery is opt-in; the sandbox has it on by default
  (``webhook_redelivery``) with a short ``webhook_retry_interval`` (LINE publishes neither
  number).
- **Test** (``POST /v2/bot/channel/webhook/test``): ``{"destination", "events": []}``.

Events produced while no endpoint is set, or while "Use webhook" is off, are not delivered, as on
LINE; they are in the delivery log as not sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from sandbox.changes import Changes

from .clock import SandboxClock

log = logging.getLogger("sandbox.line.webhook")

# guess: the User-Agent LINE's webhook requests carry (LineBotWebhook/2.0 is what bot servers log).
USER_AGENT = "LineBotWebhook/2.0"
MAX_ENDPOINT_LENGTH = 500  # "Must be 500 characters or less."
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def signature(channel_secret: str, body: bytes) -> str:
    """``x-line-signature``: the base64 HMAC-SHA256 digest of the raw body."""
    digest = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON, UTF-8 (guess: LINE does not escape
    non-ASCII). Receivers must verify the signature on these bytes, not on a re-serialisation."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def valid_endpoint(url: Any) -> bool:
    """LINE's rule — "a valid HTTPS URL", 500 characters or less — plus plain ``http://`` to
    127.0.0.1, localhost and ::1 so the local bridge can receive (LINE itself refuses those)."""
    if not isinstance(url, str) or not url or len(url) > MAX_ENDPOINT_LENGTH:
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        return False
    if not host:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and host in LOCAL_HOSTS)


def iso_timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Delivery:
    index: int
    kind: str  # "events" | "test" | "raw"
    url: str | None
    event_ids: list[str]
    redelivery: bool
    body: bytes
    signature: str | None
    sent_at: float
    status: int | None = None
    result: str = "pending"

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self, include_payload: bool = True) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "index": self.index,
            "kind": self.kind,
            "url": self.url,
            "webhookEventIds": list(self.event_ids),
            "isRedelivery": self.redelivery,
            "sentAt": self.sent_at,
            "status": self.status,
            "result": self.result,
            "signature": self.signature,
        }
        if include_payload:
            try:
                entry["payload"] = json.loads(self.body)
            except ValueError:
                entry["payload"] = self.body.decode("utf-8", "replace")
        return entry


@dataclass
class Pending:
    event: dict[str, Any]  # as first built (isRedelivery false)
    attempts: int = 0
    state: str = "queued"  # "queued" | "delivered" | "retrying" | "failed" | "dropped"


class WebhookDispatcher:
    def __init__(
        self,
        channel_secret: str,
        destination: str,
        clock: SandboxClock,
        changes: Changes,
        on_sent: Callable[[list[dict[str, Any]], bool], None],
        *,
        timeout: float = 2.0,
        redelivery: bool = True,
        retry_interval: float = 1.0,
        max_redeliveries: int = 5,
        max_events: int = 20,
    ) -> None:
        self.channel_secret = channel_secret
        self.destination = destination
        self.clock = clock
        self.changes = changes
        self.on_sent = on_sent
        self.timeout = timeout
        self.redelivery = redelivery
        self.retry_interval = retry_interval
        self.max_redeliveries = max_redeliveries
        self.max_events = max_events
        self.endpoint: str | None = None
        self.active = True  # "Use webhook" in the console
        self.events: dict[str, Pending] = {}
        self.log: list[Delivery] = []
        self._fresh: deque[str] = deque()
        self._retries: list[tuple[float, list[str]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        self._task = asyncio.create_task(self._run(), name="line-webhook-delivery")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ queue

    def enqueue(self, event: dict[str, Any]) -> None:
        event_id = event["webhookEventId"]
        self.events[event_id] = Pending(event)
        self._fresh.append(event_id)
        self._wakeup.set()

    def redeliver(self, event_ids: list[str]) -> int:
        """Send these events again now, as redeliveries (``POST /control/redeliver``)."""
        known = [e for e in event_ids if e in self.events]
        if known:
            for event_id in known:
                self.events[event_id].state = "retrying"
            self._retries.append((time.monotonic(), known))
            self._wakeup.set()
        return len(known)

    @property
    def pending(self) -> int:
        return sum(1 for p in self.events.values() if p.state in ("queued", "retrying"))

    def describe(self, include_payload: bool = True) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "active": self.active,
            "redelivery": self.redelivery,
            "pending": self.pending,
            "events": {event_id: p.state for event_id, p in self.events.items()},
            "deliveries": [d.describe(include_payload) for d in self.log],
        }

    # ------------------------------------------------------------------ one-off requests

    async def test(self, url: str) -> dict[str, Any]:
        """``POST /v2/bot/channel/webhook/test``: an empty event list, and LINE's verdict."""
        sent_at = self.clock.now()
        delivery = await self._post("test", url, {"destination": self.destination, "events": []}, [], False)
        if delivery.ok:
            reason, detail = "OK", str(delivery.status)
        elif delivery.status is not None:
            reason, detail = "ERROR_STATUS_CODE", str(delivery.status)
        elif delivery.result == "timeout":
            reason, detail = "REQUEST_TIMEOUT", "Request timeout"
        else:
            reason, detail = "COULD_NOT_CONNECT", "Failure to connect"
        return {
            "success": delivery.ok,
            "timestamp": iso_timestamp(sent_at),
            "statusCode": delivery.status if delivery.status is not None else 0,
            "reason": reason,
            "detail": detail,
        }

    async def send_raw(self, body: bytes, sig: str | None) -> Delivery:
        """POST ``body`` as it is, with ``sig`` (or none) as the signature: hostile-payload tests."""
        if self.endpoint is None:
            raise LookupError("no webhook endpoint is set")
        return await self._post_bytes("raw", self.endpoint, body, sig, [], False)

    # ------------------------------------------------------------------ delivery loop

    def _next_batch(self) -> tuple[list[str], bool] | None:
        if self._fresh:
            batch = []
            while self._fresh and len(batch) < self.max_events:
                batch.append(self._fresh.popleft())
            return batch, False
        now = time.monotonic()
        self._retries.sort(key=lambda r: r[0])
        if self._retries and self._retries[0][0] <= now:
            return self._retries.pop(0)[1], True
        return None

    async def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                self._wakeup.clear()
                wait = None
                if self._retries:
                    wait = max(0.0, min(r[0] for r in self._retries) - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                continue
            try:
                await self._deliver(*batch)
            except Exception:  # a sandbox bug must not stop delivery
                log.exception("event=webhook_delivery_crash")

    async def _deliver(self, event_ids: list[str], redelivery: bool) -> None:
        pendings = [self.events[e] for e in event_ids]
        if self.endpoint is None or not self.active:
            reason = (
                "not sent: no webhook endpoint" if self.endpoint is None else "not sent: webhook disabled"
            )
            for pending in pendings:
                pending.state = "dropped"
            self.log.append(
                Delivery(
                    len(self.log) + 1,
                    "events",
                    None,
                    event_ids,
                    redelivery,
                    b"",
                    None,
                    self.clock.now(),
                    None,
                    reason,
                )
            )
            log.info("event=webhook_not_sent events=%d reason=%r", len(event_ids), reason)
            self.changes.notify()
            return
        events = []
        for pending in pendings:
            event = copy.deepcopy(pending.event)
            event["deliveryContext"] = {"isRedelivery": redelivery}
            events.append(event)
        self.on_sent(events, redelivery)
        delivery = await self._post(
            "events",
            self.endpoint,
            {"destination": self.destination, "events": events},
            event_ids,
            redelivery,
        )
        for pending in pendings:
            pending.attempts += 1
            if delivery.ok:
                pending.state = "delivered"
            elif self.redelivery and pending.attempts <= self.max_redeliveries:
                pending.state = "retrying"
            else:
                pending.state = "failed"
        retrying = [e for e, p in zip(event_ids, pendings, strict=True) if p.state == "retrying"]
        if retrying:
            self._retries.append((time.monotonic() + self.retry_interval, retrying))
            log.info(
                "event=webhook_redelivery_scheduled events=%d in_s=%.2f result=%r",
                len(retrying),
                self.retry_interval,
                delivery.result,
            )
        self.changes.notify()

    async def _post(
        self, kind: str, url: str, payload: dict[str, Any], event_ids: list[str], redelivery: bool
    ) -> Delivery:
        body = encode(payload)
        return await self._post_bytes(
            kind, url, body, signature(self.channel_secret, body), event_ids, redelivery
        )

    async def _post_bytes(
        self, kind: str, url: str, body: bytes, sig: str | None, event_ids: list[str], redelivery: bool
    ) -> Delivery:
        assert self._session is not None, "the sandbox is not running"
        delivery = Delivery(len(self.log) + 1, kind, url, event_ids, redelivery, body, sig, self.clock.now())
        self.log.append(delivery)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if sig is not None:
            headers["x-line-signature"] = sig
        started = time.monotonic()
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as response:
                await response.read()
                delivery.status = response.status
                delivery.result = "delivered" if delivery.ok else f"HTTP {response.status}"
        except TimeoutError:
            delivery.result = "timeout"
        except aiohttp.ClientConnectorError as exc:
            delivery.result = f"connection failed: {exc.os_error}"
        except aiohttp.ClientError as exc:
            delivery.result = f"connection failed: {type(exc).__name__}"
        log.info(
            "event=webhook_post kind=%s index=%d events=%d redelivery=%s result=%r duration_ms=%.1f",
            kind,
            delivery.index,
            len(event_ids),
            redelivery,
            delivery.result,
            (time.monotonic() - started) * 1000,
        )
        return delivery
