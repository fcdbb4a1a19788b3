"""The store on PostgreSQL: every upgrade applies and the queries behave as on SQLite.

The suite otherwise runs the store on SQLite only, which serialises everything on one
connection; PostgreSQL runs queries side by side over a pool, so what relied on SQLite's
serialisation shows here. Skipped where PostgreSQL or asyncpg is not installed (`make bench`
installs asyncpg; `apt-get install postgresql` the server).
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from bench.postgres import find_binaries, start_postgres
from bridge.events import ChatRef
from bridge.store.store import AccountRow, MessageLink, PortalRow, ReactionLink, Store

pytestmark = pytest.mark.skipif(
    find_binaries() is None or importlib.util.find_spec("asyncpg") is None,
    reason="PostgreSQL (apt-get install postgresql) or asyncpg (pip install -e '.[postgres]') not installed",
)


CHAT = ChatRef("telegram", "1", "42")


async def _exercise(url: str) -> None:
    store = Store(url)
    await store.start()
    try:
        await store.add_portal(PortalRow("telegram", "1", "42", "!r:localhost", "Client"))
        assert (await store.get_portal(CHAT)).room_id == "!r:localhost"
        await store.set_portal_flag("!r:localhost", "legal_hold", True)
        assert (await store.get_portal_by_room("!r:localhost")).legal_hold is True
        await store.put_account(AccountRow("telegram", "1", "@a:l", "A", True, False))
        await store.put_account(AccountRow("telegram", "1", "@a:l", "A", False, True))
        assert (await store.get_account("telegram", "1")).can_reply is True

        # Many first contacts at once: each gets its own number, none fails.
        numbers = await asyncio.gather(*(store.next_counter("assignment") for _ in range(30)))
        assert sorted(numbers) == list(range(30))

        assert await store.inbound_state(CHAT, "7") == (False, None)
        await store.mark_inbound_posting(CHAT, "7", "!r:localhost")
        assert await store.inbound_state(CHAT, "7") == (False, "!r:localhost")
        assert await store.inbound_posting(CHAT, "7") == "!r:localhost"
        await store.clear_inbound_posting(CHAT, "7")
        await store.add_message(
            MessageLink("telegram", "1", "42", "7", "!r:localhost", "$m", "in", has_media=True, created_at=5)
        )
        await store.add_message(
            MessageLink("telegram", "1", "42", "7", "!r:localhost", "$m", "in")
        )  # a repeat: ignored
        await store.add_message(MessageLink("telegram", "1", "42", "7/edit/9", "!r:localhost", "$e", "in"))
        assert await store.inbound_state(CHAT, "7") == (True, None)
        assert (await store.get_message(CHAT, "7")).has_media is True
        assert await store.highest_numeric_remote_id(CHAT) == 7
        assert await store.remote_ids_of_chat(CHAT) == {"7", "7/edit/9"}

        await store.outbox_add(
            [{"event_id": "$o1", "room_id": "!r:localhost"}, {"event_id": "$o2", "room_id": "!r:localhost"}]
        )
        assert (await store.outbox_next("!r:localhost"))[0]["event_id"] == "$o1"
        await store.outbox_done("$o1")
        assert await store.outbox_size() == 1

        link = ReactionLink("telegram", "1", "42", "7", "99", "👍", "!r:localhost", "$re")
        await store.add_reaction(link)
        await store.add_reaction(link)
        assert len(await store.get_reactions(CHAT, "7", "99")) == 1
        await store.mark_outbound_sending("$x", "!r:localhost", "5")
        assert await store.outbound_checkpoint("$x") == "5"
        await store.clear_outbound_sending("$x")
        assert await store.outbound_checkpoint("$x") is None

        await store.hold_for_senior("!r:localhost", "$h", {"event_id": "$h", "room_id": "!r:localhost"})
        assert await store.held_for_senior_count() == 1
        held = await store.held_for_senior("!r:localhost")
        await store.release_to_outbox("!r:localhost", held)
        assert await store.held_for_senior_count() == 0 and await store.outbox_size() == 2
        await store.delete_portal("!r:localhost")
        assert await store.count_portals() == 0

        await store.put_ghost("@line_u1:localhost", "line", "U1", "Lina (LINE)")
        assert await store.get_ghost_picture("@line_u1:localhost") is None
        await store.put_ghost_picture("@line_u1:localhost", "https://profile.line-scdn.net/0h1")
        await store.put_ghost("@line_u1:localhost", "line", "U1", "Lina L. (LINE)")
        assert await store.get_ghost_displayname("@line_u1:localhost") == "Lina L. (LINE)"
        assert await store.get_ghost_picture("@line_u1:localhost") == "https://profile.line-scdn.net/0h1"
    finally:
        await store.stop()


async def test_store_on_postgres_and_sqlite_alike(tmp_path: Path) -> None:
    cluster = await start_postgres({"bridge": False})
    try:
        await _exercise(cluster.url("bridge"))
    finally:
        await cluster.stop()
    await _exercise(f"sqlite:{tmp_path / 'store.db'}")
