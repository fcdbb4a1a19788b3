"""Store upgrades keep what a running bridge left behind: a database made by an older version,
with messages in flight both ways and messages held for a senior, comes out of the upgrade with
the same rows under the new names; ghosts keep their names and gain a place for their picture;
on SQLite and (when installed) on PostgreSQL."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mautrix.util.async_db import Database, Scheme, UpgradeTable

from bench.postgres import find_binaries, start_postgres
from bridge.events import ChatRef
from bridge.store.store import Store
from bridge.store.upgrades import upgrade_table, upgrade_v11, upgrade_v13

CHAT = ChatRef("telegram", "1", "42")
#: Larger than a float holds exactly: the checkpoint must keep every digit.
BIG_ID = 9_007_199_254_740_993
HELD = {"event_id": "$held", "room_id": "!r:localhost", "type": "m.room.message", "content": {"body": "hi"}}
#: The version whose upgrade renamed the in-flight marks and the held messages.
NAMED_VERSION = upgrade_table.upgrades.index(upgrade_v11) + 1
#: The version whose upgrade gave ghosts their picture reference.
PICTURE_VERSION = upgrade_table.upgrades.index(upgrade_v13) + 1
POSTGRES = find_binaries() is not None and importlib.util.find_spec("asyncpg") is not None


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'store.db'}"
        return
    if not POSTGRES:
        pytest.skip("PostgreSQL (apt-get install postgresql) or asyncpg not installed")
    cluster = await start_postgres({"bridge": False})
    try:
        yield cluster.url("bridge")
    finally:
        await cluster.stop()


async def _database_at(url: str, version: int) -> Database:
    """The database as a bridge of ``version`` left it: only the upgrades up to it applied."""
    old = UpgradeTable(database_name="houseline", version_table_name="houseline_version")
    old.upgrades = upgrade_table.upgrades[:version]
    db = Database.create(url, upgrade_table=old)
    await db.start()
    return db


async def test_in_flight_marks_and_held_messages_survive_the_renaming_upgrade(url: str) -> None:
    db = await _database_at(url, NAMED_VERSION - 1)
    try:
        await db.execute(
            "INSERT INTO inflight (network, account, chat_id, remote_id, room_id) VALUES ($1, $2, $3, $4, $5)",
            "telegram",
            "1",
            "42",
            "7",
            "!r:localhost",
        )
        await db.execute(
            "INSERT INTO outflight (event_id, room_id, since_remote) VALUES ($1, $2, $3), ($4, $5, $6)",
            "$small",
            "!r:localhost",
            0,
            "$big",
            "!r:localhost",
            BIG_ID,
        )
        await db.execute(
            "INSERT INTO held (room_id, event_id, event, held_at) VALUES ($1, $2, $3, $4)",
            "!r:localhost",
            "$held",
            json.dumps(HELD),
            5,
        )
    finally:
        await db.stop()

    store = Store(url)
    await store.start()
    try:
        assert await store.db.fetchval("SELECT version FROM houseline_version") == len(upgrade_table.upgrades)
        assert await store.inbound_posting(CHAT, "7") == "!r:localhost"
        assert await store.inbound_state(CHAT, "7") == (False, "!r:localhost")
        # The core hands a Telegram checkpoint back as the decimal text the number was.
        assert await store.outbound_checkpoint("$small") == "0"
        assert await store.outbound_checkpoint("$big") == str(BIG_ID)
        assert await store.held_for_senior("!r:localhost") == [HELD]
        assert await store.held_for_senior_count() == 1
        for gone in ("inflight", "outflight", "held"):
            assert not await _has_table(store.db, gone)

        await store.clear_inbound_posting(CHAT, "7")
        await store.clear_outbound_sending("$big")
        await store.mark_outbound_sending("$opaque", "!r:localhost", "any text a connector likes")
        assert await store.inbound_posting(CHAT, "7") is None
        assert await store.outbound_checkpoint("$big") is None
        assert await store.outbound_checkpoint("$opaque") == "any text a connector likes"
    finally:
        await store.stop()


async def _has_table(db: Database, name: str) -> bool:
    if db.scheme is Scheme.SQLITE:
        query = "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=$1"
    else:
        query = "SELECT COUNT(*) FROM information_schema.tables WHERE table_name=$1"
    return int(await db.fetchval(query, name)) > 0


async def test_ghosts_keep_their_names_and_gain_a_picture_reference(url: str) -> None:
    db = await _database_at(url, PICTURE_VERSION - 1)
    try:
        await db.execute(
            "INSERT INTO ghost (user_id, network, remote_id, displayname) VALUES ($1, $2, $3, $4)",
            "@line_u1:localhost",
            "line",
            "U1",
            "Lina (LINE)",
        )
    finally:
        await db.stop()

    store = Store(url)
    await store.start()
    try:
        assert await store.db.fetchval("SELECT version FROM houseline_version") == len(upgrade_table.upgrades)
        assert await store.get_ghost_displayname("@line_u1:localhost") == "Lina (LINE)"
        assert await store.get_ghost_picture("@line_u1:localhost") is None  # none set yet
        await store.put_ghost_picture("@line_u1:localhost", "https://profile.line-scdn.net/0habc")
        assert await store.get_ghost_picture("@line_u1:localhost") == "https://profile.line-scdn.net/0habc"
        # A new name leaves the picture as it is.
        await store.put_ghost("@line_u1:localhost", "line", "U1", "Lina L. (LINE)")
        assert await store.get_ghost_picture("@line_u1:localhost") == "https://profile.line-scdn.net/0habc"
        assert await store.get_ghost_picture("@line_unknown:localhost") is None
    finally:
        await store.stop()
