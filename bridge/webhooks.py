"""Outgoing webhooks: what happened (bridge.notify) POSTed, signed, to the company's systems.

:class:`WebhookSink` is a Notifier sink: it writes each event, with one delivery per receiver
that subscribed to its type, to the store before the pipeline goes on, so an event survives a
crash from the moment it happened. :class:`WebhookDispatcher` runs one worker per receiver:

- at least once: a delivery is deleted only after the receiver answered 2xx, so a crash or a
  timeout means it is sent again, with the same ``X-Houseline-Delivery`` id (receivers dedupe);
- in order per conversation: a room's next event is offered only once the one before it was
  delivered, while the receiver's other rooms (up to ``MAX_IN_FLIGHT`` at once) and the other
  receivers go on;
- retries back off exponentially (1 s doubling, at most 10 minutes, with jitter), the next try
  stored as a time of the bridge's clock so restarts and a moved test clock both respect it;
- a receiver that keeps failing is reported once per failing streak (a warning and a notice to
  the compliance observers in the status room) and is retried for as long as it takes.

The body is fixed when the event is queued and sent byte for byte as stored, so a redelivery is
identical; the signature is ``HMAC-SHA256(secret, "<timestamp>.<body>")`` with the timestamp of
the attempt, which lets a receiver refuse old (replayed) requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable

import aiohttp

from bridge.backoff import Backoff
from bridge.clock import Clock
from bridge.integrations_config import WebhookReceiver
from bridge.notify import HouseEvent
from bridge.store import Store, hooks

log = logging.getLogger("houseline.webhooks")

REQUEST_TIMEOUT_S = 10.0
BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 600.0
#: A receiver is reported after this many failed attempts in a row...
FAILURES_TO_REPORT = 10
#: ...or after this many refusals in a row (a 4xx a retry will not fix: wrong URL, bad secret).
REFUSALS_TO_REPORT = 5
#: 4xx answers that mean "later", not "never".
RETRYABLE_4XX = (408, 429)
#: Conversations delivered to one receiver at the same time.
MAX_IN_FLIGHT = 16
#: How often a worker with deliveries waiting looks at the clock (it may be moved by tests, so
#: retry times are compared, never slept towards).
TICK_S = 1.0
#: The least time between two scans of a receiver's queue.
SCAN_INTERVAL_S = 0.2
#: Tries to post a report while the homeserver is unreachable (over about 10 minutes).
REPORT_ATTEMPTS = 12

Report = Callable[[str], Awaitable[Any]]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Houseline-Signature`` value for a body sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def event_body(event: HouseEvent) -> str:
    """The JSON a receiver gets: ``id``, ``type``, ``room_id``, ``at`` (ISO 8601, UTC) and
    ``data`` (the event's own fields)."""
    at = (
        datetime.fromtimestamp(event.at_ms / 1000, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    payload = {"id": event.id, "type": event.type, "room_id": event.room_id, "at": at, "data": event.data}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)


_BACKOFF = Backoff(first=BASE_BACKOFF_S, cap=MAX_BACKOFF_S, scale=(0.75, 1.0))


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next try after ``attempts`` earlier failures: 1 s doubling up to 10
    minutes, scaled by 75-100 % so deliveries that failed together do not retry together. A
    receiver's Retry-After is respected up to the same cap."""
    delay = _BACKOFF.delay(attempts)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_BACKOFF_S))
    return delay


class WebhookSink:
    """Durably queues every event for the receivers subscribed to its type."""

    def __init__(
        self,
        store: Store,
        receivers: Iterable[WebhookReceiver],
        clock: Clock,
        on_queued: Callable[[list[str]], None],
    ) -> None:
        self.store = store
        self.receivers = tuple(receivers)
        self.clock = clock
        self.on_queued = on_queued
        # One enqueue at a time: the sequence number is taken before the commit, and on
        # PostgreSQL two concurrent commits of one room could otherwise land out of order.
        self._lock = asyncio.Lock()

    async def __call__(self, event: HouseEvent) -> None:
        names = [r.name for r in self.receivers if event.type in r.events]
        if not names:
            return
        body = event_body(event)
        async with self._lock:
            seq = await hooks.enqueue(
                self.store,
                event_id=event.id,
                type=event.type,
                room_id=event.room_id,
                body=body,
                created_at=self.clock.now_ms(),
                receivers=names,
            )
        if seq is None:
            return
        log.info(
            "event=webhook_queued event_id=%s type=%s room=%s receivers=%s",
            event.id,
            event.type,
            event.room_id or "-",
            ",".join(names),
        )
        self.on_queued(names)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    #: The HTTP status, or the kind of error ("timeout", "ClientConnectorError").
    status: str
    #: A 4xx that a retry will not fix.
    refused: bool = False
    retry_after: float | None = None


@dataclass
class ReceiverHealth:
    """Counters for the metrics and the reporting; plain attributes, read at any time."""

    delivered: int = 0
    #: Failed attempts (each retry counts).
    failed: int = 0
    consecutive_failures: int = 0
    consecutive_refusals: int = 0
    last_status: str | None = None
    #: Unix seconds (the bridge's clock) of the last 2xx.
    last_delivered_at: float | None = None
    #: Reported as failing and not delivered anything since.
    failing: bool = False
    #: How many failing streaks (and stuck deliveries) were reported.
    reports: int = 0


class WebhookDispatcher:
    def __init__(
        self, store: Store, receivers: Iterable[WebhookReceiver], clock: Clock, report: Report | None = None
    ) -> None:
        self.store = store
        self.receivers = {r.name: r for r in receivers}
        self.clock = clock
        self.report = report
        self.health = {name: ReceiverHealth() for name in self.receivers}
        self._wake = {name: asyncio.Event() for name in self.receivers}
        self._workers: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        #: Deliveries already reported as stuck, per receiver (one poisoned event in a room
        #: that keeps failing while the receiver's other rooms succeed).
        self._stuck: dict[str, set[int]] = {name: set() for name in self.receivers}
        self._http: aiohttp.ClientSession | None = None

    # the sink's side

    def sink(self) -> WebhookSink:
        return WebhookSink(self.store, self.receivers.values(), self.clock, self.wake)

    def wake(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self._wake:
                self._wake[name].set()

    # metrics

    @property
    def delivered(self) -> int:
        return sum(h.delivered for h in self.health.values())

    @property
    def failed(self) -> int:
        return sum(h.failed for h in self.health.values())

    async def queue_depth(self) -> dict[str, int]:
        """Undelivered events per configured receiver (0 included)."""
        depth = await hooks.queue_depth(self.store)
        return {name: depth.get(name, 0) for name in self.receivers}

    # running

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            headers={"User-Agent": "Houseline-Webhooks/1"},
        )
        depth = await hooks.queue_depth(self.store)
        for name, count in depth.items():
            if name not in self.receivers:
                # Kept, not dropped: renaming a receiver back delivers them.
                log.warning("event=webhook_orphaned receiver=%s queued=%d note=not_in_config", name, count)
        for name in self.receivers:
            self._workers.append(asyncio.create_task(self._run(name), name=f"webhooks-{name}"))
        log.info(
            "event=webhooks_started receivers=%d queued=%d",
            len(self.receivers),
            sum(depth.get(n, 0) for n in self.receivers),
        )

    async def stop(self) -> None:
        """Deliveries in flight are abandoned and sent again at the next start (same id)."""
        tasks = [*self._workers, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._background.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _run(self, name: str) -> None:
        wake = self._wake[name]
        in_flight: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                wake.clear()
                for room_id in [r for r, t in in_flight.items() if t.done()]:
                    del in_flight[room_id]
                items: list[hooks.HookItem] = []
                try:
                    items = await hooks.due(self.store, name, self.clock.now_ms())
                    pending = bool(items or in_flight) or await hooks.has_pending(self.store, name)
                except Exception:
                    log.exception("event=webhook_queue_read_failed receiver=%s", name)
                    pending = True
                for item in items:
                    if item.room_id in in_flight or len(in_flight) >= MAX_IN_FLIGHT:
                        continue
                    task = asyncio.create_task(self._drain(item), name=f"webhook-{name}-{item.room_id}")
                    task.add_done_callback(lambda _t: wake.set())
                    in_flight[item.room_id] = task
                # A scan reads every queued row of the receiver: at most a few per second, however
                # many events arrive (a long outage's backlog would otherwise be read per event).
                await asyncio.sleep(SCAN_INTERVAL_S)
                # Idle: only an enqueue brings work (the long timeout is a safety net).
                try:
                    await asyncio.wait_for(wake.wait(), TICK_S if pending else 30.0)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in in_flight.values():
                task.cancel()
            await asyncio.gather(*in_flight.values(), return_exceptions=True)

    async def _drain(self, item: hooks.HookItem | None) -> None:
        """One conversation of one receiver: its events one after the other until one fails (it
        waits for its retry time, found by the next scan) or none is left or due."""
        while item is not None and item.next_at <= self.clock.now_ms():
            if not await self._deliver(item):
                return
            item = await hooks.next_in_room(self.store, item.receiver, item.room_id)

    async def _deliver(self, item: hooks.HookItem) -> bool:
        """True once the receiver accepted it and that is recorded."""
        receiver = self.receivers[item.receiver]
        try:
            outcome = await self._post(receiver, item)
            if outcome.ok:
                await hooks.delivered(self.store, receiver.name, item.seq)
                self._succeeded(item, outcome)
                return True
            delay = backoff(item.attempts, outcome.retry_after)
            await hooks.failed(
                self.store,
                receiver.name,
                item.seq,
                next_at=self.clock.now_ms() + int(delay * 1000),
                status=outcome.status,
            )
            self._failed(item, outcome, delay)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The store failed: the delivery stays as it was and is offered again (at least once).
            log.exception(
                "event=webhook_bookkeeping_failed receiver=%s event_id=%s", receiver.name, item.event_id
            )
            await asyncio.sleep(TICK_S)
        return False

    async def _post(self, receiver: WebhookReceiver, item: hooks.HookItem) -> Outcome:
        assert self._http is not None
        body = item.body.encode("utf-8")
        timestamp = str(int(time.time()))  # wall time: receivers compare it with their own clock
        headers = {
            "Content-Type": "application/json",
            "X-Houseline-Event": item.type,
            "X-Houseline-Delivery": item.event_id,
            "X-Houseline-Timestamp": timestamp,
            "X-Houseline-Signature": sign(receiver.secret, timestamp, body),
        }
        try:
            # No redirects: following one would turn the POST into a GET or send the event
            # somewhere the config does not name.
            async with self._http.post(
                receiver.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                retry_after = _seconds(resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            return Outcome(False, "timeout")
        except (aiohttp.ClientError, OSError) as e:
            return Outcome(False, type(e).__name__)
        if 200 <= status < 300:
            return Outcome(True, str(status))
        return Outcome(
            False,
            str(status),
            refused=400 <= status < 500 and status not in RETRYABLE_4XX,
            retry_after=retry_after,
        )

    # health and reporting

    def _succeeded(self, item: hooks.HookItem, outcome: Outcome) -> None:
        health = self.health[item.receiver]
        health.delivered += 1
        health.consecutive_failures = health.consecutive_refusals = 0
        health.last_status = outcome.status
        health.last_delivered_at = self.clock.now()
        self._stuck[item.receiver].discard(item.seq)
        log.info(
            "event=webhook_delivered receiver=%s event_id=%s type=%s room=%s attempts=%d status=%s",
            item.receiver,
            item.event_id,
            item.type,
            item.room_id or "-",
            item.attempts + 1,
            outcome.status,
        )
        if health.failing:
            health.failing = False
            log.info("event=webhook_receiver_recovered receiver=%s", item.receiver)
            self._tell(
                item.receiver,
                lambda depth: (
                    f"Webhook receiver {item.receiver} is accepting deliveries again; {depth} event(s) still queued for it."
                ),
            )

    def _failed(self, item: hooks.HookItem, outcome: Outcome, delay: float) -> None:
        health = self.health[item.receiver]
        health.failed += 1
        health.consecutive_failures += 1
        health.consecutive_refusals = health.consecutive_refusals + 1 if outcome.refused else 0
        health.last_status = outcome.status
        log.warning(
            "event=webhook_retry receiver=%s event_id=%s type=%s room=%s attempts=%d status=%s retry_in=%.1fs",
            item.receiver,
            item.event_id,
            item.type,
            item.room_id or "-",
            item.attempts + 1,
            outcome.status,
            delay,
        )
        if not health.failing and (
            health.consecutive_failures >= FAILURES_TO_REPORT
            or health.consecutive_refusals >= REFUSALS_TO_REPORT
        ):
            health.failing = True
            health.reports += 1
            self._stuck[item.receiver].add(item.seq)
            log.warning(
                "event=webhook_receiver_failing receiver=%s consecutive_failures=%d consecutive_refusals=%d last_status=%s",
                item.receiver,
                health.consecutive_failures,
                health.consecutive_refusals,
                outcome.status,
            )
            why = (
                (
                    f"{health.consecutive_refusals} deliveries in a row were refused with HTTP {outcome.status} (check its URL, "
                    "and that it verifies signatures with the secret in the config)"
                )
                if outcome.refused
                else (f"{health.consecutive_failures} deliveries in a row failed (last: {outcome.status})")
            )
            self._tell(
                item.receiver,
                lambda depth: (
                    f"Webhook receiver {item.receiver} is failing: {why}. Its events are kept and retried at least every "
                    f"{int(MAX_BACKOFF_S // 60)} minutes; {depth} event(s) are waiting. Other receivers are not affected."
                ),
            )
        elif (
            not health.failing
            and item.attempts + 1 >= FAILURES_TO_REPORT
            and item.seq not in self._stuck[item.receiver]
        ):
            # The receiver takes other rooms' events but keeps failing this one: the room waits.
            health.reports += 1
            self._stuck[item.receiver].add(item.seq)
            log.warning(
                "event=webhook_delivery_stuck receiver=%s event_id=%s room=%s attempts=%d status=%s",
                item.receiver,
                item.event_id,
                item.room_id or "-",
                item.attempts + 1,
                outcome.status,
            )
            self._tell(
                item.receiver,
                lambda depth: (
                    f"Webhook receiver {item.receiver} failed event {item.event_id} ({item.type}) {item.attempts + 1} times "
                    f"(last: {outcome.status}); later events of {item.room_id or 'its conversation'} wait behind it."
                ),
            )

    def _tell(self, name: str, text: Callable[[int], str]) -> None:
        """Posted in the background: a homeserver that is down must not hold up deliveries."""
        if self.report is None:
            return

        async def post() -> None:
            for attempt in range(REPORT_ATTEMPTS):
                try:
                    depth = (await hooks.queue_depth(self.store)).get(name, 0)
                    await self.report(text(depth))
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning(
                        "event=webhook_report_failed receiver=%s attempt=%d error=%s",
                        name,
                        attempt + 1,
                        type(e).__name__,
                    )
                    await asyncio.sleep(Backoff(first=2.0, cap=60.0).delay(attempt))

        task = asyncio.create_task(post(), name=f"webhook-report-{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _seconds(value: str | None) -> float | None:
    """Retry-After as seconds (the HTTP-date form is ignored: the backoff applies)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
