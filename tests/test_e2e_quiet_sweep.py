"""After an outage the outbox waits only for the portals with a conversation under way; the quiet
ones are read in the background, and a quiet room the outbox is about to deliver to is read
first, so what the homeserver forgot there still arrives, once and in order."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time

from bridge.catchup import ACTIVE_S, FROZEN_S
from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.support import ghost_of


def _pairs(line: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in line.split() if "=" in p)


def _backdate(db_path, rooms: list[str], seconds: float) -> None:
    """Everything in these rooms (the portal, the messages, the events the homeserver sent)
    happened ``seconds`` earlier, as far as the store knows."""
    shifts = [(int(seconds * 1000), r) for r in rooms]
    with sqlite3.connect(db_path) as db:
        db.executemany("UPDATE seen_event SET seen_at = seen_at - ? WHERE room_id = ?", shifts)
        db.executemany("UPDATE message SET created_at = created_at - ? WHERE room_id = ?", shifts)
        db.executemany("UPDATE portal SET created_at = created_at - ? WHERE room_id = ?", shifts)


async def test_quiet_portals_are_swept_after_an_outage_and_what_was_forgotten_there_arrives(
    stack: DevStack, own_bridge, employee: Employee, new_client
) -> None:
    proc = await own_bridge()
    clients = [new_client(f"Quiet{i}", "Sweep") for i in range(8)]
    for client in clients:
        await client.say("hello")
    rooms = [
        (await employee.wait_for_message("hello", sender=ghost_of(client), timeout=60)).room_id
        for client in clients
    ]
    for client in clients:
        await client.wait_for_text("recorded")
    for room in rooms:
        await employee.send_text(room, "on it")
    for client in clients:
        await client.wait_for_text("on it")

    # Two conversations are under way; the other six last moved two hours ago.
    await proc.stop()
    _backdate(proc.db_path, rooms[2:], ACTIVE_S * 2)
    await proc.start()
    quiet_room, quiet_client = rooms[5], clients[5]

    # The bridge freezes with a transaction in flight, the employee writes in a quiet room, and
    # the homeserver restarts: what it had queued for the bridge is forgotten.
    assert proc.proc is not None
    frozen_at = time.monotonic()
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        for i in range(3):
            await employee.send_text(quiet_room, f"while frozen {i}")
        await stack.homeserver.restart()
        await asyncio.sleep(max(0.0, FROZEN_S + 2.0 - (time.monotonic() - frozen_at)))
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)

    done = _pairs(await proc.wait_for_log("event=catchup_done why=bridge_was_frozen", 60))
    # The outbox waited for the two active rooms (and the quiet one, if the homeserver's own
    # transaction reached the bridge before the catch-up looked), not for every portal.
    assert done["rooms_read"] in ("2", "3"), done
    assert int(done["quiet"]) == 8 - int(done["rooms_read"]), done
    await employee.send_text(quiet_room, "after the outage")

    texts = []
    for _ in range(40):
        texts = [
            m["text"].split("\n", 1)[1]
            for m in await quiet_client.inbox()
            if "frozen" in m.get("text", "") or "after the outage" in m.get("text", "")
        ]
        if len(texts) >= 4:
            break
        await asyncio.sleep(0.5)
    assert texts == [f"while frozen {i}" for i in range(3)] + ["after the outage"]

    sweep = _pairs(await proc.wait_for_log("event=catchup_sweep_done", 60))
    assert sweep["rooms"] == done["quiet"], (sweep, done)
    # The homeserver really forgot something (else this proves nothing about the reading).
    assert int(done["recovered"]) + int(sweep["recovered"]) >= 1, (done, sweep)
