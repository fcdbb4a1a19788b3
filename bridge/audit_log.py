"""Appending to the hash-chained audit trail in the store.

One lock orders the appends of this process, so every entry links to the one before it; the
chain itself (what is hashed, how it is checked) lives in policies.audit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bridge.store import Store
from policies.audit import GENESIS, AuditEntry, seal

log = logging.getLogger("houseline.audit")
_APPEND_ATTEMPTS = 5


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = asyncio.Lock()

    async def record(
        self, *, actor: str, action: str, subject: str, verdict: str = "", rule: str = "", **details: Any
    ) -> AuditEntry:
        async with self._lock:
            for attempt in range(_APPEND_ATTEMPTS):
                last = await self.store.last_audit()
                seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                entry = seal(AuditEntry(
                    seq=seq, ts_ms=int(time.time() * 1000), actor=actor, action=action, subject=subject,
                    verdict=verdict, rule=rule, details=details, prev_hash=prev,
                ))
                try:
                    await self.store.add_audit(entry)
                    break
                except Exception as e:
                    # Another process (a CLI command beside the running bridge) appended entry
                    # `seq` first: link to it instead. The primary key keeps the chain single.
                    if "unique" not in str(e).lower() or attempt == _APPEND_ATTEMPTS - 1:
                        raise
        log.info("event=audit seq=%d action=%s actor=%s subject=%s verdict=%s rule=%s", seq, action, actor, subject, verdict or "-", rule or "-")
        return entry
