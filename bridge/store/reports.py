"""What a service report reads from the store: the message map and the audit chain in a period.

Kept apart from Store like hooks and journal: read-only queries that only the reports use.
"""

from __future__ import annotations

from dataclasses import dataclass

from mautrix.util.async_db import Database


@dataclass(frozen=True)
class MappedEvent:
    """A Matrix event that crossed the bridge: ``inbound`` from a client, or an employee's (or
    the bot's notice) that reached the client."""

    room_id: str
    event_id: str
    inbound: bool
    recorded_ms: int


async def mapped_events(db: Database, since_ms: int, until_ms: int) -> list[MappedEvent]:
    """Each mapped event recorded in the window once (a message split in several remote messages
    has several rows). The window is the bridge's recording time: the caller widens it and
    filters on the homeserver's timestamps, which are the record's."""
    rows = await db.fetch(
        "SELECT room_id, event_id, MIN(direction) AS direction, MIN(created_at) AS recorded FROM message"
        " WHERE created_at >= $1 AND created_at < $2 GROUP BY room_id, event_id",
        since_ms,
        until_ms,
    )
    return [
        MappedEvent(r["room_id"], r["event_id"], r["direction"] == "in", int(r["recorded"])) for r in rows
    ]


async def denials(db: Database, since_ms: int, until_ms: int) -> list[tuple[int, str, str]]:
    """(time, actor, rule) of every audited decision with verdict deny in the window."""
    rows = await db.fetch(
        "SELECT ts_ms, actor, rule FROM audit WHERE verdict='deny' AND ts_ms >= $1 AND ts_ms < $2 ORDER BY seq",
        since_ms,
        until_ms,
    )
    return [(int(r["ts_ms"]), r["actor"], r["rule"]) for r in rows]
