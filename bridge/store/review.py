"""The review queue's rows: one item per message a reviewer must look at.

Module functions over the store's database, like hooks and journal: only bridge.review uses
them. An item's state moves open -> claimed -> closed, or to escalated, approved or rejected;
every move is a compare-and-set on the state it came from, so two reviewers acting on the same
item at once cannot both win, and an action on an item already finished is refused clearly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mautrix.util.async_db import Database

#: States in which an item still waits for a reviewer.
OPEN_STATES = ("open", "claimed", "escalated")
_COLUMNS = (
    "id, portal_room, event_id, sender, direction, rules, excerpt, held, state, claimed_by, closed_by, "
    "reason, opened_at, closed_at, review_room, notice_id, event"
)


@dataclass(frozen=True)
class ReviewItem:
    id: int
    portal_room: str
    event_id: str
    sender: str
    #: "inbound" (client to company) or "outbound".
    direction: str
    #: The policy keys that put it here ("supervision.lexicons.promises", "supervision.sample_rate").
    rules: tuple[str, ...]
    excerpt: str
    #: The message waits for a reviewer's approval before it goes to the client.
    held: bool
    state: str
    claimed_by: str | None
    closed_by: str | None
    reason: str | None
    opened_at: int
    closed_at: int | None
    review_room: str
    notice_id: str
    #: The held Matrix event, until it is approved or rejected.
    event: dict[str, Any] | None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


def _item(row: Any) -> ReviewItem:
    return ReviewItem(
        id=int(row["id"]),
        portal_room=row["portal_room"],
        event_id=row["event_id"],
        sender=row["sender"],
        direction=row["direction"],
        rules=tuple(r for r in row["rules"].split(",") if r),
        excerpt=row["excerpt"],
        held=bool(row["held"]),
        state=row["state"],
        claimed_by=row["claimed_by"],
        closed_by=row["closed_by"],
        reason=row["reason"],
        opened_at=int(row["opened_at"]),
        closed_at=int(row["closed_at"]) if row["closed_at"] is not None else None,
        review_room=row["review_room"],
        notice_id=row["notice_id"],
        event=json.loads(row["event"]) if row["event"] else None,
    )


async def add_item(db: Database, item: ReviewItem) -> bool:
    """False when the message already has an item (a redelivered event, a restart)."""
    done = await db.fetchval(
        f"INSERT INTO review_item ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
        " $14, $15, $16, $17) ON CONFLICT (event_id) DO NOTHING RETURNING id",
        item.id,
        item.portal_room,
        item.event_id,
        item.sender,
        item.direction,
        ",".join(item.rules),
        item.excerpt,
        item.held,
        item.state,
        item.claimed_by,
        item.closed_by,
        item.reason,
        item.opened_at,
        item.closed_at,
        item.review_room,
        item.notice_id,
        json.dumps(item.event) if item.event is not None else None,
    )
    return done is not None


async def get_item(db: Database, item_id: int) -> ReviewItem | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM review_item WHERE id=$1", item_id)
    return _item(row) if row else None


async def item_of_event(db: Database, event_id: str) -> ReviewItem | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM review_item WHERE event_id=$1", event_id)
    return _item(row) if row else None


async def item_of_notice(db: Database, notice_id: str) -> ReviewItem | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM review_item WHERE notice_id=$1", notice_id)
    return _item(row) if row and notice_id else None


async def open_items(db: Database) -> list[ReviewItem]:
    """Oldest first: the reviewers' worklist."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM review_item WHERE state IN ('open', 'claimed', 'escalated') ORDER BY opened_at, id"
    )
    return [_item(r) for r in rows]


async def items_between(db: Database, since_ms: int, until_ms: int) -> list[ReviewItem]:
    """Items opened or closed in a period (the reports)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM review_item WHERE (opened_at >= $1 AND opened_at < $2)"
        " OR (closed_at >= $1 AND closed_at < $2)",
        since_ms,
        until_ms,
    )
    return [_item(r) for r in rows]


async def set_notice(db: Database, item_id: int, review_room: str, notice_id: str) -> None:
    await db.execute(
        "UPDATE review_item SET review_room=$2, notice_id=$3 WHERE id=$1", item_id, review_room, notice_id
    )


async def move(
    db: Database,
    item_id: int,
    *,
    to: str,
    actor: str,
    at_ms: int,
    reason: str | None = None,
) -> bool:
    """Compare-and-set from any open state; False when the item was finished meanwhile."""
    finished = to not in OPEN_STATES
    done = await db.fetchval(
        "UPDATE review_item SET state=$2,"
        " claimed_by=CASE WHEN $2='claimed' THEN $3 ELSE claimed_by END,"
        " closed_by=CASE WHEN $4 THEN $3 ELSE closed_by END,"
        " closed_at=CASE WHEN $4 THEN $5 ELSE closed_at END,"
        " reason=COALESCE($6, reason),"
        " event=CASE WHEN $4 THEN NULL ELSE event END"
        " WHERE id=$1 AND state IN ('open', 'claimed', 'escalated') RETURNING id",
        item_id,
        to,
        actor,
        finished,
        at_ms,
        reason,
    )
    return done is not None
