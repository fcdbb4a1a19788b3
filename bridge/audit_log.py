"""Appending to the hash-chained audit trail in the store.

Every outbound message is a policy decision and so an audit entry, and the chain makes the
appends strictly sequential: each entry needs the hash of the one before. Appending them one
commit at a time made the trail the bridge's narrowest point (one fsync per message, under a
lock every room waits on). So entries that arrive while a commit is under way are sealed in
arrival order and appended together in the next commit (group commit); each caller still
returns only once its own entry is committed. The chain itself (what is hashed, how it is
checked) lives in policies.audit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from bridge.store import Store
from policies.audit import GENESIS, AuditEntry, seal

log = logging.getLogger("houseline.audit")
_APPEND_ATTEMPTS = 5
#: At most this many entries in one commit (a bound on one transaction's size).
MAX_BATCH = 200


@dataclass
class _Pending:
    ts_ms: int
    fields: dict[str, Any]
    done: asyncio.Future[AuditEntry]


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        #: (seq, hash) of the last entry this process appended; None means ask the store (at
        #: first, and whenever another process may have appended since).
        self._head: tuple[int, str] | None = None

    async def record(
        self, *, actor: str, action: str, subject: str, verdict: str = "", rule: str = "", **details: Any
    ) -> AuditEntry:
        done: asyncio.Future[AuditEntry] = asyncio.get_running_loop().create_future()
        self._pending.append(
            _Pending(
                int(time.time() * 1000),
                {
                    "actor": actor,
                    "action": action,
                    "subject": subject,
                    "verdict": verdict,
                    "rule": rule,
                    "details": details,
                },
                done,
            )
        )
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="audit-writer")
        entry = await asyncio.shield(done)
        log.info(
            "event=audit seq=%d action=%s actor=%s subject=%s verdict=%s rule=%s",
            entry.seq,
            action,
            actor,
            subject,
            verdict or "-",
            rule or "-",
        )
        return entry

    async def _write(self) -> None:
        """Drain the queue, one commit per batch, in arrival order."""
        batch: list[_Pending] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    entries = await self._append(batch)
                except Exception as e:  # the callers see the store's error; the chain stays as it was
                    self._head = None
                    for item in batch:
                        if not item.done.done():
                            item.done.set_exception(e)
                    continue
                for item, entry in zip(batch, entries):
                    if not item.done.done():
                        item.done.set_result(entry)
                batch = []
        finally:
            # Cancelled (the bridge stopping): nobody may wait for ever on an entry never written.
            for item in batch + self._pending:
                if not item.done.done():
                    item.done.set_exception(
                        RuntimeError("the audit trail was stopped before this entry was written")
                    )
            if batch or self._pending:
                self._pending = []
                self._head = None

    async def _append(self, batch: list[_Pending]) -> list[AuditEntry]:
        for attempt in range(_APPEND_ATTEMPTS):
            if self._head is None:
                self._head = await self.store.last_audit() or (0, GENESIS)
            seq, prev = self._head
            entries: list[AuditEntry] = []
            for item in batch:
                seq += 1
                entry = seal(AuditEntry(seq=seq, ts_ms=item.ts_ms, prev_hash=prev, **item.fields))
                entries.append(entry)
                prev = entry.hash
            try:
                await self.store.add_audits(entries)
            except Exception as e:
                # Another process (a CLI command beside the running bridge) appended first: link
                # to its entry instead. The primary key on seq keeps the chain single.
                self._head = None
                if "unique" not in str(e).lower() or attempt == _APPEND_ATTEMPTS - 1:
                    raise
                continue
            self._head = (seq, prev)
            return entries
        raise AssertionError("unreachable")
