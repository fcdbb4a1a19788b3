"""Catching up with events a restarted homeserver never sent.

Synapse advances its appservice stream position when it *queues* events for an appservice, and
keeps the queue in memory until the transaction is built. A homeserver that stops in that window
forgets the queued events: the employee sees the message in the room, the client never gets it.
(Synapse refuses ``/sync`` to appservice users, so the bridge cannot simply resume a stream.)

So when the homeserver goes away the outbox stops taking new work, and when it is back the bridge
reads the recent timeline of the portals with a conversation under way (newest first, back to a
little before the outage), hands every event it never saw to the same handler a transaction
would, and puts each room's queued events back into the room's own order before the outbox
resumes. Events found this way and later sent by the homeserver too are recognised as seen and
handled once.

The other portals, the quiet ones (most of them, in a company with thousands of clients), are
read afterwards in the background (:class:`QuietSweep`), so the pause grows with the
conversations under way, not with every portal; a quiet room the outbox is about to deliver to
is read first, so its order holds too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import aiohttp
from mautrix.api import Method, Path
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError

from bridge.backoff import Backoff
from bridge.store import Store

log = logging.getLogger("houseline.catchup")

#: How far before an outage the timeline is read. Synapse holds events in memory only while a
#: transaction to the bridge is in flight, i.e. seconds; two minutes is a wide margin.
MARGIN_S = 120.0
#: Rooms read side by side (one request each in the common case).
CONCURRENCY = 8
PAGE = 50
#: A watch loop that overslept this long means the bridge itself was stopped.
FROZEN_S = 2.0
MAX_PAGES = 40
_HS_ERRORS = (aiohttp.ClientError, MatrixError, asyncio.TimeoutError, OSError)

Handler = Callable[[list[dict[str, Any]]], Awaitable[None]]
Requeue = Callable[[str, list[dict[str, Any]]], Awaitable[None]]


@dataclass
class CatchupResult:
    rooms: int = 0
    events: int = 0
    #: events the bridge had never seen and handled now
    recovered: int = 0
    #: rooms whose queued events were put back in timeline order
    requeued_rooms: int = 0


class Catchup:
    """Reads portals' recent timelines and settles what the bridge missed."""

    def __init__(
        self,
        *,
        intent: IntentAPI,
        store: Store,
        handle: Handler,
        is_ours: Callable[[str], bool],
        rooms: Callable[[], Awaitable[list[str]]],
        remember: Callable[[dict[str, Any]], Awaitable[Any]] | None = None,
    ) -> None:
        self.intent = intent
        self.store = store
        self.handle = handle
        self.is_ours = is_ours
        self.rooms = rooms
        #: Told of every event read back, the bridge's own included (its kicks, its ghosts'
        #: joins), so cached room state is what a transaction would have left.
        self.remember = remember

    async def _recent(self, room_id: str, since_ms: int) -> list[dict[str, Any]]:
        """The room's events from ``since_ms`` on, oldest first."""
        newest_first: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            query = {"dir": "b", "limit": str(PAGE)}
            if token:
                query["from"] = token
            page = await self.intent.api.request(
                Method.GET, Path.v3.rooms[room_id].messages, query_params=query
            )
            chunk = [e for e in page.get("chunk") or [] if isinstance(e, dict)]
            for event in chunk:
                if int(event.get("origin_server_ts") or 0) < since_ms:
                    return list(reversed(newest_first))
                event.setdefault("room_id", room_id)
                newest_first.append(event)
            if not chunk or not page.get("end") or page.get("end") == token:
                break
            token = page["end"]
        return list(reversed(newest_first))

    def _relevant(self, event: dict[str, Any]) -> bool:
        sender = event.get("sender")
        return isinstance(sender, str) and not self.is_ours(sender) and isinstance(event.get("event_id"), str)

    async def run(self, since_ms: int, requeue: Requeue, rooms: list[str] | None = None) -> CatchupResult:
        """Hand every unseen event since ``since_ms`` to the handler, then put each room's queued
        events in timeline order with ``requeue``. The caller has paused the outbox."""
        result = CatchupResult()
        room_ids = rooms if rooms is not None else await self.rooms()
        limit = asyncio.Semaphore(CONCURRENCY)

        async def fetch(room_id: str) -> tuple[str, list[dict[str, Any]]]:
            async with limit:
                try:
                    return room_id, await self._recent(room_id, since_ms)
                except MatrixError as e:
                    # The bridge left the room, or it is gone: nothing to catch up there.
                    if getattr(e, "http_status", 500) in (403, 404):
                        return room_id, []
                    raise

        for room_id, events in await asyncio.gather(*(fetch(r) for r in room_ids)):
            if self.remember is not None:
                for event in events:
                    await self.remember(event)
            relevant = [e for e in events if self._relevant(e)]
            if not relevant:
                continue
            result.rooms += 1
            result.events += len(relevant)
            seen = await self.store.seen_events([e["event_id"] for e in relevant])
            unseen = [e for e in relevant if e["event_id"] not in seen]
            if unseen:
                log.info("event=catchup_found room=%s events=%d", room_id, len(unseen))
                await self.handle(unseen)
                result.recovered += len(unseen)
            # Whatever of this stretch is still queued (sent late by the homeserver, or just
            # recovered) goes back in the order the room shows.
            queued = await self.store.outbox_has([e["event_id"] for e in relevant])
            if len(queued) > 1:
                await requeue(room_id, [e for e in relevant if e["event_id"] in queued])
                result.requeued_rooms += 1
        return result


#: How far before an outage an event makes a room count as one with a conversation under way.
ACTIVE_S = 3600.0
#: Quiet rooms read side by side in the background (the outbox and new traffic come first).
SWEEP_CONCURRENCY = 2
#: The store's mark for a sweep not finished yet, so a restart resumes it.
SWEEP_MARK = "catchup_sweep_since_ms"


class QuietSweep:
    """Reads the quiet portals after an outage in the background, each once; the outbox asks
    :meth:`settle` before delivering to a room, which reads that room first if it is pending."""

    def __init__(self, catchup: Catchup, requeue: Requeue) -> None:
        self.catchup = catchup
        self.requeue = requeue
        #: room -> read its timeline from this (ms)
        self._pending: dict[str, int] = {}
        self._reading: dict[str, asyncio.Future[CatchupResult]] = {}
        self._task: asyncio.Task[None] | None = None
        self._result = CatchupResult()
        self._t0 = 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def add(self, rooms: list[str], since_ms: int) -> None:
        """Durable once this returns: a restart before the sweep ends reads every portal again."""
        if not rooms:
            return
        mark = await self.catchup.store.get_mark(SWEEP_MARK)
        await self.catchup.store.put_mark(SWEEP_MARK, since_ms if mark is None else min(mark, since_ms))
        for room_id in rooms:
            self._pending[room_id] = min(since_ms, self._pending.get(room_id, since_ms))
        if self._task is None or self._task.done():
            self._result, self._t0 = CatchupResult(), time.monotonic()
            self._task = asyncio.create_task(self._run(), name="catchup-sweep")

    async def resume(self) -> None:
        """A sweep the last run of the bridge did not finish: every portal again, from its mark."""
        since_ms = await self.catchup.store.get_mark(SWEEP_MARK)
        if since_ms is not None:
            await self.add(await self.catchup.rooms(), since_ms)

    async def settle(self, room_id: str) -> bool:
        """Read ``room_id`` now if it is still pending; True if it was (its queue may have
        changed: the caller takes its next event again)."""
        if room_id not in self._pending and room_id not in self._reading:
            return False
        await self._read(room_id)
        return True

    async def _read(self, room_id: str) -> None:
        running = self._reading.get(room_id)
        if running is not None:
            await asyncio.shield(running)
            return
        since_ms = self._pending.get(room_id)
        if since_ms is None:
            return
        future: asyncio.Future[CatchupResult] = asyncio.get_running_loop().create_future()
        self._reading[room_id] = future
        try:
            result = await self.catchup.run(since_ms, self.requeue, [room_id])
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as e:
            future.set_exception(e)
            future.exception()  # retrieved: whoever waits re-raises it; nobody waiting is fine
            raise
        finally:
            self._reading.pop(room_id, None)
        self._pending.pop(room_id, None)
        self._result.recovered += result.recovered
        self._result.rooms += 1
        future.set_result(result)

    async def _run(self) -> None:
        # A few workers taking the next pending room, not a task per room: with 100,000 quiet
        # portals, that many tasks waiting their turn cost more memory than the bridge.
        while self._pending:
            await asyncio.gather(*(self._worker() for _ in range(SWEEP_CONCURRENCY)))
            # What is left is being read for the outbox (settle): done when those reads are.
            reads = [asyncio.shield(f) for f in self._reading.values()]
            await asyncio.gather(*reads, return_exceptions=True)
        await self.catchup.store.drop_mark(SWEEP_MARK)
        log.info(
            "event=catchup_sweep_done rooms=%d recovered=%d ms=%d",
            self._result.rooms,
            self._result.recovered,
            (time.monotonic() - self._t0) * 1000,
        )

    async def _worker(self) -> None:
        failures = 0
        while (room_id := self._next()) is not None:
            try:
                await self._read(room_id)
            except _HS_ERRORS as e:
                # The homeserver went away again: the room stays pending, and the outbox reads
                # it before delivering to it.
                log.info("event=catchup_sweep_retry room=%s error=%s", room_id, type(e).__name__)
            except Exception:
                log.exception("event=catchup_sweep_error room=%s", room_id)
            else:
                failures = 0
                continue
            # To the back of the line, so one room that keeps failing holds up no other.
            if room_id in self._pending:
                self._pending[room_id] = self._pending.pop(room_id)
            await asyncio.sleep(Backoff(first=1.0, cap=30.0).delay(failures))
            failures += 1

    def _next(self) -> str | None:
        """The oldest pending room nobody is reading (None: none left for this worker)."""
        return next((r for r in self._pending if r not in self._reading), None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class HomeserverWatch:
    """Notices the homeserver going away and coming back, and runs the catch-up in between.

    One light request every ``interval`` seconds. The catch-up after an outage reads every
    portal; the one when the bridge starts reads the rooms that were active when it last ran
    (a homeserver can only forget what it was about to send to a bridge that then vanished).
    """

    def __init__(
        self,
        *,
        intent: IntentAPI,
        catchup: Catchup,
        pause: Callable[[], Awaitable[None]],
        resume: Callable[[], None],
        requeue: Requeue,
        interval: float = 0.5,
        forget_after_s: float = 14 * 86400,
        on_back: Callable[[], None] | None = None,
        sweep: QuietSweep | None = None,
    ) -> None:
        self.intent = intent
        self.catchup = catchup
        self.pause = pause
        self.resume = resume
        self.requeue = requeue
        self.interval = interval
        self.forget_after_s = forget_after_s
        #: Told when the homeserver answers again after an outage.
        self.on_back = on_back
        #: Reads the quiet portals after an outage (every portal is read before the outbox
        #: resumes without one).
        self.sweep = sweep
        self._task: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        #: Wall-clock time (s) a freeze of this process began, until a catch-up is scheduled for it.
        self._frozen_at: float | None = None
        self._woken = asyncio.Event()
        #: Wall-clock time (s) the homeserver last answered before an outage, while it is down.
        self.down_since: float | None = None
        #: (since_ms, rooms or None for all, why) of a catch-up still to do
        self._pending: tuple[int, list[str] | None, str] | None = None
        self.catchups = 0

    async def start(self) -> None:
        store = self.catchup.store
        last_ms = await store.last_seen_at()
        if last_ms is not None:
            rooms = await store.rooms_seen_since(last_ms - 600_000)
            if rooms:
                self._pending = (int(last_ms - MARGIN_S * 1000), rooms, "start")
        self._task = asyncio.create_task(self._loop(), name="homeserver-watch")
        self._beat = asyncio.create_task(self._heartbeat(), name="bridge-heartbeat")

    async def stop(self) -> None:
        for task in (self._task, self._beat):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._beat = None
        if self.sweep is not None:
            await self.sweep.stop()

    async def _up(self) -> bool:
        try:
            await asyncio.wait_for(self.intent.versions(no_cache=True), timeout=max(self.interval * 4, 2.0))
            return True
        except _HS_ERRORS:
            return False

    async def _catch_up(self, why: str, since_ms: int, rooms: list[str] | None) -> None:
        """The outbox stays paused if this fails; the caller keeps it pending and tries again."""
        await self.pause()
        t0 = time.monotonic()
        quiet: list[str] = []
        if rooms is None and self.sweep is not None:
            rooms, quiet = await self._split(since_ms)
            # Marked pending before the outbox resumes: it reads a quiet room before delivering.
            await self.sweep.add(quiet, since_ms)
        result = await self.catchup.run(since_ms, self.requeue, rooms)
        self.catchups += 1
        log.info(
            "event=catchup_done why=%s rooms_read=%s quiet=%d rooms=%d events=%d recovered=%d"
            " requeued_rooms=%d ms=%d",
            why,
            "all" if rooms is None else len(rooms),
            len(quiet),
            result.rooms,
            result.events,
            result.recovered,
            result.requeued_rooms,
            (time.monotonic() - t0) * 1000,
        )
        self.resume()

    async def _split(self, since_ms: int) -> tuple[list[str], list[str]]:
        """The portals with a conversation under way before ``since_ms``, and the others."""
        store = self.catchup.store
        active = set(await store.rooms_active_since(int(since_ms - ACTIVE_S * 1000)))
        portals = await self.catchup.rooms()
        return [r for r in portals if r in active], [r for r in portals if r not in active]

    def _schedule(self, since_s: float, why: str) -> None:
        """A catch-up over every room, from ``since_s`` minus the margin (merged with one due)."""
        since = int((since_s - MARGIN_S) * 1000)
        if self._pending is not None:
            since = min(since, self._pending[0])
        self._pending = (since, None, why)

    async def _heartbeat(self) -> None:
        """Notice the process itself having been stopped or starved (a suspended VM, SIGSTOP, a
        debugger): a sleep that overran by more than FROZEN_S. Measured by a task that does
        nothing else, so time the watch spends waiting on the homeserver or in a catch-up never
        looks like a freeze (it did: every catch-up over 2.5 s was followed by a second one)."""
        while True:
            started, wall = time.monotonic(), time.time()
            await asyncio.sleep(self.interval)
            overran = time.monotonic() - started - self.interval
            if overran > FROZEN_S:
                log.warning("event=bridge_was_frozen for_s=%.1f", overran)
                self._frozen_at = wall if self._frozen_at is None else min(self._frozen_at, wall)
                self._woken.set()

    async def _loop(self) -> None:
        last_forget = 0.0
        first = True
        while True:
            if not first:
                self._woken.clear()
                try:
                    await asyncio.wait_for(self._woken.wait(), self.interval)
                except asyncio.TimeoutError:
                    pass
            first = False
            if self._frozen_at is not None:
                # The homeserver may have restarted unseen meanwhile: read the rooms as after an
                # outage.
                self._schedule(self._frozen_at, "bridge_was_frozen")
                self._frozen_at = None
                await self.pause()
            if not await self._up():
                if self.down_since is None:
                    self.down_since = time.time() - self.interval
                    log.warning("event=homeserver_down")
                    await self.pause()
                    # An outage replaces a start catch-up: it reads every room from earlier on.
                    self._schedule(self.down_since, "homeserver_back")
                continue
            try:
                if self.down_since is not None:
                    log.info("event=homeserver_back after_s=%.1f", time.time() - self.down_since)
                    self.down_since = None
                    if self.on_back is not None:
                        self.on_back()
                if self._pending is not None:
                    since_ms, rooms, why = self._pending
                    await self._catch_up(why, since_ms, rooms)
                    self._pending = None
                if time.monotonic() - last_forget >= 3600:
                    last_forget = time.monotonic()
                    forgotten = await self.catchup.store.forget_seen_before(
                        int((time.time() - self.forget_after_s) * 1000)
                    )
                    if forgotten:
                        log.info("event=seen_events_forgotten count=%d", forgotten)
            except _HS_ERRORS as e:
                # Went away again mid-way: the catch-up stays pending and the outbox paused.
                log.warning("event=catchup_failed error=%s detail=%s", type(e).__name__, str(e)[:200])
            except Exception:
                # A store hiccup or an unexpected answer: say so and try again next round.
                log.exception("event=catchup_error")
