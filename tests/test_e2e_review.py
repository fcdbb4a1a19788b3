"""The compliance review queue end to end, through the sandbox, the bridge, Synapse and
matrix-nio: lexicon alerts in both directions, a held message approved and another rejected,
sampling, the queue across a restart, and nobody reviewing their own messages.

Each test runs its own bridge with its own store and a copy of the test policy with a
``supervision`` section."""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Callable

from sandbox.employee import Employee
from tests.conftest import BridgeFactory, BridgeProcess
from tests.support import BOT, SIGNATURE, bot_notice_about, eventually, ghost_of

COMPLIANCE = "@compliance:localhost"
EMPLOYEE = "@employee:localhost"
SENIOR = "@senior:localhost"

LEXICONS = {
    "promises": {
        "direction": "outbound",
        "action": "hold",
        "terms": ["guarantee* NEAR/3 return*"],
        "exclude": ["no guarantee*", "not guarantee*", "cannot guarantee*"],
    },
    "complaints": {"direction": "inbound", "terms": ["file a complaint"]},
}


class ReviewBridge(BridgeProcess):
    def query(self, sql: str, *args: Any) -> list[tuple]:
        with sqlite3.connect(self.db_path) as db:
            return db.execute(sql, args).fetchall()

    async def review_room(self, key: str = "review") -> str:
        async def stored() -> str | None:
            found = self.query("SELECT room_id FROM bridge_room WHERE name LIKE ?", key)
            return found[0][0] if found else None

        return await eventually(stored, f"the review room {key}")

    async def audited(self, action: str, count: int) -> list[tuple]:
        async def enough() -> list[tuple] | None:
            rows = self.query(
                "SELECT actor, subject, verdict, details FROM audit WHERE action=? ORDER BY seq", action
            )
            return rows if len(rows) >= count else None

        return await eventually(enough, f"{count} audit entries {action}")


def supervised(change: Callable[[dict], None]) -> Callable[[dict], None]:
    """The test policy without its reminders (none in the review rooms' way), changed by
    ``change``."""

    def apply(rules: dict) -> None:
        rules.pop("sla", None)
        change(rules)

    return apply


def with_lexicons(**extra: Any) -> Callable[[dict], None]:
    def change(rules: dict) -> None:
        rules["supervision"] = {"lexicons": LEXICONS, "close_reasons": ["no_issue", "coached"], **extra}

    return change


async def answer_to(person: Employee, room_id: str, command: str, needle: str) -> str:
    """Types a command in ``room_id`` and returns the bot's answer containing ``needle``."""
    sent = time.time() * 1000
    await person.send_text(room_id, command)
    reply = await person.wait_for_event(
        lambda e: (
            e.room_id == room_id
            and e.sender == BOT
            and e.origin_server_ts >= sent - 1000
            and needle in e.content.get("body", "")
        ),
        30,
        f"the answer to {command!r} containing {needle!r}",
    )
    return reply.content["body"]


def item_notice(person: Employee, room_id: str, item: int) -> Callable[[Any], bool]:
    return lambda e: (
        e.room_id == room_id and e.sender == BOT and e.content.get("body", "").startswith(f"Review #{item} (")
    )


async def test_alerts_both_ways_a_held_message_approved_and_the_queue_across_a_restart(
    own_bridge: BridgeFactory, employee: Employee, staff: dict[str, Employee], new_client
) -> None:
    bridge = await own_bridge(policy=supervised(with_lexicons()), cls=ReviewBridge)
    compliance = staff["compliance"]
    client = new_client("Quinn", "Review")
    await client.say("Hello, I have a question")
    first = await employee.wait_for_message("Hello, I have a question", sender=ghost_of(client))
    portal = first.room_id

    # Inbound alert: the client's complaint opens item 1.
    await client.say("I want to file a complaint about the fees")
    room = await bridge.review_room()
    await compliance.join(room)
    alert = await compliance.wait_for_event(item_notice(compliance, room, 1), 30, "review item 1")
    body = alert.content["body"]
    assert "supervision.lexicons.complaints" in body and "inbound" in body
    assert "file a complaint about the fees" in body and portal in body

    # Outbound hold: the promise of a return stays with the bridge until a reviewer approves.
    held = await employee.send_text(portal, "We guarantee a 12% return on this fund")
    notice = await employee.wait_for_event(bot_notice_about(portal, held), 30, "the hold notice")
    assert "Held for compliance review" in notice.content["body"] and "promises" in notice.content["body"]
    item2 = await compliance.wait_for_event(item_notice(compliance, room, 2), 30, "review item 2")
    assert "held until approved" in item2.content["body"]
    assert room not in employee.invites  # the employee never sees the review room

    # The queue survives a restart.
    assert await bridge.stop() == 0
    bridge = await own_bridge()
    listing = await answer_to(compliance, room, "!hl review", "open review item")
    assert "#1 open" in listing and "#2 open (held)" in listing and listing.index("#1") < listing.index("#2")

    # Bad input gets a clear answer; an item is finished once.
    answer = await answer_to(compliance, room, "!hl review close 1 because", "not a close reason")
    assert "no_issue, coached" in answer
    await answer_to(
        compliance, room, "!hl review close 1 no_issue", "Review #1 closed by @compliance:localhost"
    )
    again = await answer_to(compliance, room, "!hl review close 1 coached", "already closed")
    assert COMPLIANCE in again
    await answer_to(compliance, room, "!hl review approve 1", "already closed")
    # The sender cannot act on their own message.
    await answer_to(employee, portal, "!hl review approve 2", "Nobody reviews their own message")

    # Approved: the message goes to the client, once, signed like any other.
    await answer_to(compliance, room, "!hl review approve 2", "Review #2 approved")
    got = await client.wait_for_text("We guarantee a 12% return on this fund")
    assert got["text"].startswith(SIGNATURE)
    assert sum("12% return" in m.get("text", "") for m in await client.inbox()) == 1
    opened = await bridge.audited("review.open", 2)
    assert [row[2] for row in opened] == ["alert", "hold"]
    [(actor, subject, verdict, _)] = await bridge.audited("review.approve", 1)
    assert (actor, subject, verdict) == (COMPLIANCE, held, "approve")
    await bridge.audited("review.close", 1)


async def test_rejected_by_reaction_and_nobody_reviews_their_own_message(
    own_bridge: BridgeFactory, employee: Employee, staff: dict[str, Employee], new_client
) -> None:
    def reviewers(rules: dict) -> None:
        rules["roles"]["reviewer"] = [EMPLOYEE, COMPLIANCE]
        with_lexicons(reviewer_role="reviewer", supervisor_role="senior")(rules)

    bridge = await own_bridge(policy=supervised(reviewers), cls=ReviewBridge)
    compliance = staff["compliance"]
    client = new_client("Rory", "Review")
    await client.say("Hi there")
    first = await employee.wait_for_message("Hi there", sender=ghost_of(client))
    portal = first.room_id

    # The employee is a reviewer, but their own message goes to a room without them.
    held = await employee.send_text(portal, "I can guarantee you a solid return this year")
    await employee.wait_for_event(bot_notice_about(portal, held), 30, "the hold notice")
    room = await bridge.review_room("review:%")
    name = bridge.query("SELECT name FROM bridge_room WHERE room_id=?", room)[0][0]
    assert name.startswith("review:")
    await compliance.join(room)
    item = await compliance.wait_for_event(item_notice(compliance, room, 1), 30, "review item 1")
    assert room not in employee.invites
    members = await compliance.client.joined_members(room)
    assert EMPLOYEE not in {m.user_id for m in members.members}

    # Rejected with a reaction: the client never receives it, the employee is told why.
    await compliance.send_event(
        room,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": item.event_id, "key": "👎"}},
    )
    rejected = await employee.wait_for_event(
        lambda e: e.room_id == portal and e.sender == BOT and "rejected it" in e.content.get("body", ""),
        30,
        "the rejection in the portal",
    )
    assert rejected.content["m.relates_to"]["m.in_reply_to"]["event_id"] == held
    [(actor, subject, verdict, _)] = await bridge.audited("review.reject", 1)
    assert (actor, subject, verdict) == (COMPLIANCE, held, "reject")
    # Proof of absence: a later message arrives, the rejected one never did.
    await employee.send_text(portal, "Let me check the details for you")
    await client.wait_for_text("Let me check the details for you")
    assert not any("solid return" in m.get("text", "") for m in await client.inbox())


async def test_the_sample_reaches_review_whatever_the_message_says(
    own_bridge: BridgeFactory, employee: Employee, staff: dict[str, Employee], new_client
) -> None:
    def sample_all(rules: dict) -> None:
        rules["supervision"] = {"sample_rate": 1.0}

    bridge = await own_bridge(policy=supervised(sample_all), cls=ReviewBridge)
    client = new_client("Sam", "Sample")
    await client.say("Good morning")
    first = await employee.wait_for_message("Good morning", sender=ghost_of(client))
    await employee.send_text(first.room_id, "Good morning to you")
    await client.wait_for_text("Good morning to you")  # sampled, not held
    room = await bridge.review_room()
    compliance = staff["compliance"]
    await compliance.join(room)
    # One item per message, each direction once (their numbers follow whichever came first).
    notices = [
        (await compliance.wait_for_event(item_notice(compliance, room, n), 30, f"review item {n}")).content[
            "body"
        ]
        for n in (1, 2)
    ]
    assert all("supervision.sample_rate" in body for body in notices)
    assert sorted("inbound" in body for body in notices) == [False, True]
    assert any("Good morning to you" in body for body in notices)
