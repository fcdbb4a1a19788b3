"""Never lose a message: an employee's message the homeserver handed over survives Telegram
failing and the bridge being killed, and arrives exactly once; order within a chat is kept."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time

from bridge.catchup import FROZEN_S
from bridge.devstack import DevStack
from sandbox.employee import Employee
from sandbox.homeserver import DATABASE_FILE
from tests.conftest import BridgeProcess
from tests.support import bot_notice_about, control, eventually, ghost_of


async def test_queued_message_survives_a_kill_and_arrives_once(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Dur", "Able")
    await client.say("are you there?")
    room = (await employee.wait_for_message("are you there?", sender=ghost_of(client))).room_id
    await client.wait_for_text("recorded")  # the disclaimer went out; the chat is quiet now

    # Telegram answers 500 to every send: the bridge keeps retrying, and says so once.
    await control(
        stack, "POST", "/sandbox/faults", {"fail_next": 10_000, "status": 500, "methods": ["sendMessage"]}
    )
    try:
        first = await employee.send_text(room, "first, while Telegram is down")
        await employee.send_text(room, "second, while Telegram is down")
        delayed = await employee.wait_for_event(bot_notice_about(room, first), 30, "the delay notice")
        assert delayed.content["body"].startswith("Delivery delayed")
        # The homeserver's transactions were answered (queued): kill the bridge mid-retry.
        await bridge.kill()
    finally:
        await control(stack, "POST", "/sandbox/faults", {"fail_next": 0})

    await bridge.start()
    await client.wait_for_text("second, while Telegram is down", timeout=60)
    texts = [m["text"] for m in await client.inbox() if "while Telegram is down" in m.get("text", "")]
    assert [t.split("\n", 1)[1] for t in texts] == [
        "first, while Telegram is down",
        "second, while Telegram is down",
    ]

    assert "event=outbox_resumed rooms=1 events=2" in bridge.output  # both were still queued after the kill

    async def outbox_empty() -> bool:
        with sqlite3.connect(stack.workdir / "houseline.db") as db:
            return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0

    await eventually(outbox_empty, "the outbox to drain")


async def test_events_a_restarting_homeserver_forgot_are_caught_up(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    """Synapse queues events for the bridge in memory while a transaction is in flight; a
    restart forgets them. Freeze the bridge so a transaction hangs, write, restart Synapse,
    thaw the bridge: every message still reaches the client, once, in order."""
    client = new_client("Lost", "Queue")
    await client.say("anyone?")
    room = (await employee.wait_for_message("anyone?", sender=ghost_of(client))).room_id
    await client.wait_for_text("recorded")

    assert bridge.proc is not None
    frozen_at = time.monotonic()
    os.kill(bridge.proc.pid, signal.SIGSTOP)
    try:
        for i in range(5):
            await employee.send_text(room, f"frozen {i}")
        await stack.homeserver.restart()
        # The fault's length: long enough that the thawed bridge knows it was stopped (it cannot
        # have seen the homeserver go away while it was not running).
        await asyncio.sleep(max(0.0, FROZEN_S + 2.0 - (time.monotonic() - frozen_at)))
    finally:
        os.kill(bridge.proc.pid, signal.SIGCONT)

    await client.wait_for_text("frozen 4", timeout=60)
    line = await bridge.wait_for_log("event=catchup_done why=bridge_was_frozen", 30)
    texts = [m["text"].split("\n", 1)[1] for m in await client.inbox() if "frozen" in m.get("text", "")]
    assert texts == [f"frozen {i}" for i in range(5)]
    # The homeserver really did forget some (else this test proves nothing about the catch-up).
    recovered = int(line.split("recovered=")[1].split()[0])
    assert recovered >= 1, line


async def test_what_employees_write_after_homeserver_restarts_reaches_the_client(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    """Synapse on SQLite numbers its appservice transactions again after a restart, from the
    highest one not yet sent, or from 1 when all were sent (element-hq/synapse#14556). Restarted
    twice with nothing unsent, its numbers after the second restart are ones the bridge answered
    after the first, for other events: each message written after a restart still goes out."""
    client = new_client("Re", "Numbered")
    await client.say("still there?")
    room = (await employee.wait_for_message("still there?", sender=ghost_of(client))).room_id
    await client.wait_for_text("recorded")

    def caught_up() -> int:
        return sum("event=catchup_done why=homeserver_back" in line for line in bridge.lines)

    async def nothing_unsent() -> bool:
        with sqlite3.connect(stack.homeserver.data_dir / DATABASE_FILE) as db:
            return db.execute("SELECT COUNT(*) FROM application_services_txns").fetchone()[0] == 0

    # Two restarts make the numbers repeat; a transaction created as Synapse stopped (a receipt)
    # can still carry its numbering on, hence up to four.
    for i in range(4):
        if i >= 2 and "event=as_txn_sequence_restarted" in bridge.output:
            break
        await eventually(nothing_unsent, "the homeserver to have sent every transaction")
        seen = caught_up()
        await stack.homeserver.restart()

        # After the catch-up over the restart: only the homeserver's transaction carries the
        # message, so the test fails if the bridge takes it for one it already handled.
        async def restarted() -> bool:
            return caught_up() > seen

        await eventually(restarted, "the catch-up after the restart", timeout=60)
        await employee.send_text(room, f"after restart {i}")
        await client.wait_for_text(f"after restart {i}", timeout=30)
    assert "event=as_txn_sequence_restarted" in bridge.output
