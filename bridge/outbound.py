"""Outbound: an employee's message in a portal goes to the client, signed for the company.

Events of one room are handled in order; rooms are handled side by side. A failed send is
retried while the failure is temporary and otherwise reported in the room as a notice that
replies to the message, so an employee never believes a client got what it did not.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from dataclasses import dataclass

from mautrix.appservice import AppService
from mautrix.types import Event, EventType, MessageEvent, MessageType, RelationType, TextMessageEventContent

from bridge.config import PortalsConfig
from bridge.events import ChatRef, Delivery
from bridge.networks.base import Connector, DeliveryError
from bridge.portals import Portals
from bridge.store import MessageLink, PortalRow, Store
from puppets.ghosts import Ghosts

log = logging.getLogger("houseline.outbound")

_TEXT_TYPES = (MessageType.TEXT, MessageType.NOTICE, MessageType.EMOTE)
_MSGTYPE_WORDS = {
    MessageType.IMAGE: "Images",
    MessageType.FILE: "Files",
    MessageType.VIDEO: "Videos",
    MessageType.AUDIO: "Audio messages",
    MessageType.LOCATION: "Locations",
}
_EVENT_WORDS = {
    EventType.STICKER: "Stickers",
    EventType.REACTION: "Reactions",
    EventType.ROOM_REDACTION: "Deletions",
}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_backoff: float = 1.0
    max_backoff: float = 20.0


class Outbound:
    def __init__(
        self,
        *,
        az: AppService,
        store: Store,
        portals: Portals,
        ghosts: Ghosts,
        connectors: dict[str, Connector],
        portal_config: PortalsConfig,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.az = az
        self.store = store
        self.portals = portals
        self.ghosts = ghosts
        self.connectors = connectors
        self.portal_config = portal_config
        self.retry = retry
        self._room_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def handle_events(self, events: list[Event]) -> None:
        """Entry point for one appservice transaction."""
        by_room: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            room_id = getattr(event, "room_id", None)
            if room_id:
                by_room[room_id].append(event)
        await asyncio.gather(*(self._handle_room(room, evs) for room, evs in by_room.items()))

    async def _handle_room(self, room_id: str, events: list[Event]) -> None:
        async with self._room_locks[room_id]:
            for event in events:
                await self.handle_event(event)

    def _is_ours(self, user_id: str) -> bool:
        return user_id == self.az.bot_mxid or self.ghosts.is_ghost(user_id)

    async def handle_event(self, event: Event) -> None:
        if self._is_ours(event.sender):
            return
        if event.type.is_state or event.type in (EventType.RECEIPT, EventType.TYPING):
            return
        portal = await self.portals.by_room(event.room_id)
        if portal is None:
            return
        if await self.store.get_messages_by_event(event.event_id):
            log.info("event=outbound_duplicate room=%s event_id=%s", event.room_id, event.event_id)
            return
        if event.type != EventType.ROOM_MESSAGE:
            words = _EVENT_WORDS.get(event.type)
            if words is not None:
                await self._notice(portal, event, f"{words} are not sent to the client yet; the client did not see this.")
            return
        assert isinstance(event, MessageEvent)
        content = event.content
        relates = getattr(content, "relates_to", None)
        if relates is not None and relates.rel_type == RelationType.REPLACE:
            await self._notice(portal, event, "Edits are not sent to the client yet; the client still sees the first version.")
            return
        if content.msgtype not in _TEXT_TYPES:
            words = _MSGTYPE_WORDS.get(content.msgtype, "This kind of message")
            verb = "is" if words == "This kind of message" else "are"
            await self._notice(portal, event, f"{words} {verb} not sent to the client yet; the client did not see this.")
            return
        await self._deliver(portal, event, content)

    async def _deliver(self, portal: PortalRow, event: MessageEvent, content: TextMessageEventContent) -> None:
        connector = self.connectors.get(portal.network)
        if connector is None:
            await self._notice(portal, event, f"Not delivered: the {portal.network} connection is not enabled in this bridge.")
            return
        displayname = await self._displayname(event.room_id, event.sender)
        body = content.body or ""
        if content.msgtype == MessageType.EMOTE:
            body = f"* {displayname} {body}"
        delivery = Delivery(
            chat=ChatRef(portal.network, portal.account, portal.chat_id),
            room_id=event.room_id,
            event_id=event.event_id,
            signature=self._signature(event.sender, displayname),
            body=body,
        )
        backoff = self.retry.first_backoff
        for attempt in range(1, self.retry.attempts + 1):
            try:
                receipt = await connector.send(delivery)
                break
            except DeliveryError as e:
                if e.permanent or attempt == self.retry.attempts:
                    log.warning(
                        "event=outbound_failed room=%s event_id=%s network=%s attempts=%d permanent=%s reason=%r",
                        event.room_id, event.event_id, portal.network, attempt, e.permanent, e.reason,
                    )
                    await self._notice(portal, event, f"Not delivered to the client: {e.reason}.")
                    return
                wait = e.retry_after if e.retry_after is not None else backoff + random.random() * 0.2
                log.info("event=outbound_retry room=%s event_id=%s attempt=%d wait=%.1fs", event.room_id, event.event_id, attempt, wait)
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, self.retry.max_backoff)
        for remote_id in receipt.message_ids:
            await self.store.add_message(
                MessageLink(portal.network, portal.account, portal.chat_id, remote_id, event.room_id, event.event_id, "out")
            )
        log.info(
            "event=outbound_delivered room=%s event_id=%s network=%s chat=%s remote_ids=%s",
            event.room_id, event.event_id, portal.network, portal.chat_id, ",".join(receipt.message_ids),
        )

    def _signature(self, user_id: str, displayname: str) -> str:
        template = self.portal_config.signature
        if not template:
            return ""
        return template.format(
            displayname=displayname,
            company=self.portal_config.company,
            localpart=user_id[1:].split(":", 1)[0],
            user_id=user_id,
        )

    async def _displayname(self, room_id: str, user_id: str) -> str:
        member = await self.az.state_store.get_member(room_id, user_id)
        if member is not None and member.displayname:
            return member.displayname
        try:
            info = await self.az.intent.get_room_member_info(room_id, user_id)
            if info is not None and info.displayname:
                return info.displayname
        except Exception as e:  # a missing profile must not stop the message
            log.debug("event=displayname_lookup_failed user=%s error=%s", user_id, type(e).__name__)
        return user_id[1:].split(":", 1)[0]

    async def _notice(self, portal: PortalRow, event: Event, text: str) -> None:
        content = TextMessageEventContent(msgtype=MessageType.NOTICE, body=text)
        content.set_reply(event.event_id)
        await self.az.intent.send_message_event(
            portal.room_id, EventType.ROOM_MESSAGE, content, txn_id=f"hl.notice.{event.event_id}"
        )
        log.info("event=notice_posted room=%s about=%s", portal.room_id, event.event_id)
