"""Ghosts: the Matrix users that stand for clients.

A ghost is registered on first use and its display name set only when it changed, so a busy
chat does not cost a profile update per message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from mautrix.appservice import AppService, IntentAPI
from mautrix.types import UserID

from puppets.ids import GhostNamer

log = logging.getLogger("houseline.ghosts")


class GhostProfiles(Protocol):
    """Where the last display name set on each ghost is remembered across restarts."""

    async def get_ghost_displayname(self, user_id: str) -> str | None: ...

    async def put_ghost(self, user_id: str, network: str, remote_id: str, displayname: str) -> None: ...


class Ghosts:
    def __init__(self, az: AppService, namer: GhostNamer, profiles: GhostProfiles) -> None:
        self.az = az
        self.namer = namer
        self.profiles = profiles
        self._known: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def user_id(self, network: str, remote_id: str) -> UserID:
        return UserID(self.namer.user_id(network, remote_id))

    def is_ghost(self, user_id: str) -> bool:
        return self.namer.is_ghost(user_id)

    def intent(self, user_id: str) -> IntentAPI:
        return self.az.intent.user(UserID(user_id))

    async def ensure(self, network: str, remote_id: str, displayname: str) -> IntentAPI:
        """The ghost's intent, registered and carrying ``displayname``."""
        user_id = self.user_id(network, remote_id)
        intent = self.intent(user_id)
        if self._known.get(user_id) == displayname:
            return intent
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            stored = self._known.get(user_id) or await self.profiles.get_ghost_displayname(user_id)
            await intent.ensure_registered()
            if stored != displayname:
                await intent.set_displayname(displayname, check_current=False)
                await self.profiles.put_ghost(user_id, network, remote_id, displayname)
                log.info("event=ghost_profile user=%s network=%s", user_id, network)
            self._known[user_id] = displayname
        return intent
