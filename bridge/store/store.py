"""Queries over the bridge's tables; one method per question the pipelines ask."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from mautrix.util.async_db import Database, Scheme

from bridge.events import ChatRef
from bridge.store.db import OneTripDatabase
from bridge.store.upgrades import upgrade_table
from policies.audit import AuditEntry


@dataclass(frozen=True)
class PortalRow:
    network: str
    account: str
    chat_id: str
    room_id: str
    name: str
    #: active, blocked (the client blocked the company) or disconnected (the account is gone).
    status: str = "active"
    disclaimer_sent: bool = False
    legal_hold: bool = False
    #: The employee who looks after the conversation (reminders go to them); None: nobody named.
    assignee: str | None = None
    #: Who started the conversation when the company wrote first (an outreach), and when (ms).
    initiated_by: str | None = None
    initiated_at: int | None = None

    @property
    def chat(self) -> ChatRef:
        return ChatRef(self.network, self.account, self.chat_id)


@dataclass(frozen=True)
class AbsenceRow:
    user_id: str
    until_ms: int
    #: Comma-separated users covering (may be empty: nobody named).
    cover: str
    set_by: str

    @property
    def covers(self) -> tuple[str, ...]:
        return tuple(u for u in self.cover.split(",") if u)


@dataclass(frozen=True)
class WaitingRow:
    room_id: str
    since_ms: int
    event_id: str
    #: How many reminder steps already fired.
    steps: int


@dataclass(frozen=True)
class InviteClaim:
    """The outcome of a client bringing an invitation code: ``status`` is ok, expired, used
    or unknown; ``created_by`` and ``created_at`` name the link's maker when known."""

    status: str
    created_by: str | None = None
    created_at: int | None = None


@dataclass(frozen=True)
class AccountRow:
    network: str
    account_id: str
    owner_id: str
    owner_name: str
    enabled: bool
    can_reply: bool


@dataclass(frozen=True)
class ReactionLink:
    network: str
    account: str
    chat_id: str
    target_id: str
    sender_id: str
    emoji: str
    room_id: str
    event_id: str

    @property
    def chat(self) -> ChatRef:
        return ChatRef(self.network, self.account, self.chat_id)


@dataclass(frozen=True)
class MessageLink:
    network: str
    account: str
    chat_id: str
    remote_id: str
    room_id: str
    event_id: str
    direction: str
    has_media: bool = False
    created_at: int = 0

    @property
    def chat(self) -> ChatRef:
        return ChatRef(self.network, self.account, self.chat_id)


class Store:
    """Owns the database; SQLite by default, PostgreSQL when the URL says so."""

    _last_sequence: int = 0

    def __init__(self, url: str) -> None:
        self._message_waiters: dict[tuple[ChatRef, str], list[asyncio.Future[MessageLink]]] = {}
        #: Company accounts by (network, account id); only this process writes the table, and
        #: every outbound message asks for its account.
        self._accounts: dict[tuple[str, str], AccountRow | None] = {}
        #: Absences, read on every client message (the absence notice) and every new portal;
        #: only this process writes the table. None: not loaded since the last change.
        self._absences: dict[str, AbsenceRow] | None = None
        #: Events whose outbox entry record_delivery removed, until the outbox says it is done
        #: with them (one DELETE fewer per delivered message).
        self._delivered: set[str] = set()
        self.db = OneTripDatabase(
            Database.create(
                url,
                upgrade_table=upgrade_table,
                log=logging.getLogger("houseline.db"),  # type: ignore[arg-type]
            )
        )

    async def start(self) -> None:
        await self.db.start()

    async def stop(self) -> None:
        await self.db.stop()

    # portals

    async def get_portal(self, chat: ChatRef) -> PortalRow | None:
        row = await self.db.fetchrow(
            f"SELECT {_PORTAL_COLUMNS} FROM portal WHERE network=$1 AND account=$2 AND chat_id=$3",
            chat.network,
            chat.account,
            chat.chat_id,
        )
        return _portal(row) if row else None

    async def get_portal_by_room(self, room_id: str) -> PortalRow | None:
        row = await self.db.fetchrow(f"SELECT {_PORTAL_COLUMNS} FROM portal WHERE room_id=$1", room_id)
        return _portal(row) if row else None

    async def add_portal(self, portal: PortalRow) -> None:
        await self.db.execute(
            "INSERT INTO portal (network, account, chat_id, room_id, name, created_at, assignee, initiated_by, initiated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            portal.network,
            portal.account,
            portal.chat_id,
            portal.room_id,
            portal.name,
            _now_ms(),
            portal.assignee,
            portal.initiated_by,
            portal.initiated_at,
        )

    async def set_assignee(self, room_id: str, user_id: str | None) -> None:
        await self.db.execute("UPDATE portal SET assignee=$1 WHERE room_id=$2", user_id, room_id)

    async def set_initiated(self, room_id: str, user_id: str, at_ms: int) -> None:
        """An outreach into an existing conversation keeps the first initiator."""
        await self.db.execute(
            "UPDATE portal SET initiated_by=$1, initiated_at=$2 WHERE room_id=$3 AND initiated_by IS NULL",
            user_id,
            at_ms,
            room_id,
        )

    async def portals_of_account(self, network: str, account: str) -> list[PortalRow]:
        rows = await self.db.fetch(
            f"SELECT {_PORTAL_COLUMNS} FROM portal WHERE network=$1 AND account=$2", network, account
        )
        return [_portal(r) for r in rows]

    async def all_portals(self) -> list[PortalRow]:
        rows = await self.db.fetch(f"SELECT {_PORTAL_COLUMNS} FROM portal ORDER BY created_at")
        return [_portal(r) for r in rows]

    async def portal_room_ids(self) -> list[str]:
        """Every portal's room, oldest first: what a catch-up goes over, without building a
        row per portal while the outbox waits."""
        return [r["room_id"] for r in await self.db.fetch("SELECT room_id FROM portal ORDER BY created_at")]

    async def delete_portal(self, room_id: str) -> None:
        """After a retention purge: the room is gone; the message map keeps its rows no longer."""
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM message WHERE room_id=$1", room_id)
            await conn.execute("DELETE FROM reaction WHERE room_id=$1", room_id)
            await conn.execute("DELETE FROM portal WHERE room_id=$1", room_id)

    async def set_portal_flag(self, room_id: str, flag: str, value: bool) -> None:
        if flag not in ("disclaimer_sent", "legal_hold"):
            raise ValueError(flag)
        await self.db.execute(f"UPDATE portal SET {flag}=$1 WHERE room_id=$2", value, room_id)

    async def set_portal_status(self, room_id: str, status: str) -> None:
        await self.db.execute("UPDATE portal SET status=$1 WHERE room_id=$2", status, room_id)

    async def move_portal(self, room_id: str, new_chat_id: str) -> None:
        """The network gave the chat a new id (a group became a supergroup); the room stays."""
        await self.db.execute("UPDATE portal SET chat_id=$1 WHERE room_id=$2", new_chat_id, room_id)

    # company accounts

    async def get_account(self, network: str, account_id: str) -> AccountRow | None:
        key = (network, account_id)
        if key in self._accounts:
            return self._accounts[key]
        row = await self.db.fetchrow(
            "SELECT network, account_id, owner_id, owner_name, enabled, can_reply FROM account WHERE network=$1 AND account_id=$2",
            network,
            account_id,
        )
        account = None
        if row is not None:
            data = dict(row)
            data["enabled"], data["can_reply"] = bool(data["enabled"]), bool(data["can_reply"])
            account = AccountRow(**data)
        self._accounts[key] = account
        return account

    async def put_account(self, account: AccountRow) -> None:
        await self.db.execute(
            "INSERT INTO account (network, account_id, owner_id, owner_name, enabled, can_reply, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (network, account_id) DO UPDATE SET"
            " owner_id=excluded.owner_id, owner_name=excluded.owner_name, enabled=excluded.enabled,"
            " can_reply=excluded.can_reply, updated_at=excluded.updated_at",
            account.network,
            account.account_id,
            account.owner_id,
            account.owner_name,
            account.enabled,
            account.can_reply,
            _now_ms(),
        )
        self._accounts[(account.network, account.account_id)] = account

    async def disabled_accounts(self) -> list[AccountRow]:
        """Company accounts switched off on the network's side (capture health at start-up)."""
        rows = await self.db.fetch(
            "SELECT network, account_id, owner_id, owner_name, enabled, can_reply FROM account WHERE enabled=false ORDER BY network, account_id"
        )
        return [
            AccountRow(
                r["network"], r["account_id"], r["owner_id"], r["owner_name"], False, bool(r["can_reply"])
            )
            for r in rows
        ]

    # audit trail (hash-chained; see policies.audit)

    async def last_audit(self) -> tuple[int, str] | None:
        row = await self.db.fetchrow("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        return (int(row["seq"]), row["hash"]) if row else None

    async def add_audits(self, entries: list[AuditEntry]) -> None:
        """Appended in one transaction: all of them or none (a unique violation on ``seq`` means
        another process appended first)."""
        async with self.db.acquire() as conn, conn.transaction():
            for entry in entries:
                await conn.execute(
                    "INSERT INTO audit (seq, ts_ms, actor, action, subject, verdict, rule, details, prev_hash, hash)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    entry.seq,
                    entry.ts_ms,
                    entry.actor,
                    entry.action,
                    entry.subject,
                    entry.verdict,
                    entry.rule,
                    json.dumps(entry.details, sort_keys=True, ensure_ascii=False),
                    entry.prev_hash,
                    entry.hash,
                )

    async def audit_entries(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        query = "SELECT seq, ts_ms, actor, action, subject, verdict, rule, details, prev_hash, hash FROM audit WHERE seq > $1 ORDER BY seq"
        rows = await self.db.fetch(query + (f" LIMIT {int(limit)}" if limit else ""), after_seq)
        return [
            AuditEntry(
                seq=int(r["seq"]),
                ts_ms=int(r["ts_ms"]),
                actor=r["actor"],
                action=r["action"],
                subject=r["subject"],
                verdict=r["verdict"],
                rule=r["rule"],
                details=json.loads(r["details"]),
                prev_hash=r["prev_hash"],
                hash=r["hash"],
            )
            for r in rows
        ]

    # employees' messages the policy holds back until a senior is present (join.senior_role);
    # not the legal hold, which is a portal's flag

    async def hold_for_senior(self, room_id: str, event_id: str, event: dict) -> None:
        await self.db.execute(
            "INSERT INTO held_for_senior (room_id, event_id, event, held_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            room_id,
            event_id,
            json.dumps(event),
            _now_ms(),
        )

    async def held_for_senior_count(self) -> int:
        """Messages waiting for a senior in all rooms (the metrics)."""
        return int(await self.db.fetchval("SELECT COUNT(*) FROM held_for_senior"))

    async def held_for_senior(self, room_id: str) -> list[dict]:
        rows = await self.db.fetch(
            "SELECT event FROM held_for_senior WHERE room_id=$1 ORDER BY held_at, event_id", room_id
        )
        return [json.loads(r["event"]) for r in rows]

    async def release_to_outbox(self, room_id: str, events: list[dict]) -> None:
        """Held events go back into the outbox, behind what is queued, in one commit: there is
        no moment at which a released message is neither held nor queued."""
        async with self.db.acquire() as conn, conn.transaction():
            for event in events:
                await conn.execute(
                    "DELETE FROM held_for_senior WHERE room_id=$1 AND event_id=$2", room_id, event["event_id"]
                )
                await conn.execute(
                    "INSERT INTO outbox (event_id, room_id, event, enqueued_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    event["event_id"],
                    room_id,
                    json.dumps(event),
                    self._next_sequence(),
                )

    async def release_reviewed(self, item_id: int, event: dict, *, actor: str, at_ms: int) -> bool:
        """A held message a reviewer approved goes into the outbox in the commit that closes
        its review item: never approved and lost, never queued and still held. False when the
        item was finished meanwhile (another reviewer approved or rejected it)."""
        async with self.db.acquire() as conn, conn.transaction():
            done = await conn.fetchval(
                "UPDATE review_item SET state='approved', closed_by=$2, closed_at=$3, event=NULL"
                " WHERE id=$1 AND held AND state IN ('open', 'claimed', 'escalated') RETURNING id",
                item_id,
                actor,
                at_ms,
            )
            if done is None:
                return False
            await conn.execute(
                "INSERT INTO outbox (event_id, room_id, event, enqueued_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                event["event_id"],
                event["room_id"],
                json.dumps(event),
                self._next_sequence(),
            )
        return True

    # outbox: employees' events waiting to be delivered, in arrival order per room

    async def outbox_add(self, events: list[dict]) -> None:
        """All or nothing, so a transaction is either fully queued or answered with an error;
        a queued event is marked seen in the same step."""
        now = _now_ms()
        async with self.db.acquire() as conn, conn.transaction():
            for event in events:
                await conn.execute(
                    "INSERT INTO outbox (event_id, room_id, event, enqueued_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    event["event_id"],
                    event["room_id"],
                    json.dumps(event),
                    self._next_sequence(),
                )
                await conn.execute(
                    "INSERT INTO seen_event (event_id, room_id, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    event["event_id"],
                    event["room_id"],
                    now,
                )

    def _next_sequence(self) -> int:
        """Strictly increasing across transactions and restarts (nanoseconds, never repeated),
        so the outbox hands events out exactly in the order the homeserver gave them."""
        self._last_sequence = max(self._last_sequence + 1, time.time_ns())
        return self._last_sequence

    async def outbox_next(self, room_id: str) -> tuple[dict, int] | None:
        row = await self.db.fetchrow(
            "SELECT event, attempts FROM outbox WHERE room_id=$1 ORDER BY enqueued_at, event_id LIMIT 1",
            room_id,
        )
        return (json.loads(row["event"]), int(row["attempts"])) if row else None

    async def outbox_rooms(self) -> list[str]:
        return [r["room_id"] for r in await self.db.fetch("SELECT DISTINCT room_id FROM outbox")]

    async def outbox_attempted(self, event_id: str) -> None:
        await self.db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE event_id=$1", event_id)

    async def outbox_done(self, event_id: str) -> None:
        if event_id in self._delivered:
            self._delivered.discard(event_id)  # record_delivery removed it in its own commit
            return
        await self.db.execute("DELETE FROM outbox WHERE event_id=$1", event_id)

    async def outbox_size(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM outbox"))

    async def outbox_requeue(self, room_id: str, events: list[dict]) -> None:
        """Put ``events`` (timeline order) at the end of the room's queue, after what is already
        there, replacing any queued copy: the catch-up's order is the room's true order."""
        async with self.db.acquire() as conn, conn.transaction():
            for event in events:
                await conn.execute("DELETE FROM outbox WHERE event_id=$1", event["event_id"])
            for event in events:
                await conn.execute(
                    "INSERT INTO outbox (event_id, room_id, event, enqueued_at) VALUES ($1, $2, $3, $4)",
                    event["event_id"],
                    room_id,
                    json.dumps(event),
                    self._next_sequence(),
                )

    async def outbox_has(self, event_ids: list[str]) -> set[str]:
        return await self._present("outbox", event_ids)

    # events the appservice already handled (dedupe across transactions, restarts and catch-ups)

    async def seen_events(self, event_ids: list[str]) -> set[str]:
        return await self._present("seen_event", event_ids)

    async def _present(self, table: str, event_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(event_ids), 200):
            chunk = event_ids[i : i + 200]
            marks = ",".join(f"${n + 1}" for n in range(len(chunk)))
            rows = await self.db.fetch(f"SELECT event_id FROM {table} WHERE event_id IN ({marks})", *chunk)
            found.update(r["event_id"] for r in rows)
        return found

    async def mark_seen(self, events: list[tuple[str, str]]) -> None:
        """(event_id, room_id) pairs, in one transaction."""
        if not events:
            return
        now = _now_ms()
        async with self.db.acquire() as conn, conn.transaction():
            for event_id, room_id in events:
                await conn.execute(
                    "INSERT INTO seen_event (event_id, room_id, seen_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    event_id,
                    room_id,
                    now,
                )

    async def last_seen_at(self) -> int | None:
        value = await self.db.fetchval("SELECT MAX(seen_at) FROM seen_event")
        return int(value) if value is not None else None

    async def rooms_seen_since(self, at_ms: int) -> list[str]:
        rows = await self.db.fetch("SELECT DISTINCT room_id FROM seen_event WHERE seen_at >= $1", at_ms)
        return [r["room_id"] for r in rows]

    async def forget_seen_before(self, at_ms: int) -> int:
        n = await self.db.fetchval("SELECT COUNT(*) FROM seen_event WHERE seen_at < $1", at_ms)
        await self.db.execute("DELETE FROM seen_event WHERE seen_at < $1", at_ms)
        return int(n)

    # offboarded employees (refused in portals from then on)

    async def add_offboarded(self, user_id: str, successor: str) -> None:
        await self.db.execute(
            "INSERT INTO offboarded (user_id, successor, at_ms) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id) DO UPDATE SET successor=excluded.successor, at_ms=excluded.at_ms",
            user_id,
            successor,
            _now_ms(),
        )

    async def offboarded(self) -> dict[str, str]:
        return {
            r["user_id"]: r["successor"]
            for r in await self.db.fetch("SELECT user_id, successor FROM offboarded")
        }

    # absences (new clients skip the absent; a cover stands in)

    async def put_absence(self, absence: AbsenceRow) -> None:
        await self.db.execute(
            "INSERT INTO absence (user_id, until_ms, cover, set_by, at_ms) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (user_id) DO UPDATE SET until_ms=excluded.until_ms, cover=excluded.cover,"
            " set_by=excluded.set_by, at_ms=excluded.at_ms",
            absence.user_id,
            absence.until_ms,
            absence.cover,
            absence.set_by,
            _now_ms(),
        )
        self._absences = None

    async def absences(self) -> dict[str, AbsenceRow]:
        if self._absences is None:
            rows = await self.db.fetch("SELECT user_id, until_ms, cover, set_by FROM absence")
            self._absences = {
                r["user_id"]: AbsenceRow(r["user_id"], int(r["until_ms"]), r["cover"], r["set_by"])
                for r in rows
            }
        return dict(self._absences)

    async def end_absence(self, user_id: str) -> list[tuple[str, tuple[str, ...]]]:
        """Ends it and returns the rooms it touched with whom it invited there, in one commit."""
        async with self.db.acquire() as conn, conn.transaction():
            rows = await conn.fetch("SELECT room_id, invited FROM absence_room WHERE user_id=$1", user_id)
            await conn.execute("DELETE FROM absence_room WHERE user_id=$1", user_id)
            await conn.execute("DELETE FROM absence WHERE user_id=$1", user_id)
        self._absences = None
        return [(r["room_id"], tuple(u for u in r["invited"].split(",") if u)) for r in rows]

    async def add_absence_room(self, user_id: str, room_id: str, invited: tuple[str, ...]) -> None:
        """Adds to whom the absence invited there (an absence set again keeps the earlier ones,
        so its end still removes them)."""
        async with self.db.acquire() as conn, conn.transaction():
            before = await conn.fetchval(
                "SELECT invited FROM absence_room WHERE user_id=$1 AND room_id=$2", user_id, room_id
            )
            merged = tuple(dict.fromkeys([*(before or "").split(","), *invited]))
            await conn.execute(
                "INSERT INTO absence_room (user_id, room_id, invited) VALUES ($1, $2, $3)"
                " ON CONFLICT (user_id, room_id) DO UPDATE SET invited=excluded.invited",
                user_id,
                room_id,
                ",".join(u for u in merged if u),
            )

    async def absence_client_told(self, user_id: str, room_id: str) -> bool:
        """Marks the room's client as told of the absence; False if they already were."""
        row = await self.db.fetchrow(
            "INSERT INTO absence_room (user_id, room_id, invited, client_told) VALUES ($1, $2, '', true)"
            " ON CONFLICT (user_id, room_id) DO UPDATE SET client_told=true WHERE absence_room.client_told = false"
            " RETURNING room_id",
            user_id,
            room_id,
        )
        return row is not None

    # invitation codes (a client opening an employee's link; only hashes are stored)

    async def add_invite_code(
        self, code_hash: str, network: str, account: str, created_by: str, expires_at: int
    ) -> None:
        await self.db.execute(
            "INSERT INTO invite_code (code_hash, network, account, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            code_hash,
            network,
            account,
            created_by,
            _now_ms(),
            expires_at,
        )

    async def claim_invite_code(self, chat: ChatRef, code_hash: str, now_ms: int) -> InviteClaim:
        """Single use, atomically: the first chat to bring a valid code gets it; the same chat
        bringing it again (a redelivered message) gets it again, anyone else is refused."""
        row = await self.db.fetchrow(
            "UPDATE invite_code SET used_at=$5, used_chat=$4 WHERE code_hash=$1 AND network=$2 AND account=$3"
            " AND expires_at > $5 AND (used_chat IS NULL OR used_chat=$4) RETURNING created_by, created_at",
            code_hash,
            chat.network,
            chat.account,
            chat.chat_id,
            now_ms,
        )
        if row is not None:
            return InviteClaim("ok", row["created_by"], int(row["created_at"]))
        row = await self.db.fetchrow(
            "SELECT created_by, created_at, expires_at, used_chat FROM invite_code WHERE code_hash=$1 AND network=$2 AND account=$3",
            code_hash,
            chat.network,
            chat.account,
        )
        if row is None:
            return InviteClaim("unknown")
        status = "used" if row["used_chat"] is not None else "expired"
        return InviteClaim(status, row["created_by"], int(row["created_at"]))

    # clients waiting for an answer (the reminder clock; rows written with the messages)

    async def waiting(self) -> list[WaitingRow]:
        rows = await self.db.fetch("SELECT room_id, since_ms, event_id, steps FROM waiting ORDER BY since_ms")
        return [WaitingRow(r["room_id"], int(r["since_ms"]), r["event_id"], int(r["steps"])) for r in rows]

    async def waiting_row(self, room_id: str) -> WaitingRow | None:
        row = await self.db.fetchrow(
            "SELECT room_id, since_ms, event_id, steps FROM waiting WHERE room_id=$1", room_id
        )
        return (
            WaitingRow(row["room_id"], int(row["since_ms"]), row["event_id"], int(row["steps"]))
            if row
            else None
        )

    async def waiting_closed_told(self, room_id: str) -> bool:
        """Marks the waiting client as told the company is closed; False if they already were
        (or nobody waits)."""
        row = await self.db.fetchrow(
            "UPDATE waiting SET closed_told=true WHERE room_id=$1 AND closed_told=false RETURNING room_id",
            room_id,
        )
        return row is not None

    async def waiting_step(self, room_id: str, since_ms: int, steps: int) -> bool:
        """Count one more reminder step, unless the clock was stopped or moved meanwhile."""
        row = await self.db.fetchrow(
            "UPDATE waiting SET steps=$3 + 1 WHERE room_id=$1 AND since_ms=$2 AND steps=$3 RETURNING room_id",
            room_id,
            since_ms,
            steps,
        )
        return row is not None

    # counters (round-robin assignment)

    async def next_counter(self, name: str) -> int:
        """0, 1, 2, ... per name; survives restarts.

        One upsert, then the value it left: on PostgreSQL several portals are created at once
        over a pool of connections, and a read-then-write would let two first contacts both
        insert (a unique violation) or both read the same value (the same assignee twice); the
        upsert's row lock makes concurrent callers take turns until the transaction ends.
        """
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO counter (name, value) VALUES ($1, 1)"
                " ON CONFLICT (name) DO UPDATE SET value = counter.value + 1",
                name,
            )
            value = await conn.fetchval("SELECT value FROM counter WHERE name=$1", name)
        return int(value) - 1

    # named numbers (the counter table): marks that must survive a restart

    async def put_mark(self, name: str, value: int) -> None:
        await self.db.execute(
            "INSERT INTO counter (name, value) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            name,
            value,
        )

    async def get_mark(self, name: str) -> int | None:
        value = await self.db.fetchval("SELECT value FROM counter WHERE name=$1", name)
        return int(value) if value is not None else None

    async def drop_mark(self, name: str) -> None:
        await self.db.execute("DELETE FROM counter WHERE name=$1", name)

    async def rooms_active_since(self, at_ms: int) -> list[str]:
        """The conversations under way: rooms where, since ``at_ms``, the homeserver sent the
        bridge an event (anyone's), the bridge mapped a message (a client's it posted, an answer
        it delivered) or made the portal, and rooms with an event still queued for delivery. What
        the bridge wrote counts on its own: the homeserver's echo of it may not have arrived."""
        rows = await self.db.fetch(
            "SELECT room_id FROM seen_event WHERE seen_at >= $1"
            " UNION SELECT room_id FROM message WHERE created_at >= $1"
            " UNION SELECT room_id FROM portal WHERE created_at >= $1"
            " UNION SELECT room_id FROM outbox",
            at_ms,
        )
        return [r["room_id"] for r in rows]

    async def count_portals(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM portal"))

    # ghosts

    async def get_ghost_displayname(self, user_id: str) -> str | None:
        return await self.db.fetchval("SELECT displayname FROM ghost WHERE user_id=$1", user_id)

    async def put_ghost(self, user_id: str, network: str, remote_id: str, displayname: str) -> None:
        await self.db.execute(
            "INSERT INTO ghost (user_id, network, remote_id, displayname) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (user_id) DO UPDATE SET displayname=excluded.displayname",
            user_id,
            network,
            remote_id,
            displayname,
        )

    async def get_ghost_picture(self, user_id: str) -> str | None:
        return await self.db.fetchval("SELECT picture_ref FROM ghost WHERE user_id=$1", user_id)

    async def put_ghost_picture(self, user_id: str, ref: str) -> None:
        """Only for a ghost already stored (``put_ghost`` comes first: a ghost gets its name
        before its picture)."""
        await self.db.execute("UPDATE ghost SET picture_ref=$1 WHERE user_id=$2", ref, user_id)

    # message map

    async def get_message(self, chat: ChatRef, remote_id: str) -> MessageLink | None:
        row = await self.db.fetchrow(
            f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE network=$1 AND account=$2 AND chat_id=$3 AND remote_id=$4",
            chat.network,
            chat.account,
            chat.chat_id,
            remote_id,
        )
        return _message(row) if row else None

    async def get_messages_by_event(self, event_id: str) -> list[MessageLink]:
        """Every remote message an event became (a long text may have been split), in order."""
        rows = await self.db.fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE event_id=$1 ORDER BY created_at, remote_id",
            event_id,
        )
        return [_message(r) for r in rows]

    async def messages_of_room(self, room_id: str) -> list[MessageLink]:
        rows = await self.db.fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE room_id=$1 ORDER BY created_at", room_id
        )
        return [_message(r) for r in rows]

    async def add_message(self, link: MessageLink) -> None:
        await self._insert_message(self.db, link)
        self._announce([link])

    async def record_inbound(self, link: MessageLink, *, waits: bool | None = None) -> None:
        """A bridged client message: its mapping written and its posting mark cleared in one
        commit (one fsync on PostgreSQL instead of two, on the path every message takes).

        ``waits``: True, the client now waits for an answer (the reminder clock starts unless
        it runs already); False, the company answered (its own account wrote); None: neither.
        In the same commit, so a crash never loses a reminder nor fires one after an answer."""
        async with self.db.acquire() as conn, conn.transaction():
            await self._insert_message(conn, link)
            await conn.execute(
                "DELETE FROM inbound_in_flight WHERE network=$1 AND account=$2 AND chat_id=$3 AND remote_id=$4",
                link.network,
                link.account,
                link.chat_id,
                link.remote_id,
            )
            if waits:
                await conn.execute(
                    "INSERT INTO waiting (room_id, since_ms, event_id, steps) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
                    link.room_id,
                    link.created_at or _now_ms(),
                    link.event_id,
                )
            elif waits is False:
                await conn.execute("DELETE FROM waiting WHERE room_id=$1", link.room_id)
        self._announce([link])

    async def record_delivery(
        self, event_id: str, links: list[MessageLink], *, answered: bool = False
    ) -> None:
        """A delivered employee event: its mapping(s) written, its sending mark and its outbox
        entry removed, in one commit; ``answered`` (a message reached the client) also stops
        the room's reminder clock in that commit."""
        async with self.db.acquire() as conn, conn.transaction():
            for link in links:
                await self._insert_message(conn, link)
            await conn.execute("DELETE FROM outbound_in_flight WHERE event_id=$1", event_id)
            await conn.execute("DELETE FROM outbox WHERE event_id=$1", event_id)
            if answered and links:
                await conn.execute("DELETE FROM waiting WHERE room_id=$1", links[0].room_id)
        self._delivered.add(event_id)
        self._announce(links)

    @staticmethod
    async def _insert_message(conn, link: MessageLink) -> None:
        await conn.execute(
            "INSERT INTO message (network, account, chat_id, remote_id, room_id, event_id, direction, has_media, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            link.network,
            link.account,
            link.chat_id,
            link.remote_id,
            link.room_id,
            link.event_id,
            link.direction,
            link.has_media,
            link.created_at or _now_ms(),
        )

    def _announce(self, links: list[MessageLink]) -> None:
        """Committed: wake whoever waits for these mappings."""
        for link in links:
            for waiter in self._message_waiters.pop((link.chat, link.remote_id), []):
                if not waiter.done():
                    waiter.set_result(link)

    async def wait_for_message(self, chat: ChatRef, remote_id: str, timeout: float) -> MessageLink | None:
        """The mapping of a remote message, waiting up to ``timeout`` for it to be recorded: a
        network may report on a message (read, failed) before its send call has returned."""
        found = await self.get_message(chat, remote_id)
        if found is not None or timeout <= 0:
            return found
        key = (chat, remote_id)
        waiter: asyncio.Future[MessageLink] = asyncio.get_running_loop().create_future()
        self._message_waiters.setdefault(key, []).append(waiter)
        try:
            # Recorded between the lookup and the registration: look once more.
            found = await self.get_message(chat, remote_id)
            if found is not None:
                return found
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            waiters = self._message_waiters.get(key)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._message_waiters[key]

    # inbound posts in flight: a client message marked before it is posted to Matrix, the mark
    # cleared with the mapping (see record_inbound)

    async def mark_inbound_posting(self, chat: ChatRef, remote_id: str, room_id: str) -> None:
        await self.db.execute(
            "INSERT INTO inbound_in_flight (network, account, chat_id, remote_id, room_id) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            chat.network,
            chat.account,
            chat.chat_id,
            remote_id,
            room_id,
        )

    async def inbound_state(self, chat: ChatRef, remote_id: str) -> tuple[bool, str | None]:
        """(already mapped, room of its posting mark or None) for a remote message, in one round
        trip: every inbound message asks both, and each round trip costs the event loop a hop to
        the database's thread (SQLite) or the server (PostgreSQL)."""
        row = await self.db.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM message WHERE network=$1 AND account=$2 AND chat_id=$3 AND remote_id=$4) AS mapped,"
            " (SELECT room_id FROM inbound_in_flight WHERE network=$1 AND account=$2 AND chat_id=$3 AND remote_id=$4) AS posting",
            chat.network,
            chat.account,
            chat.chat_id,
            remote_id,
        )
        return bool(row["mapped"]), row["posting"]

    async def inbound_posting(self, chat: ChatRef, remote_id: str) -> str | None:
        """The room a client message was marked as being posted to, or None."""
        return await self.db.fetchval(
            "SELECT room_id FROM inbound_in_flight WHERE network=$1 AND account=$2 AND chat_id=$3 AND remote_id=$4",
            chat.network,
            chat.account,
            chat.chat_id,
            remote_id,
        )

    async def clear_inbound_posting(self, chat: ChatRef, remote_id: str) -> None:
        await self.db.execute(
            "DELETE FROM inbound_in_flight WHERE network=$1 AND account=$2 AND chat_id=$3 AND remote_id=$4",
            chat.network,
            chat.account,
            chat.chat_id,
            remote_id,
        )

    # outbound sends in flight: a crash between the network's answer and the mapping is settled
    # by asking the network (see Connector.find_delivered) instead of sending twice; the
    # checkpoint is the connector's own (Connector.checkpoint), opaque here

    async def mark_outbound_sending(self, event_id: str, room_id: str, checkpoint: str) -> None:
        await self.db.execute(
            "INSERT INTO outbound_in_flight (event_id, room_id, checkpoint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            event_id,
            room_id,
            checkpoint,
        )

    async def outbound_checkpoint(self, event_id: str) -> str | None:
        """The checkpoint an interrupted send was marked with, or None if it was not marked."""
        return await self.db.fetchval("SELECT checkpoint FROM outbound_in_flight WHERE event_id=$1", event_id)

    async def clear_outbound_sending(self, event_id: str) -> None:
        await self.db.execute("DELETE FROM outbound_in_flight WHERE event_id=$1", event_id)

    async def last_inbound_at(self, chat: ChatRef) -> int | None:
        """When the client last wrote in a chat (ms), from the message map."""
        value = await self.db.fetchval(
            "SELECT MAX(created_at) FROM message WHERE network=$1 AND account=$2 AND chat_id=$3 AND direction='in'",
            chat.network,
            chat.account,
            chat.chat_id,
        )
        return int(value) if value is not None else None

    # the remote ids a chat's message map holds, for a connector settling a crash (handed to it
    # as bridge.networks.spec.MappedIds); the core itself never reads a remote id as a number

    async def remote_ids_of_chat(self, chat: ChatRef) -> set[str]:
        """Every remote message id the message map knows in a chat."""
        rows = await self.db.fetch(
            "SELECT remote_id FROM message WHERE network=$1 AND account=$2 AND chat_id=$3",
            chat.network,
            chat.account,
            chat.chat_id,
        )
        return {r["remote_id"] for r in rows}

    async def highest_numeric_remote_id(self, chat: ChatRef) -> int:
        """The highest remote message id mapped in a chat that is a decimal number (0 if none),
        computed by the database: it is asked before every send to such a network, and a busy
        chat has thousands of rows. Telegram's ids are increasing integers; only its connector
        asks."""
        if self.db.scheme in (Scheme.POSTGRES, Scheme.COCKROACH):
            numeric = "remote_id ~ '^[0-9]{1,18}$'"
        else:
            numeric = "remote_id <> '' AND remote_id NOT GLOB '*[^0-9]*' AND length(remote_id) <= 18"
        value = await self.db.fetchval(
            f"SELECT MAX(CAST(remote_id AS BIGINT)) FROM message WHERE network=$1 AND account=$2 AND chat_id=$3 AND {numeric}",
            chat.network,
            chat.account,
            chat.chat_id,
        )
        return int(value) if value is not None else 0

    # client reactions (one Matrix reaction event per emoji per client per message)

    async def get_reactions(self, chat: ChatRef, target_id: str, sender_id: str) -> list[ReactionLink]:
        rows = await self.db.fetch(
            "SELECT network, account, chat_id, target_id, sender_id, emoji, room_id, event_id FROM reaction"
            " WHERE network=$1 AND account=$2 AND chat_id=$3 AND target_id=$4 AND sender_id=$5",
            chat.network,
            chat.account,
            chat.chat_id,
            target_id,
            sender_id,
        )
        return [ReactionLink(**dict(r)) for r in rows]

    async def add_reaction(self, link: ReactionLink) -> None:
        await self.db.execute(
            "INSERT INTO reaction (network, account, chat_id, target_id, sender_id, emoji, room_id, event_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            link.network,
            link.account,
            link.chat_id,
            link.target_id,
            link.sender_id,
            link.emoji,
            link.room_id,
            link.event_id,
        )

    async def delete_reaction(self, link: ReactionLink) -> None:
        await self.db.execute(
            "DELETE FROM reaction WHERE network=$1 AND account=$2 AND chat_id=$3 AND target_id=$4"
            " AND sender_id=$5 AND emoji=$6",
            link.network,
            link.account,
            link.chat_id,
            link.target_id,
            link.sender_id,
            link.emoji,
        )


_PORTAL_COLUMNS = "network, account, chat_id, room_id, name, status, disclaimer_sent, legal_hold, assignee, initiated_by, initiated_at"
_MESSAGE_COLUMNS = "network, account, chat_id, remote_id, room_id, event_id, direction, has_media, created_at"


def _portal(row) -> PortalRow:
    data = dict(row)
    data["disclaimer_sent"], data["legal_hold"] = bool(data["disclaimer_sent"]), bool(data["legal_hold"])
    data["initiated_at"] = int(data["initiated_at"]) if data["initiated_at"] is not None else None
    return PortalRow(**data)


def _message(row) -> MessageLink:
    data = dict(row)
    data["has_media"] = bool(data["has_media"])
    return MessageLink(**data)


def _now_ms() -> int:
    return int(time.time() * 1000)
