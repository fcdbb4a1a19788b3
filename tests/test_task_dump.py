"""``kill -USR1``: a running bridge says where each of its tasks waits, and keeps running."""

from __future__ import annotations

import os
import signal

from sandbox.employee import Employee
from tests.support import ghost_of


async def test_sigusr1_logs_every_task_and_the_bridge_carries_on(
    bridge, employee: Employee, new_client
) -> None:
    assert bridge.proc is not None
    os.kill(bridge.proc.pid, signal.SIGUSR1)
    dump = await bridge.wait_for_log("event=tasks_dump", 15)
    assert int(dump.split("count=")[1].split()[0]) >= 2
    watch = await bridge.wait_for_log("event=task name=homeserver-watch", 5)
    assert " at=_loop:" in watch, watch
    client = new_client("After", "Dump")
    await client.say("still there?")
    await employee.wait_for_message("still there?", sender=ghost_of(client), timeout=60)
