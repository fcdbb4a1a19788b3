"""The outgoing webhooks' durable queue: ``hook_event`` (each event once, its JSON body exactly
as it is signed and sent) and ``hook_delivery`` (one row per receiver still owed the event).

A delivery row is deleted when its receiver answered 2xx, and the event with the last row that
references it, so what is in these tables is exactly what some receiver has not confirmed yet.
Plain SQL with ``$1`` placeholders, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from bridge.store.store import Store


@dataclass(frozen=True)
class HookItem:
    """A receiver's next delivery in one conversation."""

    receiver: str
    seq: int
    room_id: str
    event_id: str
    type: str
    #: The JSON body, byte for byte what is signed and POSTed (UTF-8).
    body: str
    #: Failed attempts so far (the backoff grows with them).
    attempts: int
    next_at: int


async def enqueue(
    store: Store,
    *,
    event_id: str,
    type: str,
    room_id: str,
    body: str,
    created_at: int,
    receivers: Iterable[str],
) -> int | None:
    """The event and one delivery row per receiver, in one commit; returns its sequence number,
    or None when no receiver is owed it (nothing is written then). An event id already queued
    is not queued again."""
    names = list(dict.fromkeys(receivers))
    if not names:
        return None
    # The sequence is taken inside the commit's critical section by the caller (one enqueue at
    # a time), so within a room sequence order is commit order and a worker never sees an
    # event before an earlier one of the same room has become visible.
    seq = store._next_sequence()
    async with store.db.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT seq FROM hook_event WHERE id=$1", event_id) is not None:
            return None
        await conn.execute(
            "INSERT INTO hook_event (seq, id, type, room_id, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            seq,
            event_id,
            type,
            room_id,
            body,
            created_at,
        )
        for name in names:
            await conn.execute(
                "INSERT INTO hook_delivery (receiver, seq, room_id, attempts, next_at) VALUES ($1, $2, $3, 0, 0)",
                name,
                seq,
                room_id,
            )
    return seq


async def due(store: Store, receiver: str, now_ms: int) -> list[HookItem]:
    """The receiver's first undelivered event of every conversation, oldest first, if its retry
    time has come. Only a conversation's first event is ever offered: the next one waits until
    it was delivered, so each receiver sees a conversation's events in order."""
    rows = await store.db.fetch(
        f"SELECT {_ITEM_COLUMNS} FROM"
        " (SELECT room_id, MIN(seq) AS seq FROM hook_delivery WHERE receiver=$1 GROUP BY room_id) h"
        " JOIN hook_delivery d ON d.receiver=$1 AND d.seq = h.seq JOIN hook_event e ON e.seq = d.seq"
        " WHERE d.next_at <= $2 ORDER BY d.seq",
        receiver,
        now_ms,
    )
    return [_item(receiver, r) for r in rows]


async def next_in_room(store: Store, receiver: str, room_id: str) -> HookItem | None:
    """The receiver's first undelivered event of one conversation (due or not): a worker that
    just delivered one goes on with the next without scanning the whole queue."""
    row = await store.db.fetchrow(
        f"SELECT {_ITEM_COLUMNS} FROM hook_delivery d JOIN hook_event e ON e.seq = d.seq"
        " WHERE d.receiver=$1 AND d.room_id=$2 ORDER BY d.seq LIMIT 1",
        receiver,
        room_id,
    )
    return _item(receiver, row) if row else None


async def delivered(store: Store, receiver: str, seq: int) -> None:
    """The receiver confirmed it; the event goes when no other receiver is owed it."""
    async with store.db.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM hook_delivery WHERE receiver=$1 AND seq=$2", receiver, seq)
        await conn.execute(
            "DELETE FROM hook_event WHERE seq=$1 AND NOT EXISTS (SELECT 1 FROM hook_delivery WHERE seq=$1)",
            seq,
        )


async def failed(store: Store, receiver: str, seq: int, *, next_at: int, status: str) -> None:
    """A failed attempt: counted, with the time of the next one (kept across restarts)."""
    await store.db.execute(
        "UPDATE hook_delivery SET attempts = attempts + 1, next_at=$3, last_status=$4 WHERE receiver=$1 AND seq=$2",
        receiver,
        seq,
        next_at,
        status[:200],
    )


async def queue_depth(store: Store) -> dict[str, int]:
    """Undelivered events per receiver (receivers with none are absent)."""
    rows = await store.db.fetch("SELECT receiver, COUNT(*) AS n FROM hook_delivery GROUP BY receiver")
    return {r["receiver"]: int(r["n"]) for r in rows}


async def has_pending(store: Store, receiver: str) -> bool:
    """Whether anything is owed to the receiver, due or not (an idle worker needs no tick)."""
    return (
        await store.db.fetchval("SELECT 1 FROM hook_delivery WHERE receiver=$1 LIMIT 1", receiver) is not None
    )


_ITEM_COLUMNS = "d.seq, d.room_id, d.attempts, d.next_at, e.id, e.type, e.body"


def _item(receiver: str, row) -> HookItem:
    return HookItem(
        receiver,
        int(row["seq"]),
        row["room_id"],
        row["id"],
        row["type"],
        row["body"],
        int(row["attempts"]),
        int(row["next_at"]),
    )
