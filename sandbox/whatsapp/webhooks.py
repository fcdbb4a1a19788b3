"""Webhook subscription and delivery, the way Meta does it for the ``messages`` field.

- **Subscription** (``WhatsAppSandbox.subscribe`` / ``POST /control/webhook``): Meta's
  verification request ``GET <url>?hub.mode=subscribe&hub.challenge=<n>&hub.verify_token=<t>``;
  only a 200 whose body is exactly the challenge subscribes the URL.
- **Delivery**: every event is POSTed as JSON with ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256
  of the raw body keyed with the app secret>``. Events go out one at a time in the order they
  happened; a non-2xx answer or a connection failure is retried with exponential backoff (0.2 s
  doubling to 5 s here; Meta keeps retrying for up to 7 days) and later events wait behind it,
  so nothing is lost or reordered. Every payload and attempt is kept in a delivery log.
- **Redelivery** (``POST /control/redeliver``): already delivered payloads are sent again, byte
  for byte, as Meta occasionally does; the bridge must deduplicate.

Events produced while no URL is subscribed are held and delivered once one is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from sandbox.changes import Changes

log = logging.getLogger("sandbox.whatsapp.webhooks")

USER_AGENT = "facebookexternalua"


class WebhookSubscriptionError(RuntimeError):
    """The verification handshake failed; nothing was subscribed."""


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed).

    guess: Meta's webhook bodies escape non-ASCII characters (``\\ud83d\\ude2e``) and forward
    slashes (``\\/``); the sandbox does the same, so a receiver that re-serialises the JSON before
    checking the signature fails here as it would against Meta.
    """
    # guess: escaping of non-ASCII and "/" (see the docstring)
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Subscription:
    url: str
    verify_token: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "?"


@dataclass
class Delivery:
    index: int
    body: bytes
    kind: str  # "message" (client messages) or "status" (statuses of business messages)
    summary: dict[str, Any]
    created_at: int
    attempts: int = 0
    last_status: int | str | None = None
    delivered: bool = False
    delivered_at: float | None = None
    redelivery_of: int | None = None

    def describe(self, include_payload: bool = True) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "index": self.index,
            "kind": self.kind,
            **self.summary,
            "created_at": self.created_at,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "delivered": self.delivered,
        }
        if self.redelivery_of is not None:
            entry["redelivery_of"] = self.redelivery_of
        if include_payload:
            entry["payload"] = json.loads(self.body)
        return entry


class WebhookDispatcher:
    def __init__(
        self,
        app_secret: str,
        changes: Changes,
        *,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        self.app_secret = app_secret
        self.changes = changes
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.timeout = timeout
        self.subscription: Subscription | None = None
        self.log: list[Delivery] = []
        self._pending: deque[Delivery] = deque()
        self._wakeup = asyncio.Event()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": USER_AGENT},
        )
        self._task = asyncio.create_task(self._run(), name="whatsapp-webhook-delivery")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ subscription

    async def subscribe(self, url: str, verify_token: str) -> None:
        """Meta's verification request; raises :class:`WebhookSubscriptionError` unless the
        endpoint answers 200 with the challenge as its body."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookSubscriptionError(f"not an http(s) URL: {url!r}")
        challenge = str(10**9 + secrets.randbelow(9 * 10**9))
        params = {
            "hub.mode": "subscribe",
            "hub.challenge": challenge,
            "hub.verify_token": verify_token,
        }
        session = self._session
        owned = session is None
        if session is None:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with session.get(url, params=params, headers={"User-Agent": USER_AGENT}) as response:
                status = response.status
                answer = await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WebhookSubscriptionError(
                f"the verification request to {url} failed: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            if owned:
                await session.close()
        if status != 200:
            raise WebhookSubscriptionError(
                f"the callback URL answered the verification request with HTTP {status}"
            )
        if answer != challenge:
            raise WebhookSubscriptionError(
                "the callback URL did not echo hub.challenge as its response body "
                f"(expected {challenge!r}, got {answer[:80]!r})"
            )
        self.subscription = Subscription(url, verify_token)
        log.info("event=webhook_subscribed host=%s", self.subscription.host)
        self._kick.set()
        self._wakeup.set()

    # ------------------------------------------------------------------ queue

    def enqueue(
        self, payload: dict[str, Any], kind: str, summary: dict[str, Any], created_at: int
    ) -> Delivery:
        delivery = Delivery(
            index=len(self.log) + 1,
            body=encode_payload(payload),
            kind=kind,
            summary=summary,
            created_at=created_at,
        )
        self.log.append(delivery)
        self._pending.append(delivery)
        self._wakeup.set()
        return delivery

    def redeliver(self, since: int) -> int:
        """Queue again every delivered payload with ``index >= since`` (original order)."""
        originals = [d for d in self.log if d.delivered and d.index >= since]
        for original in originals:
            copy = Delivery(
                index=len(self.log) + 1,
                body=original.body,
                kind=original.kind,
                summary=original.summary,
                created_at=original.created_at,
                redelivery_of=original.redelivery_of or original.index,
            )
            self.log.append(copy)
            self._pending.append(copy)
        self._wakeup.set()
        return len(originals)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def describe(self, include_payload: bool = True) -> dict[str, Any]:
        return {
            "subscribed": {"url": self.subscription.url} if self.subscription else None,
            "pending": self.pending,
            "deliveries": [d.describe(include_payload) for d in self.log],
        }

    # ------------------------------------------------------------------ delivery

    async def _run(self) -> None:
        failures = 0
        while True:
            if self.subscription is None or not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            subscription = self.subscription
            delivery = self._pending[0]
            result = await self._post(subscription, delivery)
            delivery.attempts += 1
            delivery.last_status = result
            if isinstance(result, int) and 200 <= result < 300:
                delivery.delivered = True
                delivery.delivered_at = time.time()
                self._pending.popleft()
                failures = 0
                self.changes.notify()
                continue
            failures += 1
            delay = min(self.retry_max, self.retry_initial * 2 ** (failures - 1))
            log.info(
                "event=webhook_delivery_failed host=%s index=%d attempt=%d retry_in_s=%.2f result=%r",
                subscription.host,
                delivery.index,
                delivery.attempts,
                delay,
                result,
            )
            self.changes.notify()
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), delay)  # a new subscription retries at once

    async def _post(self, subscription: Subscription, delivery: Delivery) -> int | str:
        """POST one payload: the HTTP status, or a description of the connection failure."""
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature(self.app_secret, delivery.body),
        }
        try:
            async with self._session.post(subscription.url, data=delivery.body, headers=headers) as response:
                await response.read()
                return response.status
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientConnectorError as exc:
            return f"connection failed: {exc.os_error}"
        except aiohttp.ClientError as exc:
            return f"connection failed: {type(exc).__name__}"
