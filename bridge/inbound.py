"""Inbound: a client's message becomes an event in the company's portal room.

Order of work matters for the record: dedupe first (a redelivered update never posts twice),
then portal and ghost, then the send with a transaction id derived from the remote ids (a retry
after a crash is deduplicated by the homeserver too), and the message map last. The connector
confirms the update to its network only after :meth:`Inbound.handle` returned.
"""

from __future__ import annotations

import logging
import re

from mautrix.types import EventType, MessageType, TextMessageEventContent

from bridge.events import RemoteEvent, RemoteEventKind
from bridge.portals import Portals
from bridge.store import MessageLink, Store
from puppets.ghosts import Ghosts

log = logging.getLogger("houseline.inbound")

#: Where the remote ids travel inside the Matrix event, for exports and reconciliation.
REMOTE_KEY = "net.houseline.remote"


def txn_id_for(event: RemoteEvent) -> str:
    """Deterministic: the same remote message always maps to the same transaction id."""
    raw = f"hl.{event.chat.network}.{event.chat.account}.{event.chat.chat_id}.{event.message_id}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


class Inbound:
    def __init__(self, store: Store, portals: Portals, ghosts: Ghosts, network_names: dict[str, str]) -> None:
        self.store = store
        self.portals = portals
        self.ghosts = ghosts
        self.network_names = network_names

    async def handle(self, event: RemoteEvent) -> None:
        chat = event.chat
        if await self.store.get_message(chat.network, chat.account, chat.chat_id, event.message_id):
            log.info("event=inbound_duplicate network=%s chat=%s message_id=%s", chat.network, chat.chat_id, event.message_id)
            return
        network_name = self.network_names.get(chat.network, chat.network)
        ghost_name = f"{event.sender.display_name} ({network_name})"
        ghost = await self.ghosts.ensure(event.sender.network, event.sender.id, ghost_name)
        portal, _ = await self.portals.get_or_create(
            chat,
            name=f"{event.chat_title or event.sender.display_name} ({network_name})",
            network_name=network_name,
            ghost=ghost.mxid,
        )
        await ghost.ensure_joined(portal.room_id)

        content = self._content(event, ghost_name)
        content[REMOTE_KEY] = {
            "network": chat.network,
            "account": chat.account,
            "chat_id": chat.chat_id,
            "message_id": event.message_id,
            "sender_id": event.sender.id,
        }
        event_id = await ghost.send_message_event(
            portal.room_id, EventType.ROOM_MESSAGE, content, txn_id=txn_id_for(event), timestamp=event.timestamp_ms
        )
        await self.store.add_message(
            MessageLink(chat.network, chat.account, chat.chat_id, event.message_id, portal.room_id, event_id, "in")
        )
        log.info(
            "event=inbound_bridged network=%s chat=%s message_id=%s room=%s event_id=%s kind=%s",
            chat.network, chat.chat_id, event.message_id, portal.room_id, event_id, event.kind.value,
        )

    @staticmethod
    def _content(event: RemoteEvent, ghost_name: str) -> TextMessageEventContent:
        if event.kind is RemoteEventKind.MESSAGE:
            return TextMessageEventContent(msgtype=MessageType.TEXT, body=event.text)
        # Not carried yet: the room still records that it happened, and any text it had.
        body = f"{ghost_name} sent {event.description}, which Houseline cannot show here yet."
        if event.text:
            body += f" Its text: {event.text}"
        return TextMessageEventContent(msgtype=MessageType.NOTICE, body=body)
