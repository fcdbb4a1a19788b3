"""The audit trail's appends (bridge.audit_log) on a real store: group commit keeps one chain.

Every outbound message is an audit entry, so entries are appended in batches (one commit for
whatever arrived while the last commit was under way). These tests check what that must not
change: one unbroken chain, each caller answered with its own committed entry, and a second
writer on the same database (a CLI command beside the running bridge) linked in, not forked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge.audit_log import AuditLog
from bridge.store import Store
from policies.audit import verify_chain


async def _store(path: Path) -> Store:
    store = Store(f"sqlite:{path}")
    await store.start()
    return store


async def test_concurrent_entries_form_one_chain_and_each_caller_gets_its_own(tmp_path: Path) -> None:
    store = await _store(tmp_path / "a.db")
    try:
        audit = AuditLog(store)
        entries = await asyncio.gather(
            *(
                audit.record(
                    actor=f"@u{i}:l", action="send.text", subject=f"$e{i}", verdict="allow", rule="r", n=i
                )
                for i in range(300)
            )
        )
        assert sorted(e.seq for e in entries) == list(range(1, 301))
        # Each answer is the caller's own entry, as committed.
        assert all(e.subject == f"$e{e.details['n']}" for e in entries)
        stored = await store.audit_entries()
        assert len(stored) == 300 and verify_chain(stored) is None
        assert {e.seq: e.hash for e in entries} == {e.seq: e.hash for e in stored}
        # Arrival order is chain order.
        assert [e.details["n"] for e in stored] == list(range(300))
    finally:
        await store.stop()


async def test_a_second_writer_on_the_same_database_is_linked_in_not_forked(tmp_path: Path) -> None:
    bridge_store, cli_store = await _store(tmp_path / "b.db"), await _store(tmp_path / "b.db")
    try:
        bridge, cli = AuditLog(bridge_store), AuditLog(cli_store)
        for round_ in range(5):
            # The bridge's cached chain head is stale after each CLI append: its next append
            # meets the taken sequence number and links to the CLI's entry instead.
            await asyncio.gather(
                *(
                    bridge.record(actor="@b:l", action="send.text", subject=f"$b{round_}.{i}")
                    for i in range(20)
                )
            )
            await cli.record(actor="houseline-cli", action="record.purge", subject=f"!r{round_}:l")
        stored = await bridge_store.audit_entries()
        assert len(stored) == 105 and verify_chain(stored) is None
        assert [e.subject for e in stored if e.actor == "houseline-cli"] == [f"!r{r}:l" for r in range(5)]
    finally:
        await bridge_store.stop()
        await cli_store.stop()


async def test_an_entry_written_behind_the_bridges_back_is_linked_to(tmp_path: Path) -> None:
    store = await _store(tmp_path / "c.db")
    try:
        audit = AuditLog(store)
        await audit.record(actor="@a:l", action="x", subject="s1")
        # The next sequence number taken behind the bridge's back (its cached head is stale):
        # the append meets the unique check, re-reads the head and links to that row.
        await store.db.execute(
            "INSERT INTO audit (seq, ts_ms, actor, action, subject, verdict, rule, details, prev_hash, hash)"
            " VALUES (2, 0, 'other', 'y', 's2', '', '', '{}', $1, 'h')",
            (await store.last_audit())[1],
        )
        entry = await audit.record(actor="@a:l", action="x", subject="s3")
        assert entry.seq == 3 and entry.prev_hash == "h"
    finally:
        await store.stop()
