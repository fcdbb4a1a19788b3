"""Ghosts: the Matrix users that stand for clients.

A ghost is registered on first use, and its display name and avatar are set only when they
changed, so a busy chat does not cost a profile update per message. What was set is remembered
in the store, so a restart does not set every profile again either.

The avatar is the client's profile picture where their network has one (the connector's
``PictureSource``). It is set before the message that brought it is posted, so an employee sees
the face with the words, but it can never hold up or lose that message: the fetch and upload
are bounded by a timeout, and a picture that fails is left for a later message, tried at most
once per :data:`PICTURE_RETRY_S` so a broken picture does not cost every message a download.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

from mautrix.appservice import AppService, IntentAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import UserID

from puppets.ids import GhostNamer

log = logging.getLogger("houseline.ghosts")

#: Fetches a picture by the connector's reference: (bytes, mimetype).
PictureFetch = Callable[[str], Awaitable[tuple[bytes, str]]]

#: The longest a picture (fetch, upload, set) may hold up the message that brought it.
PICTURE_TIMEOUT_S = 15.0
#: After a picture failed, the ghost's next attempt waits at least this long.
PICTURE_RETRY_S = 600.0


class PictureUnavailable(Exception):
    """A picture could not be had; ``reason`` says why in words fit for a log line (no
    address: a picture's URL may carry a token). Connectors raise it from ``fetch_picture``
    (re-exported by bridge.networks.base, next to the other errors a connector raises)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GhostProfiles(Protocol):
    """Where the profile last set on each ghost is remembered across restarts."""

    async def get_ghost_displayname(self, user_id: str) -> str | None: ...

    async def put_ghost(self, user_id: str, network: str, remote_id: str, displayname: str) -> None: ...

    async def get_ghost_picture(self, user_id: str) -> str | None: ...

    async def put_ghost_picture(self, user_id: str, ref: str) -> None: ...


@dataclass
class _Profile:
    """What this process knows a ghost shows (read from the store on first sight)."""

    displayname: str | None
    #: The reference of the picture its avatar shows (None: none set by the bridge).
    picture: str | None
    #: When (bridge clock) a picture last failed for it; None: the last attempt worked.
    picture_failed_at: float | None = None


class Ghosts:
    def __init__(
        self,
        az: AppService,
        namer: GhostNamer,
        profiles: GhostProfiles,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.az = az
        self.namer = namer
        self.profiles = profiles
        self.clock = clock
        self._known: dict[str, _Profile] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def user_id(self, network: str, remote_id: str) -> UserID:
        return UserID(self.namer.user_id(network, remote_id))

    def is_ghost(self, user_id: str) -> bool:
        return self.namer.is_ghost(user_id)

    def intent(self, user_id: str) -> IntentAPI:
        return self.az.intent.user(UserID(user_id))

    async def ensure(
        self,
        network: str,
        remote_id: str,
        displayname: str,
        *,
        picture: str | None = None,
        fetch: PictureFetch | None = None,
    ) -> IntentAPI:
        """The ghost's intent, registered and carrying ``displayname`` and, when the network
        has pictures (``fetch``), the picture ``picture`` names (None: unknown, left as is)."""
        user_id = self.user_id(network, remote_id)
        intent = self.intent(user_id)
        if fetch is None:
            picture = None  # a network without pictures leaves avatars alone
        known = self._known.get(user_id)
        if known is not None and known.displayname == displayname and not self._picture_due(known, picture):
            return intent
        async with self._locks.setdefault(user_id, asyncio.Lock()):
            known = await self._load(user_id)
            await intent.ensure_registered()
            if known.displayname != displayname:
                await intent.set_displayname(displayname, check_current=False)
                await self.profiles.put_ghost(user_id, network, remote_id, displayname)
                known.displayname = displayname
                log.info("event=ghost_profile user=%s network=%s", user_id, network)
            if fetch is not None and picture is not None and self._picture_due(known, picture):
                await self._set_picture(intent, network, known, picture, fetch)
        return intent

    async def _load(self, user_id: str) -> _Profile:
        known = self._known.get(user_id)
        if known is None:
            known = _Profile(
                await self.profiles.get_ghost_displayname(user_id),
                await self.profiles.get_ghost_picture(user_id),
            )
            self._known[user_id] = known
        return known

    def _picture_due(self, known: _Profile, picture: str | None) -> bool:
        """Whether ``picture`` should be set now: it is known, differs from what the avatar
        shows, and no attempt failed in the last PICTURE_RETRY_S."""
        if picture is None or picture == known.picture:
            return False
        failed_at = known.picture_failed_at
        return failed_at is None or self.clock() - failed_at >= PICTURE_RETRY_S

    async def _set_picture(
        self, intent: IntentAPI, network: str, known: _Profile, picture: str, fetch: PictureFetch
    ) -> None:
        """Fetch, upload, set and remember; any failure is one log line and a later retry."""
        user_id = intent.mxid
        try:
            async with asyncio.timeout(PICTURE_TIMEOUT_S):
                data, mimetype = await fetch(picture)
                mxc = await intent.upload_media(data, mime_type=mimetype, filename="avatar")
                await intent.set_avatar_url(mxc, check_current=False)
            await self.profiles.put_ghost_picture(user_id, picture)
        except Exception as e:  # a picture must never cost the message that brought it
            known.picture_failed_at = self.clock()
            log.warning("event=ghost_picture_failed user=%s network=%s error=%r", user_id, network, _why(e))
            return
        known.picture, known.picture_failed_at = picture, None
        log.info("event=ghost_picture user=%s network=%s size=%d", user_id, network, len(data))


def _why(e: Exception) -> str:
    """A failure in words for the log: the connector's reason, or the error's kind (never its
    text, which for an HTTP library names the URL)."""
    if isinstance(e, PictureUnavailable):
        return e.reason
    if isinstance(e, TimeoutError):
        return f"took longer than {PICTURE_TIMEOUT_S:.0f} s"
    if isinstance(e, MatrixRequestError):
        return f"homeserver refused it ({e.errcode or e.http_status})"
    return type(e).__name__
