"""Which rooms a catch-up reads before the outbox resumes (Store.rooms_active_since).

A room the bridge wrote to just before an outage is a conversation under way even when the
homeserver's echo of what it wrote never reached the bridge (it was frozen, or the homeserver
forgot the transaction): a CI run once left such a room to the background sweep.
"""

from __future__ import annotations

import time
from pathlib import Path

from bridge.store import Store
from bridge.store.store import MessageLink, PortalRow


async def _store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:{tmp_path / 'r.db'}")
    await store.start()
    return store


def _link(room: str, remote_id: str, created_at: int) -> MessageLink:
    return MessageLink(
        "telegram", "1", room.strip("!:"), remote_id, room, f"$e{remote_id}", "in", False, created_at
    )


async def test_each_kind_of_recent_activity_makes_a_room_under_way(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        now = int(time.time() * 1000)
        await store.mark_seen([("$seen", "!seen:l")])
        await store.add_message(_link("!mapped:l", "10", now))
        await store.add_portal(PortalRow("telegram", "1", "new", "!new:l", "New"))
        await store.outbox_add([{"event_id": "$q", "room_id": "!queued:l", "type": "m.room.message"}])
        await store.add_message(_link("!old:l", "11", now - 2 * 3600_000))

        under_way = set(await store.rooms_active_since(now - 3600_000))
        assert under_way == {"!seen:l", "!mapped:l", "!new:l", "!queued:l"}
        # Whatever its age, a queued event keeps its room under way; the rest are dated.
        assert set(await store.rooms_active_since(now + 60_000)) == {"!queued:l"}
    finally:
        await store.stop()
