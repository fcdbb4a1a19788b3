"""Groups, end to end: one portal per Telegram group, a ghost per member, joins and leaves
mirrored, answers reach the group, and a group → supergroup migration keeps the same room."""

from __future__ import annotations

import itertools
from typing import Any

from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeProcess
from tests.support import BOT, SIGNATURE, bot_notice_about, control, eventually, ghost, open_dm

_users = itertools.count(9_100_000_001)


async def members(employee: Employee, room_id: str) -> dict[str, str]:
    resp = await employee.client.room_get_state(room_id)
    return {
        e["state_key"]: e["content"].get("membership") for e in resp.events if e["type"] == "m.room.member"
    }


async def test_group_portal_members_answers_and_migration(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, staff
) -> None:
    alice, bob, carol = next(_users), next(_users), next(_users)
    earlier = {e.event_id for e in employee.events}  # other tests' groups announce themselves alike
    group = await control(
        stack,
        "POST",
        "/groups",
        {
            "title": "Family office",
            "members": [{"id": alice, "first_name": "Alice"}, {"id": bob, "first_name": "Bob"}],
            "bot_status": "administrator",
        },
    )
    gid = group["chat_id"]
    added = await employee.wait_for_event(
        lambda e: (
            e.event_id not in earlier
            and e.sender == BOT
            and "added the company to the Telegram group" in e.content.get("body", "")
        ),
        30,
        "the portal",
    )
    room = added.room_id
    name = await employee.client.room_get_state_event(room, "m.room.name")
    assert name.content["name"] == "Family office (Telegram group)"

    await control(stack, "POST", f"/groups/{gid}/messages", {"from": alice, "text": "Alice here"})
    await control(stack, "POST", f"/groups/{gid}/messages", {"from": bob, "text": "Bob here"})
    assert (await employee.wait_for_message("Alice here", room)).sender == ghost(alice)
    assert (await employee.wait_for_message("Bob here", room)).sender == ghost(bob)

    await control(stack, "POST", f"/groups/{gid}/members", {"id": carol, "first_name": "Carol"})
    await eventually(lambda: _is(employee, room, ghost(carol), "join"), "Carol's ghost to join")
    await control(stack, "DELETE", f"/groups/{gid}/members/{bob}")
    await eventually(lambda: _is(employee, room, ghost(bob), "leave"), "Bob's ghost to leave")

    # Two clients and no senior adviser present: the policy holds the answer.
    held = await employee.send_text(room, "Hello all")
    notice = await employee.wait_for_event(bot_notice_about(room, held), 30, "the hold notice")
    assert notice.content["body"].startswith("Held") and "rule join.senior_role" in notice.content["body"]

    async def group_has_answer() -> dict[str, Any] | None:
        msgs = (await control(stack, "GET", f"/groups/{gid}/messages"))["messages"]
        return next((m for m in msgs if "Hello all" in m.get("text", "")), None)

    assert await group_has_answer() is None

    # An admin brings a senior in; once the senior joins, the held answer goes out.
    admin, senior = staff["admin"], staff["senior"]
    dm = await open_dm(admin)
    await admin.send_text(dm, f"!hl assign {room} {senior.user_id}")
    reply = await admin.wait_for_event(
        lambda e: e.room_id == dm and e.sender == BOT and "Invited" in e.content.get("body", ""),
        30,
        "the assign reply",
    )
    assert senior.user_id in reply.content["body"]
    await senior.wait_for(lambda: room in senior.invites, 30, "the senior's invite")
    await senior.join(room)
    answer = await eventually(group_has_answer, "the released answer in the group")
    assert answer["text"] == f"{SIGNATURE}\nHello all"

    migrated = await control(stack, "POST", f"/groups/{gid}/migrate", {"by": alice})
    new_id = migrated["chat_id"]
    assert new_id != gid
    await employee.wait_for_event(
        lambda e: e.room_id == room and "upgraded to a supergroup" in e.content.get("body", ""),
        30,
        "the migration notice",
    )
    await control(
        stack, "POST", f"/groups/{new_id}/messages", {"from": alice, "text": "still here after the upgrade"}
    )
    assert (
        await employee.wait_for_message("still here after the upgrade", sender=ghost(alice))
    ).room_id == room
    await employee.send_text(room, "answer after the upgrade")

    async def supergroup_has_answer() -> dict[str, Any] | None:
        msgs = (await control(stack, "GET", f"/groups/{new_id}/messages"))["messages"]
        return next((m for m in msgs if "answer after the upgrade" in m.get("text", "")), None)

    await eventually(supergroup_has_answer, "the answer in the supergroup")


async def _is(employee: Employee, room: str, user: str, membership: str) -> bool:
    return (await members(employee, room)).get(user) == membership
