"""The store's database handle: mautrix's, with SQLite work done in as few trips to its thread
as the statements allow.

aiosqlite runs every call on the connection's own thread, and each call is a round trip through
a queue and back into the event loop. mautrix's ``fetch``, ``fetchrow`` and ``fetchval`` make
three (run the statement, fetch, close the cursor), and a transaction one per statement plus its
BEGIN and COMMIT. The bridge uses the store several times per message, so on SQLite these trips
were the largest share of its CPU per message (docs/bench.md, round 3). Here:

- a read is one trip;
- in a transaction, writes wait for the next read or the commit and go with it, so a
  transaction costs one trip per read plus one. Nothing is committed any later: the commit
  itself goes in the last trip, and a read sees every write before it in the transaction.

A write that fails inside a transaction raises at the next read or at the commit instead of at
its own line; the transaction is rolled back either way. On PostgreSQL nothing changes.

Every read the store makes returns one row or a bounded set, so reading all rows at once is
what the three trips did too.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
from mautrix.util.async_db import Database
from mautrix.util.async_db.aiosqlite import POSITIONAL_PARAM_PATTERN
from mautrix.util.async_db.connection import LoggingConnection

log = logging.getLogger("houseline.db")

#: A trip slower than this is logged, as mautrix logs its own slow queries.
SLOW_S = 1.0

Statement = tuple[str, tuple[Any, ...]]


def _sqlite(query: str) -> str:
    """$1-style parameters as SQLite's ?1, as mautrix's own SQLite connection rewrites them."""
    return POSITIONAL_PARAM_PATTERN.sub(r"?\1", query)


def _run(conn: sqlite3.Connection, writes: list[Statement], read: Statement | None) -> list[Any]:
    """On SQLite's thread: the pending writes in order, then the read, if any."""
    for sql, params in writes:
        conn.execute(sql, params)
    return conn.execute(*read).fetchall() if read is not None else []


@dataclass
class _Transaction:
    """Writes of an open transaction not yet sent; ``sent``: BEGIN has reached SQLite."""

    writes: list[Statement] = field(default_factory=lambda: [("BEGIN TRANSACTION", ())])
    sent: bool = False


class OneTripConnection:
    """A connection from the pool; on SQLite, see the module's docstring. The rest is mautrix's."""

    def __init__(self, conn: LoggingConnection, transactions: dict[int, _Transaction]) -> None:
        self._conn = conn
        wrapped = conn.wrapped
        self._sqlite: aiosqlite.Connection | None = (
            wrapped if isinstance(wrapped, aiosqlite.Connection) else None
        )
        # Shared by every wrapper of the same connection: a nested acquire inside a
        # transaction (mautrix hands out the same connection) must see its pending writes.
        self._transactions = transactions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    @property
    def _open(self) -> _Transaction | None:
        return self._transactions.get(id(self._sqlite))

    async def _trip(self, read: Statement | None) -> list[Any]:
        assert self._sqlite is not None
        txn = self._open
        writes: list[Statement] = []
        if txn is not None:
            writes, txn.writes = txn.writes, []
            txn.sent = txn.sent or bool(writes)
        if not writes and read is None:
            return []
        started = time.monotonic()
        sqlite = self._sqlite
        # aiosqlite's own way to run a function on its thread (what each of its calls does).
        rows = await sqlite._execute(_run, sqlite._conn, writes, read)
        if (took := time.monotonic() - started) > SLOW_S:
            log.warning(
                "event=slow_query s=%.3f statements=%d query=%r",
                took,
                len(writes) + 1,
                (read or writes[-1])[0][:200],
            )
        return rows

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        if self._sqlite is None:
            async with self._conn.transaction():
                yield
            return
        key = id(self._sqlite)
        if key in self._transactions:
            yield  # nested: part of the one already open
            return
        txn = self._transactions[key] = _Transaction()
        try:
            yield
            txn.writes.append(("COMMIT", ()))
            await self._trip(None)
        except BaseException:
            if txn.sent:
                await self._sqlite.rollback()
            raise
        finally:
            self._transactions.pop(key, None)

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        if self._sqlite is None:
            return await self._conn.execute(query, *args, timeout=timeout)
        txn = self._open
        if txn is not None:
            txn.writes.append((_sqlite(query), args))
            return None
        await self._trip((_sqlite(query), args))
        return None

    async def executemany(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        if self._sqlite is not None and self._open is not None:
            await self._trip(None)  # what is pending goes first
        return await self._conn.executemany(query, *args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]:
        if self._sqlite is None:
            return await self._conn.fetch(query, *args, timeout=timeout)
        return await self._trip((_sqlite(query), args))

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        if self._sqlite is None:
            return await self._conn.fetchrow(query, *args, timeout=timeout)
        rows = await self.fetch(query, *args)
        return rows[0] if rows else None

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        if self._sqlite is None:
            return await self._conn.fetchval(query, *args, column=column, timeout=timeout)
        row = await self.fetchrow(query, *args)
        return None if row is None else row[column]


class OneTripDatabase:
    """mautrix's Database, handing out :class:`OneTripConnection`; everything else is its own."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._transactions: dict[int, _Transaction] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[OneTripConnection]:
        async with self._db.acquire() as conn:
            yield OneTripConnection(conn, self._transactions)

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        async with self.acquire() as conn:
            return await conn.execute(query, *args, timeout=timeout)

    async def executemany(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        async with self.acquire() as conn:
            return await conn.executemany(query, *args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> list[Any]:
        async with self.acquire() as conn:
            return await conn.fetch(query, *args, timeout=timeout)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(query, *args, timeout=timeout)

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args, column=column, timeout=timeout)
