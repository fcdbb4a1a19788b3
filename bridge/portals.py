"""Portals: one company-owned Matrix room per client conversation.

The bot creates and owns every portal; the room's power levels keep history in the company's
hands (see appservice.rooms). A per-chat lock makes "first contact" create exactly one room even
when several of the client's first messages are handled at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from mautrix.appservice import IntentAPI
from mautrix.types import RoomCreatePreset, UserID

from appservice.rooms import bridge_state_event, portal_power_levels
from bridge.events import ChatRef
from bridge.store import PortalRow, Store

log = logging.getLogger("houseline.portals")


@dataclass(frozen=True)
class Assigned:
    """Who a new portal goes to: everyone invited (observers included), the employee who looks
    after it (None: nobody available), and a note for the room and the audit trail when the
    usual rule could not be followed (``tell_observers``: nobody the rule named was there)."""

    invite: tuple[str, ...]
    assignee: str | None
    note: str = ""
    tell_observers: bool = False


#: Who to invite to a new portal (the assignment policy decides); the second argument is the
#: employee who asked for the conversation (an outreach), if any.
Assign = Callable[[ChatRef, str | None], Awaitable[Assigned]]


class Portals:
    def __init__(
        self,
        store: Store,
        bot: IntentAPI,
        assign: Assign,
        *,
        initial_state: Callable[[], list[dict[str, Any]]] = list,
        on_created: Callable[[PortalRow, Assigned], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.bot = bot
        self.assign = assign
        self.initial_state = initial_state
        self.on_created = on_created
        self._by_chat: dict[ChatRef, PortalRow] = {}
        self._by_room: dict[str, PortalRow | None] = {}
        self._locks: dict[ChatRef, asyncio.Lock] = {}

    async def get(self, chat: ChatRef) -> PortalRow | None:
        row = self._by_chat.get(chat)
        if row is None:
            row = await self.store.get_portal(chat)
            if row is not None:
                self._remember(row)
        return row

    async def by_room(self, room_id: str) -> PortalRow | None:
        if room_id not in self._by_room:
            row = await self.store.get_portal_by_room(room_id)
            if row is None:
                return None
            self._remember(row)
        return self._by_room[room_id]

    async def set_status(self, portal: PortalRow, status: str) -> PortalRow:
        await self.store.set_portal_status(portal.room_id, status)
        row = replace(portal, status=status)
        self._remember(row)
        return row

    async def move(self, portal: PortalRow, new_chat_id: str) -> PortalRow:
        """Keep the room when the network renumbers the chat (group → supergroup)."""
        await self.store.move_portal(portal.room_id, new_chat_id)
        self._by_chat.pop(portal.chat, None)
        row = replace(portal, chat_id=new_chat_id)
        self._remember(row)
        return row

    def forget(self, room_id: str) -> None:
        """Drop the cached row after a change made straight in the store."""
        row = self._by_room.pop(room_id, None)
        if row is not None:
            self._by_chat.pop(row.chat, None)

    def _remember(self, row: PortalRow) -> None:
        self._by_chat[row.chat] = row
        self._by_room[row.room_id] = row

    async def get_or_create(
        self,
        chat: ChatRef,
        *,
        name: str,
        network_name: str,
        ghost: UserID,
        requested: str | None = None,
        initiated_at: int | None = None,
    ) -> tuple[PortalRow, bool]:
        """The chat's portal, created on first contact. Returns (portal, created).

        ``requested``: the employee who started the conversation (an outreach); with
        ``initiated_at`` the portal records who started it and when."""
        row = await self.get(chat)
        if row is not None:
            return row, False
        lock = self._locks.setdefault(chat, asyncio.Lock())
        async with lock:
            row = await self.get(chat)
            if row is not None:
                return row, False
            assigned = await self.assign(chat, requested)
            invite = assigned.invite
            room_id = await self.bot.create_room(
                name=name,
                preset=RoomCreatePreset.PRIVATE,
                invitees=[UserID(u) for u in invite] + [ghost],
                initial_state=[
                    *self.initial_state(),
                    bridge_state_event(
                        bot_mxid=self.bot.mxid,
                        network=chat.network,
                        network_name=network_name,
                        account=chat.account,
                        chat_id=chat.chat_id,
                        chat_name=name,
                    ),
                    {
                        "type": "m.room.history_visibility",
                        "state_key": "",
                        "content": {"history_visibility": "shared"},
                    },
                    {
                        "type": "m.room.guest_access",
                        "state_key": "",
                        "content": {"guest_access": "forbidden"},
                    },
                ],
                power_level_override=portal_power_levels(),
            )
            row = PortalRow(
                chat.network,
                chat.account,
                chat.chat_id,
                str(room_id),
                name,
                assignee=assigned.assignee,
                initiated_by=requested if initiated_at is not None else None,
                initiated_at=initiated_at,
            )
            await self.store.add_portal(row)
            self._remember(row)
            log.info(
                "event=portal_created network=%s account=%s chat=%s room=%s invited=%d",
                chat.network,
                chat.account,
                chat.chat_id,
                room_id,
                len(invite),
            )
            if self.on_created is not None:
                await self.on_created(row, assigned)
            return row, True
