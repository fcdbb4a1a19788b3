"""Never lose a message: an employee's message the homeserver handed over survives Telegram
failing and the bridge being killed, and arrives exactly once; order within a chat is kept."""

from __future__ import annotations

import sqlite3

from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeProcess
from tests.support import bot_notice_about, control, eventually, ghost_of


async def test_queued_message_survives_a_kill_and_arrives_once(stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client) -> None:
    client = new_client("Dur", "Able")
    await client.say("are you there?")
    room = (await employee.wait_for_message("are you there?", sender=ghost_of(client))).room_id
    await client.wait_for_text("recorded")  # the disclaimer went out; the chat is quiet now

    # Telegram answers 500 to every send: the bridge keeps retrying, and says so once.
    await control(stack, "POST", "/sandbox/faults", {"fail_next": 10_000, "status": 500, "methods": ["sendMessage"]})
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
    assert [t.split("\n", 1)[1] for t in texts] == ["first, while Telegram is down", "second, while Telegram is down"]

    assert "event=outbox_resumed rooms=1 events=2" in bridge.output  # both were still queued after the kill

    async def outbox_empty() -> bool:
        with sqlite3.connect(stack.workdir / "houseline.db") as db:
            return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    await eventually(outbox_empty, "the outbox to drain")
