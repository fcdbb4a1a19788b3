"""Telegram Business and chat status, end to end: a company account's chats are portals, what
the owner types in the Telegram app is captured, the 24-hour window and disconnection are
explained in the room, and a client blocking the company is noticed."""

from __future__ import annotations

import itertools
from typing import Any

from bridge.devstack import DevStack
from sandbox.employee import Employee
from tests.conftest import BridgeProcess
from tests.support import SIGNATURE, bot_notice_about, bot_notice_in, control, eventually, ghost

_owner_ids = itertools.count(8_100_000_001)


async def test_business_account_conversation_is_captured_both_ways(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    owner_id = next(_owner_ids)
    conn = await control(
        stack,
        "POST",
        "/business/connect",
        {"owner_id": owner_id, "owner_first_name": "Olga", "owner_last_name": "Owner"},
    )
    biz = f"/business/{conn['id']}"
    client = new_client("Biz", "Client")
    sent = await control(
        stack,
        "POST",
        f"{biz}/clients/{client.user_id}/messages",
        {"text": "Hi Olga, about my account", "first_name": "Biz", "last_name": "Client"},
    )
    first = await employee.wait_for_message("Hi Olga, about my account", sender=ghost(client.user_id))
    room = first.room_id

    # The owner answers from the Telegram app on their phone: it lands in the same portal, as the company's.
    await control(
        stack, "POST", f"{biz}/owner/messages", {"chat_id": client.user_id, "text": "Typed on my phone"}
    )
    from_app = await employee.wait_for_message("Typed on my phone", room)
    assert from_app.sender == ghost(owner_id)
    assert from_app.content["net.houseline.remote"]["sent_by_account"] is True
    state = await employee.client.room_get_state_event(room, "m.room.member", ghost(owner_id))
    assert state.content["displayname"] == "Olga Owner (Telegram, company account)"

    # An employee answers through the business account.
    await employee.send_text(room, "Answer from the desk")

    async def client_view() -> list[dict[str, Any]]:
        return (await control(stack, "GET", f"{biz}/clients/{client.user_id}/messages"))["messages"]

    async def wait_view(predicate, what: str) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            return next((m for m in await client_view() if predicate(m)), None)

        return await eventually(found, what)

    answer = await wait_view(lambda m: "Answer from the desk" in m.get("text", ""), "the desk's answer")
    assert answer["text"] == f"{SIGNATURE}\nAnswer from the desk"

    # The employee reads the client's message: the client sees it read.
    await employee.client.room_read_markers(room, first.event_id, first.event_id)
    await wait_view(
        lambda m: m["message_id"] == sent["message_id"] and m.get("read_by_business"), "the read mark"
    )

    # The client edits, then deletes: an edit event, then an annotation; the original stays.
    await control(
        stack,
        "POST",
        f"{biz}/clients/{client.user_id}/messages/{sent['message_id']}/edit",
        {"text": "Hi Olga, about my accounts"},
    )
    edit = await employee.wait_for_event(
        lambda e: e.room_id == room and e.content.get("m.relates_to", {}).get("rel_type") == "m.replace",
        30,
        "the edit",
    )
    assert edit.content["m.new_content"]["body"] == "Hi Olga, about my accounts"
    await control(stack, "POST", f"{biz}/clients/{client.user_id}/messages/{sent['message_id']}/delete", {})
    deleted = await employee.wait_for_event(
        bot_notice_in(room, "deleted this message on Telegram"), 30, "the deletion annotation"
    )
    assert deleted.content["m.relates_to"]["m.in_reply_to"]["event_id"] == first.event_id
    original = await employee.client.room_get_event(room, first.event_id)
    assert original.event.source["content"]["body"] == "Hi Olga, about my account"

    # The owner disconnects the bot: the portal says so, and answers are refused with a reason.
    await control(stack, "POST", f"{biz}/disconnect", {})
    await employee.wait_for_event(
        bot_notice_in(room, "was disconnected from Houseline"), 30, "the disconnection notice"
    )
    refused = await employee.send_text(room, "are you there?")
    notice = await employee.wait_for_event(bot_notice_about(room, refused), 30, "the refusal")
    assert "disconnected" in notice.content["body"]
    await control(stack, "POST", "/business/connect", {"owner_id": owner_id})
    await employee.wait_for_event(bot_notice_in(room, "is connected again"), 30, "the reconnection notice")


async def test_client_blocking_the_company_is_noticed(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    client = new_client("Blo", "Cker")
    await client.say("hello")
    room = (await employee.wait_for_message("hello", sender=ghost(client.user_id))).room_id
    await client.block()
    await employee.wait_for_event(
        bot_notice_in(room, "blocked the company on Telegram"), 30, "the block notice"
    )
    await client.unblock()
    await employee.wait_for_event(
        bot_notice_in(room, "unblocked the company on Telegram"), 30, "the unblock notice"
    )
    await employee.send_text(room, "welcome back")
    await client.wait_for_text("welcome back")


async def test_business_window_closed_is_explained(
    stack: DevStack, bridge: BridgeProcess, employee: Employee, new_client
) -> None:
    """Runs last in this file: it moves the sandbox's clock a day forward (time never goes back)."""
    owner_id = next(_owner_ids)
    conn = await control(
        stack, "POST", "/business/connect", {"owner_id": owner_id, "owner_first_name": "Wanda"}
    )
    client = new_client("Window", "Client")
    await control(
        stack,
        "POST",
        f"/business/{conn['id']}/clients/{client.user_id}/messages",
        {"text": "quick question", "first_name": "Window"},
    )
    question = await employee.wait_for_message("quick question", sender=ghost(client.user_id))
    await control(stack, "POST", "/sandbox/clock", {"advance_seconds": 25 * 3600})
    attempt = await employee.send_text(question.room_id, "sorry for the late answer")
    notice = await employee.wait_for_event(
        bot_notice_about(question.room_id, attempt), 30, "the window notice"
    )
    assert "within 24 hours" in notice.content["body"]
