"""The "Houseline status" room: where the bridge tells the compliance observers about its own
health (a webhook receiver failing, capture stopping), outside any client conversation.

The bot creates it once, invites the observers and remembers its id in ``bridge_room``, so it
survives restarts and every part that reports (webhooks, metrics and capture health) posts to
the same room. Observers named later (a policy reload) are invited when the next notice goes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import EventType, Membership, RoomCreatePreset, RoomID, UserID

from bridge import matrix_content as mc
from bridge.store import Store

log = logging.getLogger("houseline.status")

ROOM_KEY = "status"
ROOM_NAME = "Houseline status"
ROOM_TOPIC = "Problems with the bridge's own health and integrations, for the compliance observers."


class StatusRoom:
    """A room of the bridge's own (not a client conversation) that the bot posts notices to:
    the status room, and the review rooms (bridge.review) with their own key, name and members."""

    def __init__(
        self,
        store: Store,
        bot: IntentAPI,
        observers: Callable[[], tuple[str, ...]],
        *,
        key: str = ROOM_KEY,
        name: str = ROOM_NAME,
        topic: str = ROOM_TOPIC,
        mention: bool = True,
    ) -> None:
        self.store = store
        self.bot = bot
        #: Read at each notice: the policy may have been reloaded since.
        self.observers = observers
        self.key, self.name, self.topic = key, name, topic
        #: Each notice mentions the members (the status room's problems must reach them).
        self.mention = mention
        self._lock = asyncio.Lock()
        self._room_id: str | None = None

    async def room_id(self) -> str:
        """The room, created on first use (one creation even when several parts report at once)."""
        async with self._lock:
            if self._room_id is None:
                self._room_id = await self._stored() or await self._create()
            return self._room_id

    async def post(self, text: str) -> str:
        """A notice mentioning the observers (so it reaches them wherever they read); returns
        its event id."""
        room_id = await self.room_id()
        observers = self.observers()
        await self._invite_missing(room_id, observers)
        content = mc.notice(text)
        if observers and self.mention:
            content["m.mentions"] = {"user_ids": list(observers)}
            content["body"] += " (" + ", ".join(observers) + ")"
        event_id = await self.bot.send_message_event(RoomID(room_id), EventType.ROOM_MESSAGE, content)
        log.info("event=status_notice room=%s event_id=%s", room_id, event_id)
        return str(event_id)

    async def _stored(self) -> str | None:
        return await self.store.db.fetchval("SELECT room_id FROM bridge_room WHERE name=$1", self.key)

    async def _create(self) -> str:
        room_id = await self.bot.create_room(
            name=self.name,
            topic=self.topic,
            preset=RoomCreatePreset.PRIVATE,
            invitees=[UserID(u) for u in self.observers()],
        )
        await self.store.db.execute(
            "INSERT INTO bridge_room (name, room_id) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET room_id=excluded.room_id",
            self.key,
            str(room_id),
        )
        log.info(
            "event=bridge_room_created key=%s room=%s invited=%d", self.key, room_id, len(self.observers())
        )
        return str(room_id)

    async def _invite_missing(self, room_id: str, observers: tuple[str, ...]) -> None:
        if not observers:
            return
        try:
            present = set(
                await self.bot.get_room_members(RoomID(room_id), (Membership.JOIN, Membership.INVITE))
            )
        except MatrixRequestError as e:
            log.warning("event=status_room_members_failed room=%s error=%s", room_id, e.errcode)
            return
        for user in observers:
            if user in present:
                continue
            try:
                await self.bot.invite_user(RoomID(room_id), UserID(user))
            except MatrixRequestError as e:
                # Banned, or unknown to the homeserver: the notice still goes to the others.
                log.warning(
                    "event=status_room_invite_failed room=%s user=%s error=%s", room_id, user, e.errcode
                )
