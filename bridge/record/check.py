"""``houseline record check``: does the bridge's message map agree with the rooms' history?

Both directions: everything the map says was bridged must be in the room (nothing lost from the
record), every client message in the room must be in the map (nothing posted twice or outside
the bridge's knowledge), and every employee message must have been delivered or answered by the
bot (refused, held or failed) — never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.matrix_content import REMOTE_KEY
from bridge.record.reader import HomeserverReader
from bridge.store import PortalRow, Store


@dataclass
class RoomCheck:
    portal: PortalRow
    events: int = 0
    problems: list[str] = field(default_factory=list)


async def check_room(
    reader: HomeserverReader,
    store: Store,
    portal: PortalRow,
    *,
    bot: str,
    is_ghost,
    command_prefix: str = "!hl",
) -> RoomCheck:
    result = RoomCheck(portal)
    links = await store.messages_of_room(portal.room_id)
    mapped_events = {link.event_id for link in links}
    mapped_remote = {(link.network, link.account, link.chat_id, link.remote_id) for link in links}
    seen: set[str] = set()
    answered: set[str] = set()
    employee_messages: list[dict] = []
    async for event in reader.events(portal.room_id):
        result.events += 1
        event_id = event.get("event_id", "")
        seen.add(event_id)
        content = event.get("content") or {}
        sender = event.get("sender", "")
        remote = content.get(REMOTE_KEY)
        if isinstance(remote, dict) and event.get("type") == "m.room.message":
            key = (
                remote.get("network"),
                remote.get("account"),
                remote.get("chat_id"),
                remote.get("message_id"),
            )
            if key not in mapped_remote:
                result.problems.append(
                    f"{event_id}: carries remote message {remote.get('message_id')} but the message map does not know it"
                )
        reply = ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")
        if sender == bot and reply:
            answered.add(reply)
        is_edit = (content.get("m.relates_to") or {}).get("rel_type") == "m.replace"
        is_command = str(content.get("body", "")).startswith(command_prefix)
        if (
            event.get("type") == "m.room.message"
            and sender != bot
            and not is_ghost(sender)
            and not is_edit
            and not is_command
        ):
            employee_messages.append(event)
    for link in links:
        if link.event_id not in seen:
            result.problems.append(
                f"{link.event_id}: in the message map ({link.direction}, remote {link.remote_id}) but missing from the room"
            )
    for event in employee_messages:
        if event["event_id"] not in mapped_events and event["event_id"] not in answered:
            result.problems.append(
                f"{event['event_id']}: an employee's message neither delivered nor answered by the bot"
            )
    return result
