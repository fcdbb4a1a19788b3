"""A LINE invitation link end to end: the employee's one-time link pre-fills a message with the
code, and the client sending it starts a conversation assigned to that employee (the core's
outreach, unchanged for a third network)."""

from __future__ import annotations

import re
import secrets
from urllib.parse import unquote

from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeFactory
from tests.support import command, open_dm
from tests.test_e2e_line import LineClient, ghost

ADVISER2 = "@adviser2:localhost"


def round_robin(rules: dict) -> None:
    rules["assignment"]["mode"] = "round_robin"


async def test_a_line_invitation_link_brings_the_client_to_its_maker(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff: dict[str, Employee]
) -> None:
    proc = await own_bridge(policy=round_robin)
    adviser2 = staff["adviser2"]
    dm = await open_dm(adviser2)
    reply = await command(adviser2, dm, "!hl invite line", "https://line.me/R/oaMessage/")
    link = re.search(r"https://line\.me/R/oaMessage/\S+", reply).group(0)
    assert stack.line is not None
    # The link names the account by its basic id and carries the text the client's LINE types in.
    text = unquote(link.split("/?", 1)[1])
    code = re.search(r"[A-Za-z0-9]{16,}", text).group(0)
    assert code not in proc.output  # never logged

    client = LineClient(stack, f"inv{secrets.token_hex(4)}", "Ines Invite")
    await client.say(text)
    ghost_id = ghost(stack, client.user_id)

    line = await proc.wait_for_log(f"chat={client.user_id} room=", 30)
    assert "event=portal_created network=line" in line
    room = re.search(r"room=(\S+)", line).group(1)
    await adviser2.wait_for(lambda: room in adviser2.invites, 30, "the link maker's invite")
    await adviser2.join(room)
    await adviser2.wait_for_message(text, room, sender=ghost_id)
    assert room not in employee.invites  # round robin would have given it to the employee
