"""No client is ever stranded, end to end through Synapse, matrix-nio and the sandboxes: leavers
and absent employees get no new clients, held messages survive a crash on their way out,
employees start conversations (a WhatsApp template, a Telegram invitation link), reminders
fire on a moved clock and survive restarts, and absences are covered and revert.

Each test runs its own bridge process with its own store, a copy of the test policy it may
change, and its own clock file (HOUSELINE_CLOCK_FILE) to move the bridge's timers ahead."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bridge.devstack import WHATSAPP_NUMBER, DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeFactory, BridgeProcess
from tests.support import (
    BOT,
    SIGNATURE,
    bot_notice_about,
    bot_notice_in,
    command,
    control,
    eventually,
    open_dm,
)

COMPLIANCE = "@compliance:localhost"
EMPLOYEE = "@employee:localhost"
ADVISER2 = "@adviser2:localhost"
SENIOR = "@senior:localhost"


class ContinuityBridge(BridgeProcess):
    async def audited(self, action: str, count: int) -> list[dict[str, Any]]:
        """The trail's ``action`` entries once there are ``count`` (the trail commits in groups,
        a moment after the log line that announced the event)."""
        return await eventually(lambda: _ready(self.audit(action), count), f"{count} audit entries {action}")

    def audit(self, action: str) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db_path) as db:
            rows = db.execute(
                "SELECT actor, subject, verdict, rule, details FROM audit WHERE action=? ORDER BY seq",
                (action,),
            ).fetchall()
        return [
            {"actor": a, "subject": s, "verdict": v, "rule": r, **json.loads(d)} for a, s, v, r, d in rows
        ]


def round_robin(data: dict) -> None:
    data["assignment"]["mode"] = "round_robin"


async def _ready(entries: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    return entries if len(entries) >= count else None


async def room_of(proc: BridgeProcess, chat_id: object) -> str:
    line = await proc.wait_for_log(f"chat={chat_id} room=", 30)
    return re.search(r"room=(\S+)", line).group(1)


def future_day(days: int = 3) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------------------------
# The two continuity bugs


async def test_offboarded_and_absent_employees_get_no_new_clients(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client
) -> None:
    proc = await own_bridge(policy=round_robin, clock=True, cls=ContinuityBridge)
    admin = staff["admin"]
    dm = await open_dm(admin)
    await command(admin, dm, f"!hl offboard {EMPLOYEE} --to {ADVISER2}", "Offboarded")

    rooms = []
    for i in range(4):  # round-robin would have given every other one to the leaver
        client = new_client(f"Rr{i}", "Leaver")
        await client.say(f"hello {i}")
        rooms.append(await room_of(proc, client.user_id))
    created = await proc.audited("portal.created", 4)
    assert [entry["subject"] for entry in created] == rooms
    for entry in created:
        assert EMPLOYEE not in entry["invited"] and entry["invited"] == [ADVISER2, COMPLIANCE], entry
        assert entry["assignee"] == ADVISER2
    assert not set(rooms) & set(employee.invites)

    # The successor is away too and nobody covers: the absence fallback takes the client and
    # the compliance observers are told.
    reply = await command(admin, dm, f"!hl away {ADVISER2} --until {future_day()}", "is away until")
    assert "nobody covers" in reply
    client = new_client("Nobody", "Left")
    await client.say("is anyone there?")
    room = await room_of(proc, client.user_id)
    entry = (await proc.audited("portal.created", 5))[-1]
    assert entry["invited"] == [SENIOR, COMPLIANCE] and entry["assignee"] == SENIOR
    senior = staff["senior"]
    await senior.wait_for(lambda: room in senior.invites, 30, "the fallback's invite")
    observer = staff["compliance"]
    await observer.wait_for(lambda: room in observer.invites, 30, "the observer's invite")
    await observer.join(room)
    told = await observer.wait_for_event(bot_notice_in(room, "absence fallback"), 30, "the assignment notice")
    assert COMPLIANCE in told.content["m.mentions"]["user_ids"]
    assert room not in staff["adviser2"].invites and room not in employee.invites


async def test_released_message_survives_a_crash_and_arrives_once(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff
) -> None:
    proc = await own_bridge(clock=True, cls=ContinuityBridge)
    alice, bob = (
        9_300_000_001 + int(time.time()) % 100_000 * 10,
        9_300_000_002 + int(time.time()) % 100_000 * 10,
    )
    group = await control(
        stack,
        "POST",
        "/groups",
        {
            "title": "Held family",
            "members": [{"id": alice, "first_name": "Alice"}, {"id": bob, "first_name": "Bob"}],
            "bot_status": "administrator",
        },
    )
    gid = group["chat_id"]
    room = await room_of(proc, gid)
    await control(stack, "POST", f"/groups/{gid}/messages", {"from": alice, "text": "Alice asks"})
    await control(stack, "POST", f"/groups/{gid}/messages", {"from": bob, "text": "Bob asks"})
    await employee.wait_for_message("Bob asks", room)
    held = await employee.send_text(room, "One answer for you both")
    notice = await employee.wait_for_event(bot_notice_about(room, held), 30, "the hold notice")
    assert notice.content["body"].startswith("Held")

    # Telegram fails every send from now on; the senior's join releases the held message,
    # and the bridge is killed while that delivery is being retried.
    await control(
        stack, "POST", "/sandbox/faults", {"fail_next": 10_000, "status": 500, "methods": ["sendMessage"]}
    )
    try:
        admin, senior = staff["admin"], staff["senior"]
        dm = await open_dm(admin)
        await command(admin, dm, f"!hl assign {room} {SENIOR}", "Invited")
        await senior.wait_for(lambda: room in senior.invites, 30, "the senior's invite")
        await senior.join(room)
        await proc.wait_for_log(f"event=outbound_retry room={room} event_id={held}", 60)
        await proc.kill()
    finally:
        await control(stack, "POST", "/sandbox/faults", {"fail_next": 0})

    await own_bridge()

    async def answers() -> list[dict[str, Any]]:
        msgs = (await control(stack, "GET", f"/groups/{gid}/messages"))["messages"]
        return [m for m in msgs if "One answer for you both" in m.get("text", "")]

    got = await eventually(answers, "the released answer in the group", 60)
    assert got[0]["text"] == f"{SIGNATURE}\nOne answer for you both"
    await employee.send_text(room, "and a second one")  # ordered behind it, and a marker for "done"

    async def second() -> bool:
        msgs = (await control(stack, "GET", f"/groups/{gid}/messages"))["messages"]
        return any("and a second one" in m.get("text", "") for m in msgs)

    await eventually(second, "the next answer")
    assert len(await answers()) == 1  # exactly once


# --------------------------------------------------------------------------------------------
# Outreach


async def open_link(stack: DevStack, client, link: str) -> dict[str, Any]:
    """The client taps the link and presses START, as the Telegram app does."""
    return await client._request(
        "POST", f"/client/{client.user_id}/start", {"url": link, **client._profile()}
    )


async def test_telegram_invitation_link_assigns_the_client_to_its_maker(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client
) -> None:
    # Round robin would give the next new client to the test employee; the link wins.
    proc = await own_bridge(policy=round_robin, clock=True, cls=ContinuityBridge)
    adviser2, outsider = staff["adviser2"], staff["outsider"]
    dm = await open_dm(adviser2)
    reply = await command(adviser2, dm, "!hl invite telegram", "https://t.me/")
    link = re.search(r"https://t\.me/\S+", reply).group(0)
    code = link.split("start=", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", code)
    with sqlite3.connect(proc.db_path) as db:  # only the hash is kept
        stored = [r[0] for r in db.execute("SELECT code_hash FROM invite_code")]
    assert code not in stored and len(stored) == 1
    assert code not in proc.output  # never logged

    client = new_client("Linda", "Link")
    await open_link(stack, client, link)
    room = await room_of(proc, client.user_id)
    created = (await proc.audited("portal.created", 1))[-1]
    assert (
        created["invited"] == [ADVISER2, COMPLIANCE]
        and created["assignee"] == ADVISER2
        and created["rule"] == "outreach"
    )
    await adviser2.wait_for(lambda: room in adviser2.invites, 30, "the link maker's invite")
    assert room not in employee.invites
    await adviser2.join(room)
    started = await adviser2.wait_for_event(
        bot_notice_in(room, "opened the invitation link"), 30, "the outreach record"
    )
    assert ADVISER2 in started.content["body"]
    await client.wait_for_text("recorded")  # the disclaimer, recorded as before
    assert (await proc.audited("outreach.link_used", 1))[0]["actor"] == ADVISER2

    # The same link again, from someone else: a polite answer and the normal assignment.
    other = new_client("Otto", "Other")
    await open_link(stack, other, link)
    answer = await other.wait_for_text("already used")
    assert "someone from" in answer["text"]
    other_room = await room_of(proc, other.user_id)
    assert (await proc.audited("portal.created", 2))[-1]["rule"] == "assignment.round_robin"
    assert (await proc.audited("outreach.link_refused", 1))[-1]["status"] == "used"
    assert other_room != room

    # A link past its expiry (the bridge's clock moved 8 days on) is refused the same way.
    reply = await command(adviser2, dm, "!hl invite telegram", "https://t.me/")
    late_link = re.search(r"https://t\.me/\S+", reply).group(0)
    proc.advance(8 * 86400)
    late = new_client("Lara", "Late")
    await open_link(stack, late, late_link)
    assert "expired" in (await late.wait_for_text("expired"))["text"]

    # Who may reach out is policy: the outsider has no adviser role.
    outsider_dm = await open_dm(outsider)
    refused = await command(outsider, outsider_dm, "!hl invite telegram", "No link")
    assert "rule outreach.allowed_roles" in refused
    assert (await proc.audited("outreach.invite", 3))[-1]["verdict"] == "deny"


async def test_whatsapp_outreach_sends_a_template_through_the_outbox(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff
) -> None:
    from sandbox.whatsapp.client import WhatsAppClient

    assert stack.whatsapp is not None
    proc = await own_bridge(clock=True, cls=ContinuityBridge)
    dm = await open_dm(employee)
    number = f"49155{int(time.time() * 1000) % 10**8:08d}"
    spaced = f"+49 155 {number[5:9]} {number[9:]}"

    # Bad input gets a clear answer and creates nothing.
    assert "not a phone number" in await command(
        employee, dm, "!hl contact whatsapp 0155-12ab template follow_up Wendy", "Not started"
    )
    assert "no_such" in await command(
        employee, dm, f"!hl contact whatsapp {spaced} template no_such Wendy", "Not started"
    )
    assert "Usage" in await command(employee, dm, f"!hl contact whatsapp {spaced}", "Usage")
    assert "invite telegram" in await command(
        employee, dm, "!hl contact telegram 123 template x", "Not started"
    )
    assert not proc.audit("portal.created")

    reply = await command(
        employee, dm, f'!hl contact whatsapp {spaced} template follow_up "Wendy W"', "Started"
    )
    room = re.search(r"(!\S+) \(you are invited\)", reply).group(1)
    client = WhatsAppClient(stack.whatsapp.url, number, "Wendy", WHATSAPP_NUMBER)
    got = await client.wait_for(lambda m: m.get("type") == "template", "the template")
    assert got["template"]["name"] == "follow_up" and got["template"]["parameters"] == ["Wendy W"]
    created = (await proc.audited("portal.created", 1))[-1]
    assert created["assignee"] == EMPLOYEE and created["rule"] == "outreach"
    record = await employee.wait_for_event(
        bot_notice_in(room, f"Outreach: {EMPLOYEE} started this conversation"), 30, "the outreach record"
    )
    assert "follow_up" in record.content["body"]
    assert [e["verdict"] for e in await proc.audited("outreach.contact", 1)][-1] == "allow"
    sent = [e for e in await proc.audited("send.text", 1) if e["subject"] == record.event_id]
    assert sent and sent[0]["verdict"] == "allow"  # policy-checked like a message

    # Free text before the client answers is refused, with the 24-hour-window notice.
    early = await employee.send_text(room, "Hi Wendy, shall we talk?")
    refused = await employee.wait_for_event(bot_notice_about(room, early), 30, "the window refusal")
    assert "template" in refused.content["body"]
    await client.say("Yes please")
    await employee.wait_for_message("Yes please", room)
    await employee.send_text(room, "Great, calling you")
    await client.wait_for_text("Great, calling you")
    assert sum(1 for m in await client.inbox() if m.get("type") == "template") == 1

    # Someone the policy does not allow is refused, and audited.
    outsider = staff["outsider"]
    outsider_dm = await open_dm(outsider)
    refused_text = await command(
        outsider, outsider_dm, "!hl contact whatsapp +4915550009999 template follow_up X", "Not started"
    )
    assert "rule outreach.allowed_roles" in refused_text
    assert (await proc.audited("outreach.contact", 2))[-1]["verdict"] == "deny"


# --------------------------------------------------------------------------------------------
# Nobody waits unanswered


def reminders_in(person: Employee, room: str, lead: str) -> list[Any]:
    return [
        e
        for e in person.events
        if e.room_id == room and e.sender == BOT and e.content.get("body", "").startswith(lead)
    ]


async def test_reminders_escalate_survive_a_restart_and_stop_at_an_answer(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client
) -> None:
    # Round robin: the first new client goes to the test employee.
    proc = await own_bridge(policy=round_robin, clock=True, cls=ContinuityBridge)
    client = new_client("Wai", "Ting")
    await client.say("I need an answer please")
    room = await room_of(proc, client.user_id)
    await employee.wait_for_message("I need an answer please", room)
    admin = staff["admin"]
    dm = await open_dm(admin)
    listed = await command(admin, dm, "!hl waiting", "waiting")
    assert room in listed and "Wai Ting" in listed

    # 16 minutes later: the assignee is reminded, with a mention.
    proc.advance(16 * 60)
    reminder = await employee.wait_for_event(
        bot_notice_in(room, "Reminder: the client has waited 15 min"), 30, "the reminder"
    )
    assert reminder.content["m.mentions"]["user_ids"] == [EMPLOYEE]

    # The bridge restarts in the middle of the wait; after an hour the team is called in, once.
    assert await proc.stop() == 0
    proc.advance(45 * 60)
    proc = await own_bridge()
    escalation = await employee.wait_for_event(
        bot_notice_in(room, "Escalation: the client has waited"), 30, "the escalation"
    )
    assert set(escalation.content["m.mentions"]["user_ids"]) == {EMPLOYEE, ADVISER2}
    adviser2 = staff["adviser2"]
    await adviser2.wait_for(lambda: room in adviser2.invites, 30, "the team's invite")
    assert len(reminders_in(employee, room, "Reminder:")) == 1
    assert [e["subject"] for e in await proc.audited("sla.remind", 1)] == [room]

    # An answer stops the clock: hours later, no supervisor is told.
    await employee.send_text(room, "Sorry for the wait!")
    await client.wait_for_text("Sorry for the wait!")
    await eventually(lambda: _no_waiting(proc), "the clock to stop")
    proc.advance(5 * 3600)
    marker = new_client("Mark", "Er")  # its reminder is due at once: proof a tick ran after the move
    await marker.say("marker")
    await proc.wait_for_log("event=sla_remind room=" + await room_of(proc, marker.user_id), 30)
    assert not reminders_in(employee, room, "Supervisors:")
    assert len(reminders_in(employee, room, "Escalation:")) == 1
    assert room not in await command(admin, dm, "!hl waiting", "waiting")


async def _no_waiting(proc: ContinuityBridge) -> bool:
    with sqlite3.connect(proc.db_path) as db:
        return (
            db.execute(
                "SELECT COUNT(*) FROM waiting WHERE event_id IN (SELECT event_id FROM message WHERE direction='in')"
                " AND room_id IN (SELECT room_id FROM portal WHERE name LIKE 'Wai Ting%')"
            ).fetchone()[0]
            == 0
        )


# --------------------------------------------------------------------------------------------
# Absences


async def test_absence_covers_notices_clients_and_reverts(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client
) -> None:
    proc = await own_bridge(policy=round_robin, clock=True, cls=ContinuityBridge)
    admin, adviser2 = staff["admin"], staff["adviser2"]
    client = new_client("Abby", "Sent")
    await client.say("hello adviser")
    room = await room_of(proc, client.user_id)
    await employee.wait_for_message("hello adviser", room)
    dm = await open_dm(admin)

    # Bad input gets a clear answer.
    assert "in the past" in await command(
        admin, dm, f"!hl away {EMPLOYEE} --until 2020-01-01", "Not recorded"
    )
    assert "not a date" in await command(admin, dm, f"!hl away {EMPLOYEE} --until tomorrow", "Not recorded")
    employee_dm = await open_dm(employee)
    assert "only for themselves" in await command(
        employee, employee_dm, f"!hl away {ADVISER2} --until {future_day()}", "Sorry"
    )

    until = future_day()
    reply = await command(
        employee, employee_dm, f"!hl away --until {until} --cover {ADVISER2}", "is away until"
    )
    assert ADVISER2 in reply and "1 conversation" in reply
    await adviser2.wait_for(lambda: room in adviser2.invites, 30, "the cover's invite")
    await employee.wait_for_event(
        bot_notice_in(room, f"Absence: {EMPLOYEE} is away until"), 30, "the room notice"
    )

    # New clients skip the absent employee (round robin would have given this one to them).
    for i in range(2):
        other = new_client(f"New{i}", "Client")
        await other.say("first contact")
        await room_of(proc, other.user_id)
    assert all(EMPLOYEE not in e["invited"] for e in (await proc.audited("portal.created", 3))[1:])

    # The absent employee's client is told once who looks after them; reminders go to the cover.
    await client.say("are you there?")
    notice = await client.wait_for_text("is away until")
    assert until in notice["text"]
    await client.say("hello again")
    await employee.wait_for_message("hello again", room)
    assert sum("is away until" in m.get("text", "") for m in await client.inbox()) == 1
    proc.advance(16 * 60)
    reminder = await employee.wait_for_event(
        bot_notice_in(room, "Reminder: the client has waited"), 30, "the reminder"
    )
    assert reminder.content["m.mentions"]["user_ids"] == [ADVISER2]

    # Back: everything reverts, audited.
    assert "Welcome back" in await command(employee, employee_dm, "!hl back", "Welcome back")
    await employee.wait_for_event(bot_notice_in(room, "Absence over"), 30, "the return notice")

    async def cover_left() -> bool:
        state = await employee.client.room_get_state(room)
        return any(
            e["type"] == "m.room.member"
            and e["state_key"] == ADVISER2
            and e["content"].get("membership") == "leave"
            for e in state.events
        )

    await eventually(cover_left, "the cover to leave the room")
    assert [e["actor"] for e in await proc.audited("absence.end", 1)] == [EMPLOYEE]
    for name in ("After", "Return"):  # two turns: one of them is the returned employee's again
        another = new_client(name, "Back")
        await another.say("hi")
        await room_of(proc, another.user_id)
    assert EMPLOYEE in {e["assignee"] for e in (await proc.audited("portal.created", 5))[3:]}


async def test_outside_business_hours_the_client_is_told_and_the_clock_pauses(
    stack: DevStack, own_bridge: BridgeFactory, employee: Employee, staff, new_client
) -> None:
    # The wealth team works one day a week, three days from now: it is closed now.
    opening_day = datetime.now(timezone.utc).replace(hour=8, minute=0, second=0, microsecond=0) + timedelta(
        days=3
    )
    day = opening_day.strftime("%a")

    def closed_team(data: dict) -> None:
        data["teams"]["wealth"].update(hours=f"{day} 08:00-18:00", tz="UTC")
        data["assignment"].pop("team")
        data["sla"]["out_of_hours"] = {"default": "We are closed now and will answer when we open."}

    proc = await own_bridge(policy=closed_team, clock=True, cls=ContinuityBridge)
    client = new_client("Owen", "Hours")
    await client.say("a question at an odd hour")
    room = await room_of(proc, client.user_id)
    await client.wait_for_text("We are closed now")
    await client.say("and another one")
    await employee.wait_for_message("and another one", room)
    assert sum("We are closed now" in m.get("text", "") for m in await client.inbox()) == 1  # once per wait

    # A second conversation, looked after by someone outside the team (always open): its
    # reminder is the proof that a tick ran after the clock moved.
    marker = new_client("Mona", "Marker")
    await marker.say("marker")
    marker_room = await room_of(proc, marker.user_id)
    admin = staff["admin"]
    dm = await open_dm(admin)
    await command(admin, dm, f"!hl assign {marker_room} {SENIOR}", "Invited")
    proc.advance(16 * 60)
    await proc.wait_for_log(f"event=sla_remind room={marker_room}", 30)
    assert not reminders_in(employee, room, "Reminder:")  # the closed team's clock did not run

    # Past the opening plus 15 minutes of open time, the reminder fires.
    proc.advance((opening_day - datetime.now(timezone.utc)).total_seconds() + 16 * 60)
    await employee.wait_for_event(
        bot_notice_in(room, "Reminder: the client has waited 15 min"), 30, "the reminder after opening"
    )
