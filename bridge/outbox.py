"""The outbox: an employee's event is stored before the homeserver's transaction is answered,
then delivered by a worker per room, in order, surviving crashes and restarts.

A worker takes the oldest event of its room, hands it to the outbound pipeline, and deletes it
only when the pipeline finished with it (delivered, refused with a notice, or failed with a
notice). If the pipeline raises (the homeserver is down, the store hiccups) the event stays
first in line and is retried with backoff; other rooms carry on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from bridge.backoff import Backoff
from bridge.store import Store

log = logging.getLogger("houseline.outbox")

#: Delivers one event. ``fresh``: queued by this process and never attempted, so it cannot have
#: been delivered before (no crash, no earlier attempt) and the checks for that may be skipped.
Handle = Callable[..., Awaitable[None]]
MAX_BACKOFF_S = 60.0


class Outbox:
    def __init__(
        self, store: Store, handle: Handle, settle: Callable[[str], Awaitable[bool]] | None = None
    ) -> None:
        self.store = store
        self.handle = handle
        #: Asked before each delivery: reads the room's timeline first if a catch-up still owes
        #: it a read (True: the room's queue may have changed).
        self.settle = settle
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._stopping = False
        #: Cleared while the catch-up puts queues in order: workers finish the event in hand
        #: and take no new one.
        self._open = asyncio.Event()
        self._open.set()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: Queued by this process and not attempted yet (see Handle).
        self._fresh: set[str] = set()

    async def start(self) -> None:
        """Resume whatever was queued when the bridge last stopped."""
        rooms = await self.store.outbox_rooms()
        for room_id in rooms:
            self._ensure_worker(room_id)
        if rooms:
            log.info("event=outbox_resumed rooms=%d events=%d", len(rooms), await self.store.outbox_size())

    async def enqueue(self, events: list[dict[str, Any]]) -> None:
        """Durable once this returns: the homeserver may be answered."""
        if not events:
            return
        await self.store.outbox_add(events)
        self._fresh.update(e["event_id"] for e in events)
        for room_id in {e["room_id"] for e in events}:
            self._ensure_worker(room_id)
            self._wake[room_id].set()

    def wake(self, room_id: str) -> None:
        """Something was put in the room's queue by another path (held events released)."""
        self._ensure_worker(room_id)
        if room_id in self._wake:
            self._wake[room_id].set()

    async def pause(self) -> None:
        """Return once no worker is delivering and none will start until :meth:`resume`."""
        if self._open.is_set():
            log.info("event=outbox_paused")
        self._open.clear()
        await self._idle.wait()

    def resume(self) -> None:
        if not self._open.is_set():
            log.info("event=outbox_resumed_after_pause")
        self._open.set()
        for room_id in list(self._wake):
            self._wake[room_id].set()

    async def requeue(self, room_id: str, events: list[dict[str, Any]]) -> None:
        """Only while paused: put the room's queued ``events`` in the given (timeline) order."""
        await self.store.outbox_requeue(room_id, events)
        self._ensure_worker(room_id)

    def _ensure_worker(self, room_id: str) -> None:
        if self._stopping:
            return
        self._wake.setdefault(room_id, asyncio.Event())
        task = self._workers.get(room_id)
        if task is None or task.done():
            self._workers[room_id] = asyncio.create_task(self._work(room_id), name=f"outbox-{room_id}")

    async def _work(self, room_id: str) -> None:
        wake = self._wake[room_id]
        while not self._stopping:
            item = await self.store.outbox_next(room_id)
            if item is None:
                wake.clear()
                # Idle workers end; the next enqueue starts a new one.
                try:
                    await asyncio.wait_for(wake.wait(), timeout=30)
                except asyncio.TimeoutError:
                    if await self.store.outbox_next(room_id) is None:
                        self._workers.pop(room_id, None)
                        return
                continue
            if not self._open.is_set():
                await self._open.wait()
                continue  # the queue may have been put in a new order meanwhile
            event, attempts = item
            delay = 0.0
            self._busy += 1
            self._idle.clear()
            try:
                if self.settle is not None and await self.settle(room_id):
                    continue  # the room was read back: its first event may be another one now
                fresh = event["event_id"] in self._fresh and attempts == 0
                self._fresh.discard(event["event_id"])
                await self.handle(event, fresh=fresh)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await self.store.outbox_attempted(event["event_id"])
                delay = Backoff(first=0.5, cap=MAX_BACKOFF_S, jitter=0.2).delay(attempts)
                log.warning(
                    "event=outbox_retry room=%s event_id=%s attempts=%d error=%s retry_in=%.1fs",
                    room_id,
                    event["event_id"],
                    attempts + 1,
                    type(e).__name__,
                    delay,
                )
            else:
                # Usually a no-op: a delivery removes its entry in the commit that records it.
                await self.store.outbox_done(event["event_id"])
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()
            if delay:
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Stop the workers; an event being delivered stays queued and is redone on restart
        (the message map makes a finished delivery a no-op then)."""
        self._stopping = True
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
