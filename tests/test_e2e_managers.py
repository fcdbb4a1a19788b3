"""Team managers see their team's conversations and no others, read-only, and follow a
conversation when it moves to another team (assignment, absence and its end), end to end
through the sandbox, the bridge, Synapse and matrix-nio, with two teams."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sandbox.employee import Employee
from tests.conftest import BridgeFactory
from tests.support import BOT, command, eventually, ghost_of, open_dm

EMPLOYEE = "@employee:localhost"
ADVISER2 = "@adviser2:localhost"
#: Manager of team "wealth" (the employee's); no role of their own, so they may only read.
WEALTH_MANAGER = "@outsider:localhost"
#: Manager of team "desk" (adviser2's).
DESK_MANAGER = "@senior:localhost"


def two_teams(rules: dict) -> None:
    rules.pop("sla", None)
    rules["teams"] = {
        "wealth": {"members": [EMPLOYEE], "roles": ["adviser"], "managers": [WEALTH_MANAGER]},
        "desk": {"members": [ADVISER2], "roles": ["adviser"], "managers": [DESK_MANAGER]},
    }
    rules["join"]["allowed_roles"] = ["adviser"]  # the desk's manager has no say as a senior here
    rules["join"].pop("senior_role", None)


async def memberships(person: Employee, room_id: str) -> dict[str, str]:
    resp = await person.client.room_get_state(room_id)
    return {
        e["state_key"]: e["content"].get("membership", "")
        for e in getattr(resp, "events", [])
        if e["type"] == "m.room.member"
    }


async def until_members(person: Employee, room_id: str, check, what: str) -> dict[str, str]:
    async def ok() -> dict[str, str] | None:
        found = await memberships(person, room_id)
        return found if check(found) else None

    return await eventually(ok, what)


def present(found: dict[str, str], user: str) -> bool:
    return found.get(user) in ("join", "invite")


async def test_managers_read_their_team_only_and_follow_the_conversation(
    own_bridge: BridgeFactory, employee: Employee, staff: dict[str, Employee], new_client
) -> None:
    await own_bridge(policy=two_teams)
    wealth_manager = staff["outsider"]
    client = new_client("Mona", "Managed")
    await client.say("Hello, who looks after me?")
    msg = await employee.wait_for_message("Hello, who looks after me?", sender=ghost_of(client))
    room = msg.room_id

    # The employee's team manager is invited; the other team's is not.
    found = await until_members(
        employee, room, lambda m: present(m, WEALTH_MANAGER), "the wealth manager invited"
    )
    assert not present(found, DESK_MANAGER)

    # They may read: their join stands. They may not write to the client.
    await wealth_manager.join(room)
    await wealth_manager.wait_for_message("Hello, who looks after me?", room)
    attempt = await wealth_manager.send_text(room, "Manager here, all fine?")
    refusal = await wealth_manager.wait_for_event(
        lambda e: (
            e.room_id == room
            and e.sender == BOT
            and e.content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == attempt
        ),
        30,
        "the refusal of the manager's message",
    )
    assert "team managers can read" in refusal.content["body"]
    assert "join.manager_read_only" in refusal.content["body"]
    assert (await memberships(employee, room)).get(WEALTH_MANAGER) == "join"

    # The conversation moves to the desk team: its manager follows, the wealth manager leaves.
    admin = staff["admin"]
    dm = await open_dm(admin)
    await command(admin, dm, f"!hl assign {room} {ADVISER2}", "they look after it now")
    found = await until_members(
        employee,
        room,
        lambda m: present(m, DESK_MANAGER) and not present(m, WEALTH_MANAGER),
        "the desk manager in and the wealth manager out",
    )
    assert found.get(WEALTH_MANAGER) == "leave"

    # Adviser2 is away and the employee covers: the cover's team manager is back while it lasts.
    until = (datetime.now(timezone.utc) + timedelta(days=7)).strftime("%Y-%m-%d")
    await command(admin, dm, f"!hl away {ADVISER2} --until {until} --cover {EMPLOYEE}", "away")
    await until_members(
        employee,
        room,
        lambda m: present(m, WEALTH_MANAGER) and present(m, DESK_MANAGER),
        "both managers during the absence",
    )
    await command(admin, dm, f"!hl back {ADVISER2}", "Welcome back")
    await until_members(
        employee,
        room,
        lambda m: present(m, DESK_MANAGER) and not present(m, WEALTH_MANAGER),
        "the wealth manager out again once the absence ended",
    )
