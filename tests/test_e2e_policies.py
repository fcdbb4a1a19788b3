"""Policy bots, end to end: each rule kind is attacked through real Synapse, matrix-nio and the
sandbox, and nothing that must not cross does. Each test runs its own bridge process with its
own store and a copy of the test policy it may change."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import aiohttp
import yaml

from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeFactory
from tests.support import bot_notice_about, bot_notice_in, command, eventually, ghost_of, open_dm

COMPLIANCE = "@compliance:localhost"


async def portal_for(client, employee: Employee, text: str = "hello") -> str:
    await client.say(text)
    return (await employee.wait_for_message(text, sender=ghost_of(client))).room_id


async def refused(employee: Employee, room: str, event_id: str) -> dict:
    notice = await employee.wait_for_event(bot_notice_about(room, event_id), 30, f"the refusal of {event_id}")
    assert (
        "not sent" in notice.content["body"].lower()
        and "Nothing was sent to the client" in notice.content["body"]
    )
    return notice.content


async def test_sharing_rules_stop_what_must_not_leave(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client
) -> None:
    await own_bridge()
    client = new_client("Sha", "Ring")
    room = await portal_for(client, employee)
    attempts = {
        "Sure, my card is 4111 1111-1111 1111, charge it": "sharing.card_numbers",
        "Wire it to DE89 3704 0044 0532 0130 00 please": "sharing.ibans",
        "Text me privately: +49 151 - 234 567 89": "sharing.personal_contacts",
        "or write to jo dot smith at gmail dot com": "sharing.personal_contacts",
        "[restricted] Q3 numbers before the announcement": "sharing.blocked_labels",
        "Re project Falcon: not yet public": "sharing.custom_patterns",
    }
    for text, rule in attempts.items():
        event_id = await employee.send_text(room, text)
        content = await refused(employee, room, event_id)
        assert f"rule {rule}" in content["body"], (text, content["body"])
        assert COMPLIANCE in content["m.mentions"]["user_ids"]  # compliance observers are told
    assert "1111 1111" not in content["body"]

    # A program renamed to report.pdf is still a program.
    mz = b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run in DOS mode" + b"\x00" * 200
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{stack.homeserver.url}/_matrix/media/v3/upload",
            params={"filename": "report.pdf"},
            data=mz,
            headers={"Authorization": f"Bearer {employee.access_token}", "Content-Type": "application/pdf"},
        ) as resp:
            mxc = (await resp.json())["content_uri"]
    file_event = await employee.send_event(
        room,
        "m.room.message",
        {
            "msgtype": "m.file",
            "body": "report.pdf",
            "filename": "report.pdf",
            "url": mxc,
            "info": {"mimetype": "application/pdf", "size": len(mz)},
        },
    )
    assert "rule sharing.blocked_file_types" in (await refused(employee, room, file_event))["body"]

    # An allowed message goes; an edit that smuggles a card number into it does not.
    allowed = await employee.send_text(room, "Call our office on +49 30 1234567 tomorrow")
    await client.wait_for_text("Call our office on +49 30 1234567 tomorrow")
    edit = await employee.send_event(
        room,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* Call our office, or pay with 4111111111111111",
            "m.new_content": {"msgtype": "m.text", "body": "Call our office, or pay with 4111111111111111"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": allowed},
        },
    )
    assert (await refused(employee, room, edit))["body"].startswith("Edit not sent")

    # A compliance observer reads but never sends.
    observer = staff["compliance"]
    await observer.wait_for(lambda: room in observer.invites, 30, "the observer's invite")
    await observer.join(room)
    spoken = await observer.send_text(room, "observer speaking")
    assert "rule join.observer_read_only" in (await refused(employee, room, spoken))["body"]

    received = " ".join(
        m.get("text", "") + m.get("caption", "") for m in await client.history() if m.get("sender") == "bot"
    )
    for leaked in ("4111", "DE89", "151", "gmail", "restricted", "Falcon", "observer speaking"):
        assert leaked not in received, leaked
    assert not any("document" in m for m in await client.history())
    assert "Call our office on +49 30 1234567 tomorrow" in received  # nothing else was held back


async def test_join_rules_commands_and_reload(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client
) -> None:
    policy_bridge = await own_bridge()
    client = new_client("Jo", "In")
    room = await portal_for(client, employee)
    admin, adviser2 = staff["admin"], staff["adviser2"]
    dm = await open_dm(admin)

    # A non-admin is politely refused.
    employee_dm = await open_dm(employee)
    assert "only Houseline admins" in await command(employee, employee_dm, "!hl rooms", "Sorry")

    assert "usage" in (await command(admin, dm, "!hl assign", "Usage")).lower()
    assert "rule join.roles" in await command(
        admin, dm, f"!hl assign {room} @outsider:localhost", "Not invited"
    )
    assert "no user @ghost-of-nobody:localhost" in await command(
        admin, dm, f"!hl assign {room} @ghost-of-nobody:localhost", "There is no user"
    )
    assert "Invited @adviser2:localhost" in await command(
        admin, dm, f"!hl assign {room} @adviser2:localhost", "Invited"
    )

    # The company changes its policy before adviser2 accepts: an invalid policy never takes effect...
    policy = yaml.safe_load(policy_bridge.policy_path.read_text())
    broken = dict(
        policy, sharing={**policy["sharing"], "custom_patterns": [{"name": "bad", "regex": "(unclosed"}]}
    )
    policy_bridge.policy_path.write_text(yaml.safe_dump(broken))
    reply = await command(admin, dm, "!hl policy reload", "did not take effect")
    assert "custom_patterns[0].regex" in reply
    # ...a valid one does, and the join that now breaks a rule is undone at once.
    policy["roles"]["adviser"] = ["@employee:localhost"]
    policy["teams"]["wealth"]["members"] = ["@employee:localhost"]
    policy_bridge.policy_path.write_text(yaml.safe_dump(policy))
    assert "Policy reloaded." in await command(admin, dm, "!hl policy reload", "reloaded")
    await adviser2.wait_for(lambda: room in adviser2.invites, 30, "adviser2's invite")
    await adviser2.join(room)
    removed = await employee.wait_for_event(
        bot_notice_in(room, "@adviser2:localhost was removed"), 30, "the removal notice"
    )
    assert "rule join.roles" in removed.content["body"]

    async def adviser2_gone() -> bool:
        members = await employee.client.joined_members(room)
        return all(m.user_id != adviser2.user_id for m in members.members)

    await eventually(adviser2_gone, "adviser2 to be removed")

    assert "Current policy" in await command(admin, dm, "!hl policy show", "Current policy")
    assert "deny" in await command(
        admin, dm, "!hl policy test my card 4111 1111 1111 1111", "sharing.card_numbers"
    )
    assert "Unknown command" in await command(admin, dm, "!hl frobnicate", "Unknown command")


async def test_offboarding_hands_every_conversation_over(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client
) -> None:
    await own_bridge()
    client = new_client("Off", "Board")
    room = await portal_for(client, employee)
    admin, adviser2, senior = staff["admin"], staff["adviser2"], staff["senior"]
    dm = await open_dm(admin)
    await command(admin, dm, f"!hl assign {room} @adviser2:localhost", "Invited")
    await adviser2.wait_for(lambda: room in adviser2.invites, 30, "adviser2's invite")
    await adviser2.join(room)
    await employee.wait_for_event(
        lambda e: e.room_id == room and e.type == "m.room.member" and e.sender == adviser2.user_id,
        30,
        "adviser2 in the room",
    )
    before = await client.inbox()

    report = await command(admin, dm, "!hl offboard @adviser2:localhost --to @senior:localhost", "Offboarded")
    assert "handed 1 conversation(s) to @senior:localhost" in report
    await employee.wait_for_event(
        bot_notice_in(room, "Handover: @adviser2:localhost"), 30, "the handover note"
    )
    await senior.wait_for(lambda: room in senior.invites, 30, "the successor's invite")
    members = await employee.client.joined_members(room)
    assert adviser2.user_id not in {m.user_id for m in members.members}
    assert "offboarded" in await command(admin, dm, f"!hl assign {room} @adviser2:localhost", "Not invited")
    assert await client.inbox() == before  # the client notices nothing


async def test_disclaimer_once_in_the_clients_language(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, new_client
) -> None:
    await own_bridge()
    client = new_client("Dora", "Deutsch")
    client.language_code = "de"
    room = await portal_for(client, employee, "Guten Tag")
    await client.wait_for_text(
        "Dieses Gespräch mit Example Advisers wird aus regulatorischen Gründen aufgezeichnet."
    )
    await employee.wait_for_event(
        bot_notice_in(room, "Disclaimer sent to the client"), 30, "the recorded disclaimer"
    )
    await client.say("noch eine Frage")
    await employee.wait_for_message("noch eine Frage", sender=ghost_of(client))
    await employee.send_text(room, "Gerne")
    await client.wait_for_text("Gerne")
    assert sum("aufgezeichnet" in m.get("text", "") for m in await client.inbox()) == 1


async def test_audit_trail_verifies_and_detects_tampering(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, new_client
) -> None:
    policy_bridge = await own_bridge()
    client = new_client("Au", "Dit")
    room = await portal_for(client, employee)
    denied = await employee.send_text(room, "card 4111 1111 1111 1111")
    await refused(employee, room, denied)
    cmd = [sys.executable, "-m", "bridge", "audit"]
    config = ["-c", str(policy_bridge.config_path)]
    ok = subprocess.run([*cmd, "verify", *config], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "chain intact" in ok.stdout, ok.stdout + ok.stderr
    shown = subprocess.run([*cmd, "show", *config], capture_output=True, text=True, timeout=60).stdout
    assert "send.text deny [sharing.card_numbers]" in shown and "portal.created" in shown

    with sqlite3.connect(policy_bridge.db_path) as db:
        db.execute("UPDATE audit SET verdict='allow' WHERE action='send.text' AND verdict='deny'")
        seq = db.execute("SELECT seq FROM audit WHERE action='send.text' ORDER BY seq LIMIT 1").fetchone()[0]
    broken = subprocess.run([*cmd, "verify", *config], capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1
    assert f"BROKEN at entry {seq}" in broken.stdout


async def test_round_robin_assignment_takes_turns(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client
) -> None:
    policy_bridge = await own_bridge()
    admin, adviser2 = staff["admin"], staff["adviser2"]
    policy = yaml.safe_load(policy_bridge.policy_path.read_text())
    policy["assignment"]["mode"] = "round_robin"
    policy_bridge.policy_path.write_text(yaml.safe_dump(policy))
    dm = await open_dm(admin)
    await command(admin, dm, "!hl policy reload", "reloaded")

    rooms = []
    for name in ("Rita", "Robin"):
        client = new_client(name, "Round")
        await client.say(f"hello from {name}")
        # The admin asks the bot which room the client's conversation is.
        await policy_bridge.wait_for_log(f"chat={client.user_id} room=", 30)
        reply = await command(admin, dm, f"!hl whois {client.user_id}", f"chat {client.user_id}")
        rooms.append(next(line.split()[1] for line in reply.splitlines() if line.startswith("room !")))

    def invitees(room: str) -> set[str]:
        return {
            who for who, person in (("employee", employee), ("adviser2", adviser2)) if room in person.invites
        }

    async def everyone_invited() -> bool:
        return all(invitees(r) for r in rooms)

    await eventually(everyone_invited, "the assignees' invites")
    assert [len(invitees(r)) for r in rooms] == [1, 1]
    assert invitees(rooms[0]) != invitees(rooms[1])  # one each, in turn
