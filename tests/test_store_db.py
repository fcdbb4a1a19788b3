"""The store's SQLite handle (bridge.store.db): fewer trips to SQLite's thread, same meaning.

A transaction's writes wait for its next read or its commit; these tests hold it to what a
transaction must still be: reads see the writes before them, a failure keeps nothing, and a
nested use of the pool inside the transaction is part of it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mautrix.util.async_db import Database, UpgradeTable

from bridge.store.db import OneTripDatabase


@pytest.fixture
async def db(tmp_path: Path):
    handle = OneTripDatabase(
        Database.create(f"sqlite:{tmp_path / 'db.sqlite'}", upgrade_table=UpgradeTable())
    )
    await handle.start()
    await handle.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    yield handle
    await handle.stop()


def _count_trips(db: OneTripDatabase) -> list[int]:
    """Counts calls onto aiosqlite's thread (its one way there) for the pool's connection."""
    trips = [0]
    conn = db._db._pool._queue[0]  # the pool's one connection (min_size 1)
    original = conn._execute

    async def counted(fn, *args, **kwargs):
        trips[0] += 1
        return await original(fn, *args, **kwargs)

    conn._execute = counted
    return trips


async def test_a_transaction_of_writes_is_one_trip_and_is_committed(db: OneTripDatabase) -> None:
    trips = _count_trips(db)
    async with db.acquire() as conn, conn.transaction():
        for i in range(5):
            await conn.execute("INSERT INTO t (k, v) VALUES ($1, $2)", f"k{i}", i)
    assert trips[0] == 1
    assert await db.fetchval("SELECT SUM(v) FROM t") == 10
    assert trips[0] == 2  # a read is one trip


async def test_a_read_in_a_transaction_sees_the_writes_before_it(db: OneTripDatabase) -> None:
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO t (k, v) VALUES ('a', 1)")
        assert await conn.fetchval("SELECT v FROM t WHERE k=$1", "a") == 1
        # A nested use of the pool (the same connection, as mautrix hands it out) is part of it.
        assert await db.fetchval("SELECT COUNT(*) FROM t") == 1
        await db.execute("UPDATE t SET v=2 WHERE k='a'")
        assert await conn.fetchval("SELECT v FROM t WHERE k='a'") == 2


async def test_a_failing_write_fails_the_transaction_and_keeps_nothing(db: OneTripDatabase) -> None:
    await db.execute("INSERT INTO t (k, v) VALUES ('taken', 0)")
    with pytest.raises(sqlite3.IntegrityError):
        async with db.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO t (k, v) VALUES ('new', 1)")
            await conn.execute("INSERT INTO t (k, v) VALUES ('taken', 2)")
    assert [tuple(r) for r in await db.fetch("SELECT k, v FROM t ORDER BY k")] == [("taken", 0)]
    # The connection is usable and out of the failed transaction.
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO t (k, v) VALUES ('after', 3)")
    assert await db.fetchval("SELECT v FROM t WHERE k='after'") == 3


async def test_an_error_in_the_body_after_a_read_rolls_back(db: OneTripDatabase) -> None:
    with pytest.raises(RuntimeError):
        async with db.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO t (k, v) VALUES ('x', 1)")
            assert await conn.fetchval("SELECT v FROM t WHERE k='x'") == 1  # sent, uncommitted
            raise RuntimeError("the caller changed its mind")
    assert await db.fetchval("SELECT COUNT(*) FROM t") == 0


async def test_an_error_before_anything_was_sent_costs_no_trip(db: OneTripDatabase) -> None:
    trips = _count_trips(db)
    with pytest.raises(RuntimeError):
        async with db.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO t (k, v) VALUES ('y', 1)")
            raise RuntimeError("no")
    assert trips[0] == 0
    assert await db.fetchval("SELECT COUNT(*) FROM t") == 0


async def test_a_write_outside_a_transaction_is_durable_when_it_returns(
    db: OneTripDatabase, tmp_path: Path
) -> None:
    await db.execute("INSERT INTO t (k, v) VALUES ('now', 7)")
    with sqlite3.connect(tmp_path / "db.sqlite") as other:
        assert other.execute("SELECT v FROM t WHERE k='now'").fetchone() == (7,)


async def test_executemany_in_a_transaction_follows_the_writes_before_it(db: OneTripDatabase) -> None:
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO t (k, v) VALUES ('first', 1)")
        await conn.executemany("UPDATE t SET v = v + $1 WHERE k = 'first'", [(10,), (100,)])
        await conn.execute("INSERT INTO t (k, v) VALUES ('last', 2)")
    assert [tuple(r) for r in await db.fetch("SELECT k, v FROM t ORDER BY k")] == [
        ("first", 111),
        ("last", 2),
    ]
