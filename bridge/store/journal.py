"""The archive journal's tables: what waits to be journaled (``journal_queue``) and what the
archive accepted (``journal_receipt``).

Functions over ``store.db`` (mautrix's Database: ``$1`` placeholders on SQLite and PostgreSQL
alike) rather than Store methods, so the journal's queries live with the journal. The
invariant they keep: an event the bridge marked seen in a portal has a queue row or a receipt,
and a queue row leaves only in the commit that writes its receipt.
"""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Database

#: Longest SMTP response kept in a receipt or an error (servers may answer with paragraphs).
TEXT_LIMIT = 500


@dataclass(frozen=True)
class QueuedRow:
    event_id: str
    room_id: str
    due_at: int
    attempts: int
    last_error: str | None = None


@dataclass(frozen=True)
class Receipt:
    event_id: str
    room_id: str
    message_id: str
    accepted_at: int
    response: str


async def enqueue(db: Database, events: list[tuple[str, str]], due_at: int) -> None:
    """(event_id, room_id) pairs, in one commit. An event the archive already accepted is not
    queued again (a resent transaction, a catch-up reading it back), one already queued keeps
    its due time and attempts."""
    if not events:
        return
    async with db.acquire() as conn, conn.transaction():
        for event_id, room_id in events:
            await conn.execute(
                "INSERT INTO journal_queue (event_id, room_id, due_at, attempts)"
                " SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS BIGINT), 0 WHERE NOT EXISTS (SELECT 1 FROM journal_receipt WHERE event_id=$1)"
                " ON CONFLICT (event_id) DO NOTHING",
                event_id,
                room_id,
                due_at,
            )


async def due(db: Database, now_ms: int, *, verdict_wait_ms: int, limit: int) -> list[QueuedRow]:
    """Due rows, oldest first. A row whose event is still in the outbox waits for the bridge's
    verdict on it (delivered, refused, held: the EML says which) but never longer than
    ``verdict_wait_ms`` past its due time: a stuck delivery must not stop the journal."""
    rows = await db.fetch(
        "SELECT q.event_id, q.room_id, q.due_at, q.attempts FROM journal_queue q"
        " WHERE q.due_at <= $1 AND (q.due_at <= $2 OR NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = q.event_id))"
        " ORDER BY q.due_at, q.event_id LIMIT $3",
        now_ms,
        now_ms - verdict_wait_ms,
        limit,
    )
    return [QueuedRow(r["event_id"], r["room_id"], int(r["due_at"]), int(r["attempts"])) for r in rows]


async def next_due_at(db: Database) -> int | None:
    value = await db.fetchval("SELECT MIN(due_at) FROM journal_queue")
    return int(value) if value is not None else None


async def accepted(db: Database, row: QueuedRow, message_id: str, accepted_at: int, response: str) -> None:
    """The archive answered 250: the receipt and the end of the queue row, in one commit. A
    receipt already there (the message went twice: a crash between the send and this commit)
    keeps the first acceptance."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO journal_receipt (event_id, room_id, message_id, accepted_at, response)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
            row.event_id,
            row.room_id,
            message_id,
            accepted_at,
            response[:TEXT_LIMIT],
        )
        await conn.execute("DELETE FROM journal_queue WHERE event_id=$1", row.event_id)


async def retry(db: Database, row: QueuedRow, due_at: int, error: str) -> None:
    await db.execute(
        "UPDATE journal_queue SET attempts = attempts + 1, due_at=$1, last_error=$2 WHERE event_id=$3",
        due_at,
        error[:TEXT_LIMIT],
        row.event_id,
    )


async def queue_size(db: Database) -> int:
    return int(await db.fetchval("SELECT COUNT(*) FROM journal_queue"))


async def queued(db: Database, room_id: str) -> dict[str, QueuedRow]:
    rows = await db.fetch(
        "SELECT event_id, room_id, due_at, attempts, last_error FROM journal_queue WHERE room_id=$1", room_id
    )
    return {
        r["event_id"]: QueuedRow(
            r["event_id"], r["room_id"], int(r["due_at"]), int(r["attempts"]), r["last_error"]
        )
        for r in rows
    }


async def receipts(db: Database, room_id: str) -> dict[str, Receipt]:
    rows = await db.fetch(
        "SELECT event_id, room_id, message_id, accepted_at, response FROM journal_receipt WHERE room_id=$1",
        room_id,
    )
    return {
        r["event_id"]: Receipt(
            r["event_id"], r["room_id"], r["message_id"], int(r["accepted_at"]), r["response"]
        )
        for r in rows
    }


async def client_identities(db: Database, user_ids: list[str]) -> dict[str, str]:
    """Client ghost -> '<network>-<remote id>' from the ghost table: the journal renders one
    message with a window of the room, which may not hold the client's own messages the export
    would take the address from."""
    found: dict[str, str] = {}
    for i in range(0, len(user_ids), 200):
        chunk = user_ids[i : i + 200]
        marks = ",".join(f"${n + 1}" for n in range(len(chunk)))
        rows = await db.fetch(
            f"SELECT user_id, network, remote_id FROM ghost WHERE user_id IN ({marks})", *chunk
        )
        found.update({r["user_id"]: f"{r['network']}-{r['remote_id']}" for r in rows})
    return found
