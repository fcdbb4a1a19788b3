"""The scheduled report: after each day or week (UTC, on the bridge's clock) the report for the
period just ended goes to the compliance review room, once.

The last period posted is kept in the store (the ``counter`` table: a named number that
survives restarts), moved forward with a compare-and-set before posting, so two ticks (or a
restart in between) never post the same period twice. A bridge that was down over several
boundaries posts only the latest complete period.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bridge.clock import Clock
from bridge.store import Store

log = logging.getLogger("houseline.reports")

DAY_MS = 86_400_000
#: 1970-01-05 00:00 UTC, a Monday: weeks start on Mondays.
_FIRST_MONDAY_MS = 4 * DAY_MS
LENGTH_MS = {"daily": DAY_MS, "weekly": 7 * DAY_MS}

#: Posts the report for [since_ms, until_ms).
PostReport = Callable[[int, int], Awaitable[None]]


def period_start(now_ms: int, schedule: str) -> int:
    """The start of the day (UTC midnight) or week (Monday 00:00 UTC) ``now_ms`` is in."""
    if schedule == "daily":
        return now_ms - now_ms % DAY_MS
    return now_ms - (now_ms - _FIRST_MONDAY_MS) % LENGTH_MS["weekly"]


class ReportSchedule:
    def __init__(self, schedule: str, store: Store, clock: Clock, post: PostReport) -> None:
        self.schedule = schedule
        self.store = store
        self.clock = clock
        self.post = post
        self.key = f"report.{schedule}.posted_until"

    async def tick(self) -> None:
        boundary = period_start(self.clock.now_ms(), self.schedule)
        last = await self.store.db.fetchval("SELECT value FROM counter WHERE name=$1", self.key)
        if last is None:
            # The first start: reports begin with the first period this bridge sees end.
            await self.store.db.execute(
                "INSERT INTO counter (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                self.key,
                boundary,
            )
            return
        if boundary <= int(last):
            return
        moved = await self.store.db.fetchval(
            "UPDATE counter SET value=$2 WHERE name=$1 AND value=$3 RETURNING value", self.key, boundary, last
        )
        if moved is None:
            return
        since = boundary - LENGTH_MS[self.schedule]
        log.info("event=report_scheduled schedule=%s since_ms=%d until_ms=%d", self.schedule, since, boundary)
        await self.post(since, boundary)
