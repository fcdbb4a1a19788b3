"""Continuous archive journaling: every message event of a portal, as the export's EML, to the
archive's SMTP journal address (Smarsh, Global Relay, Purview take journals this way).

The bridge queues each message event in the store before it answers the homeserver's
transaction (``bridge.store.journal``); this worker takes due rows oldest first, reads the event
back from the homeserver as the bot, renders it with ``bridge.record.eml.render_event`` and
hands it to the archive's SMTP server. Only a 2xx answer to DATA ends a row, in the commit that
writes its receipt; anything else (4xx, a dropped connection, a timeout, a crash in between)
leaves it queued and it is sent again later, with the same Message-ID, so an archive that
deduplicates keeps one copy. A permanent refusal (5xx) is retried too, less often, and reported:
the journal never drops a message on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp
from mautrix.api import Method, Path
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import ContentURI
from mautrix.util.async_db import Database

from bridge.backoff import Backoff
from bridge.clock import Clock
from bridge.integrations_config import SmtpArchiveConfig
from bridge.record.eml import render_event
from bridge.record.model import ExportEvent, ExportRoom, MediaFile, deleted_id
from bridge.store import PortalRow
from bridge.store import journal as journal_store
from bridge.store.journal import QueuedRow

log = logging.getLogger("houseline.journal")

#: What the journal sends (and ``record journal --check`` expects a receipt for): the export's
#: message events, and redactions, which the archive must see as well.
JOURNALED_TYPES = frozenset({"m.room.message", "m.sticker", "m.room.redaction"})
#: Rows taken per round; their rendering overlaps, their sending is one after the other.
BATCH = 50
RENDER_CONCURRENCY = 4
#: Events around a message read with it (its context: what it answers or edits, the bot's
#: verdict on it, reactions and edits that came meanwhile), half before, half after; with the
#: members the window shows, as the export's reader takes them from the timeline.
CONTEXT_LIMIT = 50
CONTEXT_FILTER = json.dumps(
    {"types": sorted(JOURNALED_TYPES | {"m.reaction", "m.room.member"}), "lazy_load_members": False}
)
#: How long a room's state (its members: From/To names) is reused across its messages.
STATE_TTL_S = 2.0
#: An employee's message still in the outbox waits this long past its due time for the
#: bridge's verdict (delivered, refused, held), so its EML says which.
VERDICT_WAIT_S = 120
#: Longest wait between two looks at the queue: the clock may be moved by the tests.
TICK_S = 1.0
TRANSIENT_MAX_S = 300.0
PERMANENT_MIN_S = 300.0
PERMANENT_MAX_S = 3600.0
UNREACHABLE_MAX_S = 60.0
_TRANSIENT = Backoff(first=1.0, cap=TRANSIENT_MAX_S, scale=(1.0, 1.1))
_PERMANENT = Backoff(first=PERMANENT_MIN_S, cap=PERMANENT_MAX_S)
_UNREACHABLE = Backoff(first=0.5, cap=UNREACHABLE_MAX_S)
SMTP_TIMEOUT_S = 20.0
#: A connection unused this long is closed before the next message rather than trusted.
IDLE_S = 30.0
GRACEFUL_STOP_S = 10.0


def is_journaled(raw: dict[str, Any]) -> bool:
    """A message event (not state) with an id: what goes to the archive."""
    return (
        raw.get("type") in JOURNALED_TYPES
        and "state_key" not in raw
        and isinstance(raw.get("event_id"), str)
        and bool(raw["event_id"])
        and isinstance(raw.get("room_id"), str)
    )


class Refused(Exception):
    """The homeserver or the archive answered, but not with the message accepted."""

    def __init__(self, reason: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.code = code


class Unreachable(Exception):
    """No SMTP session: the server is down, refuses connections, or TLS/AUTH failed. The row in
    hand is not to blame; the worker waits and tries again."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Rendered:
    data: bytes
    message_id: str


# --------------------------------------------------------------------------------------------
# SMTP (blocking, run in a thread)


class SmtpSender:
    """One SMTP session kept open across messages (throughput), reopened when it drops. Every
    call holds a lock, so a stop never closes the socket under a send in progress."""

    def __init__(
        self,
        config: SmtpArchiveConfig,
        timeout: float = SMTP_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.timeout = timeout
        #: The system's trust store and hostname checks; a test passes one trusting its own CA.
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._conn: smtplib.SMTP | None = None
        self._used_at = 0.0
        self._lock = threading.Lock()

    def send(self, data: bytes) -> str:
        """The server's answer to DATA ('250 ...') once it took the message."""
        with self._lock:
            reused = self._conn is not None and time.monotonic() - self._used_at < IDLE_S
            if not reused:
                self._drop()
            try:
                return self._transaction(data, reused)
            finally:
                self._used_at = time.monotonic()

    def _transaction(self, data: bytes, reused: bool) -> str:
        conn = self._connection()
        try:
            try:
                code, text = conn.mail(self.config.sender, self._options(conn, data))
            except (smtplib.SMTPServerDisconnected, OSError):
                if not reused:
                    raise
                # The server closed an idle session: open a new one, nothing was sent yet.
                self._drop()
                conn = self._connection()
                code, text = conn.mail(self.config.sender, self._options(conn, data))
            self._expect(conn, "MAIL", code, text)
            code, text = conn.rcpt(self.config.journal_address)
            self._expect(conn, "RCPT", code, text)
            code, text = conn.data(data)
            self._expect(conn, "DATA", code, text)
            return f"{code} {_text(text)}"
        except smtplib.SMTPResponseException as e:  # DATA not answered 354, or a 421 mid-way
            self._reset(conn, e.smtp_code)
            raise Refused(
                f"{e.smtp_code} {_text(e.smtp_error)}", permanent=500 <= e.smtp_code < 600, code=e.smtp_code
            ) from None
        except (smtplib.SMTPException, OSError):
            self._drop()
            raise

    @staticmethod
    def _options(conn: smtplib.SMTP, data: bytes) -> list[str]:
        return ["BODY=8BITMIME"] if not data.isascii() and conn.has_extn("8bitmime") else []

    def _expect(self, conn: smtplib.SMTP, step: str, code: int, text: bytes) -> None:
        if 200 <= code < 300:
            return
        self._reset(conn, code)
        raise Refused(f"{step} {code} {_text(text)}", permanent=500 <= code < 600, code=code)

    def _reset(self, conn: smtplib.SMTP, code: int) -> None:
        """After a refusal the session is reused (RSET), unless the server is closing it."""
        if code == 421:
            self._drop()
            return
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _connection(self) -> smtplib.SMTP:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        helo = c.sender.rpartition("@")[2] or "localhost"
        try:
            if c.security == "tls":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    c.host, c.port, local_hostname=helo, timeout=self.timeout, context=self.ssl_context
                )
            else:
                conn = smtplib.SMTP(c.host, c.port, local_hostname=helo, timeout=self.timeout)
        except (smtplib.SMTPException, OSError) as e:
            raise Unreachable(f"connect: {type(e).__name__}") from None
        try:
            conn.ehlo_or_helo_if_needed()
            if c.security == "starttls":
                # Never in clear text: a server that does not offer STARTTLS is a configuration error.
                if not conn.has_extn("starttls"):
                    raise Unreachable(
                        "the server offers no STARTTLS (archive.smtp.security: starttls)", permanent=True
                    )
                conn.starttls(context=self.ssl_context)
                conn.ehlo()
            if c.username:
                if not conn.has_extn("auth"):
                    raise Unreachable(
                        "the server offers no AUTH (archive.smtp.username is set)", permanent=True
                    )
                conn.login(c.username, c.password or "")
        except Unreachable:
            _close(conn)
            raise
        except smtplib.SMTPAuthenticationError as e:
            _close(conn)
            raise Unreachable(f"AUTH refused ({e.smtp_code})", permanent=True) from None
        except (smtplib.SMTPException, OSError) as e:
            _close(conn)
            raise Unreachable(f"session: {type(e).__name__}") from None
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            _close(self._conn)
            self._conn = None

    def close(self) -> None:
        """QUIT, unless a send still holds the session (it ends with the process)."""
        if self._lock.acquire(blocking=False):
            try:
                if self._conn is not None:
                    try:
                        self._conn.quit()
                    except (smtplib.SMTPException, OSError):
                        pass
                self._drop()
            finally:
                self._lock.release()


def _close(conn: smtplib.SMTP) -> None:
    try:
        conn.close()
    except OSError:
        pass


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------
# Rendering: the event and its context, read back from the homeserver


class Renderer:
    """Builds the ExportRoom the export would build, from a window of the room around the
    event (``/context``) instead of its whole history: one request per message."""

    def __init__(
        self,
        *,
        intent: IntentAPI,
        db: Database,
        bot: str,
        is_ghost: Callable[[str], bool],
        portal_of: Callable[[str], Awaitable[PortalRow | None]],
    ) -> None:
        self.intent = intent
        self.db = db
        self.bot = bot
        self.is_ghost = is_ghost
        self.portal_of = portal_of
        self._states: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def render(self, row: QueuedRow) -> Rendered:
        portal = await self.portal_of(row.room_id)
        if portal is None:
            raise Refused("the room is no longer a portal", permanent=True)
        context = await self._get(
            Path.v3.rooms[row.room_id].context[row.event_id],
            {"limit": str(CONTEXT_LIMIT), "filter": CONTEXT_FILTER},
        )
        event = context.get("event") or {}
        window = [*reversed(context.get("events_before") or []), event, *(context.get("events_after") or [])]
        window = [e for e in window if isinstance(e, dict)] + await self._parents(row.room_id, event, window)
        window.sort(key=lambda e: int(e.get("origin_server_ts") or 0))
        participants = {
            e["state_key"]: (e.get("content") or {}).get("displayname") or e["state_key"]
            for e in await self._state(row.room_id)
            if e.get("type") == "m.room.member" and isinstance(e.get("state_key"), str)
        }
        for e in window:  # as the export's reader: members the state no longer lists
            if e.get("type") == "m.room.member" and isinstance(e.get("state_key"), str):
                participants.setdefault(
                    e["state_key"], (e.get("content") or {}).get("displayname") or e["state_key"]
                )
        clients = frozenset(u for u in participants if self.is_ghost(u))
        room = ExportRoom(
            room_id=row.room_id,
            name=portal.name,
            network=portal.network,
            account=portal.account,
            chat_id=portal.chat_id,
            participants=participants,
            clients=clients,
            bot=self.bot,
            events=tuple(ExportEvent(e) for e in window),
            media=await self._media(event),
        )
        identities = await journal_store.client_identities(self.db, sorted(clients))
        msg = render_event(room, ExportEvent(event), identities)
        return Rendered(msg.as_bytes(), str(msg["Message-ID"]))

    async def _state(self, room_id: str) -> list[dict[str, Any]]:
        """The room's current state, as the export reads it (``/state``, whose order the To
        header keeps), shared by the messages of a room for a moment."""
        cached = self._states.get(room_id)
        if cached is not None and time.monotonic() - cached[0] < STATE_TTL_S:
            return cached[1]
        state = await self._get(Path.v3.rooms[room_id].state)
        events = [e for e in state if isinstance(e, dict)] if isinstance(state, list) else []
        now = time.monotonic()
        if len(self._states) > 256:
            self._states = {r: v for r, v in self._states.items() if now - v[0] < STATE_TTL_S}
        self._states[room_id] = (now, events)
        return events

    async def _parents(
        self, room_id: str, event: dict[str, Any], window: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """What the event edits, answers, annotates or redacts, when the window misses it."""
        ev = ExportEvent(event)
        wanted = {
            ev.relates_to,
            ev.reply_to,
            deleted_id(ev),
            str(event.get("redacts") or ev.content.get("redacts") or ""),
        }
        have = {e.get("event_id") for e in window}
        found = []
        for parent in sorted(p for p in wanted if p and p not in have):
            try:
                found.append(await self._get(Path.v3.rooms[room_id].event[parent]))
            except Refused as e:
                if not e.permanent:
                    raise
                # Not visible (purged, before the bot joined): the EML says "not in this export".
        return found

    async def _media(self, event: dict[str, Any]) -> dict[str, MediaFile]:
        content = event.get("content") or {}
        url = content.get("url")
        if not isinstance(url, str) or not url.startswith("mxc://"):
            return {}
        try:
            data = await self.intent.download_media(ContentURI(url))
        except MatrixRequestError as e:
            if e.http_status in (403, 404):
                return {}  # as the export: the EML notes the file is not included
            raise Refused(f"media: homeserver answered {e.http_status}", permanent=False) from None
        info = content.get("info") or {}
        return {
            url: MediaFile(
                mxc=url,
                file_name=content.get("filename") or content.get("body") or "file",
                mimetype=info.get("mimetype") or "application/octet-stream",
                data=data,
            )
        }

    async def _get(self, path: Any, query: dict[str, str] | None = None) -> Any:
        try:
            return await self.intent.api.request(Method.GET, path, query_params=query or {})
        except MatrixRequestError as e:
            raise Refused(
                f"homeserver answered {e.http_status} {e.errcode}", permanent=e.http_status in (403, 404)
            ) from None


# --------------------------------------------------------------------------------------------
# The worker


class Journal:
    def __init__(
        self,
        config: SmtpArchiveConfig,
        *,
        db: Database,
        intent: IntentAPI,
        bot: str,
        is_ghost: Callable[[str], bool],
        portal_of: Callable[[str], Awaitable[PortalRow | None]],
        clock: Clock,
    ) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.renderer = Renderer(intent=intent, db=db, bot=bot, is_ghost=is_ghost, portal_of=portal_of)
        self.sender = SmtpSender(config)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._render_slots = asyncio.Semaphore(RENDER_CONCURRENCY)
        #: Clock time (ms) before which no SMTP session is tried (the server was unreachable).
        self._not_before_ms = 0
        self._unreachable = 0
        # Counters for the metrics: messages accepted, transient failures (retried soon),
        # permanent refusals (retried rarely, reported), and when the archive last accepted one.
        self.sent = 0
        self.transient_failures = 0
        self.permanent_failures = 0
        self.last_accepted_ms: int | None = None

    async def capture(self, events: list[dict[str, Any]]) -> None:
        """Queue the events (one commit), due after the configured delay; durable on return."""
        rows = [(e["event_id"], e["room_id"]) for e in events if is_journaled(e)]
        if not rows:
            return
        await journal_store.enqueue(self.db, rows, self.clock.now_ms() + self.config.delay_s * 1000)
        self._wake.set()

    async def depth(self) -> int:
        return await journal_store.queue_size(self.db)

    async def start(self) -> None:
        waiting = await journal_store.queue_size(self.db)
        log.info(
            "event=journal_started host=%s port=%d security=%s delay_s=%d queued=%d",
            self.config.host,
            self.config.port,
            self.config.security,
            self.config.delay_s,
            waiting,
        )
        self._task = asyncio.create_task(self._run(), name="journal")

    async def stop(self) -> None:
        """Let the message in hand finish (its receipt committed), then stop; what is queued
        stays for the next start."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), GRACEFUL_STOP_S)
            except (asyncio.TimeoutError, Exception):
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.sender.close)

    async def _run(self) -> None:
        while not self._stopping:
            worked = False
            try:
                if self.clock.now_ms() >= self._not_before_ms:
                    worked = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=journal_round_failed")
            if worked or self._stopping:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except asyncio.TimeoutError:
                pass

    async def _round(self) -> bool:
        """Send what is due; True when a row was taken (the next round follows at once)."""
        now = self.clock.now_ms()
        rows = await journal_store.due(self.db, now, verdict_wait_ms=VERDICT_WAIT_S * 1000, limit=BATCH)
        if not rows:
            return False
        renders = [asyncio.create_task(self._render(row)) for row in rows]
        try:
            for row, task in zip(rows, renders, strict=True):
                if self._stopping or not await self._deliver(row, task):
                    break
        finally:
            for task in renders:
                task.cancel()
            await asyncio.gather(*renders, return_exceptions=True)
        return True

    async def _render(self, row: QueuedRow) -> Rendered:
        async with self._render_slots:
            return await self.renderer.render(row)

    async def _deliver(self, row: QueuedRow, render: asyncio.Task[Rendered]) -> bool:
        """One row: False when the archive is unreachable (the rest of the round waits)."""
        try:
            rendered = await render
        except asyncio.CancelledError:
            raise
        except Refused as e:
            await self._failed(row, e.reason, permanent=e.permanent)
            return True
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
            # The homeserver is away (the watch notices too): no row is to blame, wait for it.
            self._paused("homeserver", Unreachable(f"homeserver: {type(e).__name__}"))
            return False
        except Exception as e:  # the homeserver unreachable, a timeout, a bug: retried, never dropped
            await self._failed(row, f"render: {type(e).__name__}", permanent=False)
            return True
        try:
            response = await asyncio.to_thread(self.sender.send, rendered.data)
        except Unreachable as e:
            self._paused("smtp", e)
            return False
        except Refused as e:
            await self._failed(row, e.reason, permanent=e.permanent, code=e.code)
            return True
        except (smtplib.SMTPException, OSError) as e:
            # The session broke during the transaction: the archive may or may not have the
            # message; it goes again (same Message-ID).
            await self._failed(row, f"connection lost: {type(e).__name__}", permanent=False)
            return True
        accepted_at = self.clock.now_ms()
        await journal_store.accepted(self.db, row, rendered.message_id, accepted_at, response)
        self.sent += 1
        self.last_accepted_ms = accepted_at
        self._unreachable = 0
        log.info(
            "event=journal_sent room=%s event_id=%s message_id=%s attempts=%d bytes=%d",
            row.room_id,
            row.event_id,
            rendered.message_id,
            row.attempts + 1,
            len(rendered.data),
        )
        return True

    async def _failed(self, row: QueuedRow, reason: str, *, permanent: bool, code: int | None = None) -> None:
        delay = _backoff_s(row.attempts, permanent)
        await journal_store.retry(self.db, row, self.clock.now_ms() + int(delay * 1000), reason)
        if permanent:
            self.permanent_failures += 1
            log.warning(
                "event=journal_refused room=%s event_id=%s attempts=%d code=%s reason=%r retry_in=%.0fs note=kept_queued",
                row.room_id,
                row.event_id,
                row.attempts + 1,
                code,
                reason,
                delay,
            )
        else:
            self.transient_failures += 1
            log.warning(
                "event=journal_retry room=%s event_id=%s attempts=%d code=%s reason=%r retry_in=%.1fs",
                row.room_id,
                row.event_id,
                row.attempts + 1,
                code,
                reason,
                delay,
            )

    def _paused(self, what: str, e: Unreachable) -> None:
        """The SMTP server or the homeserver is unreachable: the whole queue waits (0.5 s
        doubling to a minute; 5 minutes for a configuration error such as AUTH refused)."""
        self._unreachable += 1
        delay = PERMANENT_MIN_S if e.permanent else _UNREACHABLE.delay(self._unreachable - 1)
        self._not_before_ms = self.clock.now_ms() + int(delay * 1000)
        if e.permanent:
            self.permanent_failures += 1
        else:
            self.transient_failures += 1
        if what == "smtp":
            log.warning(
                "event=journal_smtp_unreachable host=%s port=%d reason=%r failures=%d retry_in=%.1fs",
                self.config.host,
                self.config.port,
                e.reason,
                self._unreachable,
                delay,
            )
        else:
            log.warning(
                "event=journal_homeserver_unreachable reason=%r failures=%d retry_in=%.1fs",
                e.reason,
                self._unreachable,
                delay,
            )


def _backoff_s(attempts: int, permanent: bool) -> float:
    """1 s, 2 s, 4 s ... up to 5 minutes for what may pass; 5 minutes up to an hour for what
    the archive refused outright (a fix on its side lets the message through)."""
    return (_PERMANENT if permanent else _TRANSIENT).delay(attempts)


# --------------------------------------------------------------------------------------------
# Reconciling the record with the receipts (``houseline record journal --check``)


@dataclass(frozen=True)
class Gap:
    """A message event of a portal without a receipt: still ``queued`` (with its attempts and
    last error) or ``missing`` (never queued: journaling was off, or a capture was lost)."""

    portal: PortalRow
    event_id: str
    ts: int
    status: str
    row: QueuedRow | None = None


@dataclass
class JournalCheck:
    portals: int = 0
    events: int = 0
    journaled: int = 0
    gaps: list[Gap] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for g in self.gaps if g.status == status)


async def reconcile(
    reader: Any, db: Database, portals: list[PortalRow], *, since_ms: int | None = None
) -> JournalCheck:
    """Every journaled-type event in the portals' history (read as ``record check`` reads it)
    against the receipts; ``reader`` is a ``bridge.record.reader.HomeserverReader``."""
    result = JournalCheck(portals=len(portals))
    for portal in portals:
        receipts = await journal_store.receipts(db, portal.room_id)
        waiting = await journal_store.queued(db, portal.room_id)
        async for event in reader.events(portal.room_id):
            event.setdefault("room_id", portal.room_id)
            ts = int(event.get("origin_server_ts") or 0)
            if not is_journaled(event) or (since_ms is not None and ts < since_ms):
                continue
            result.events += 1
            event_id = event["event_id"]
            if event_id in receipts:
                result.journaled += 1
            else:
                row = waiting.get(event_id)
                result.gaps.append(Gap(portal, event_id, ts, "queued" if row else "missing", row))
    return result
