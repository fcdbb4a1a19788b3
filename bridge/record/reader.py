"""Reading portals back from the homeserver, as the bot, through the client-server API.

Only the standard API is used (``/messages``, ``/state``, media download), so exports work
against any homeserver. Events come back exactly as the homeserver serves them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import quote

import aiohttp

from bridge.record.model import ExportEvent, ExportRoom, MediaFile

log = logging.getLogger("houseline.record")

PAGE = 500


class ReadError(Exception):
    """The homeserver refused or failed a read; the message says which and why."""


@dataclass
class HomeserverReader:
    base_url: str
    access_token: str
    #: The bot's user id (appservice tokens act as the bot with ?user_id=).
    user_id: str
    verify_tls: bool = True

    def __post_init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HomeserverReader:
        connector = aiohttp.TCPConnector(ssl=None if self.verify_tls else False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"Authorization": f"Bearer {self.access_token}"},
            timeout=aiohttp.ClientTimeout(total=120),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        assert self._session is not None
        query = {"user_id": self.user_id, **(params or {})}
        async with self._session.get(f"{self.base_url}{path}", params=query) as resp:
            if resp.status != 200:
                body = await resp.text()
                raise ReadError(f"GET {path.split('?')[0]} answered {resp.status}: {body[:200]}")
            return await resp.json()

    async def _get_bytes(self, path: str) -> bytes:
        assert self._session is not None
        async with self._session.get(f"{self.base_url}{path}", params={"user_id": self.user_id}) as resp:
            if resp.status != 200:
                raise ReadError(f"media {path} answered {resp.status}")
            return await resp.read()

    async def events(self, room_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every event of the room, oldest first (paginating forwards from the start)."""
        token: str | None = None
        room = quote(room_id, safe="")
        while True:
            params: dict[str, Any] = {"dir": "f", "limit": PAGE}
            if token:
                params["from"] = token
            page = await self._get(f"/_matrix/client/v3/rooms/{room}/messages", params)
            for event in page.get("chunk", []):
                yield event
            token = page.get("end")
            if not token or not page.get("chunk"):
                return

    async def events_since(
        self, room_id: str, since_ms: int, slack_ms: int = 7 * 86_400_000
    ) -> list[dict[str, Any]]:
        """The room's events from ``since_ms`` on, oldest first, read backwards from the newest
        so a report on last week does not read a conversation's whole history. A client message
        carries the time the client sent it, which after an outage is earlier than events posted
        before it: reading goes on until events are ``slack_ms`` older than ``since_ms``."""
        token: str | None = None
        room = quote(room_id, safe="")
        newest_first: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"dir": "b", "limit": PAGE}
            if token:
                params["from"] = token
            page = await self._get(f"/_matrix/client/v3/rooms/{room}/messages", params)
            chunk = page.get("chunk", [])
            newest_first += [e for e in chunk if e.get("origin_server_ts", 0) >= since_ms]
            token = page.get("end")
            if (
                not token
                or not chunk
                or any(e.get("origin_server_ts", 0) < since_ms - slack_ms for e in chunk)
            ):
                return newest_first[::-1]

    async def state(self, room_id: str) -> list[dict[str, Any]]:
        return await self._get(f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/state")

    async def media(self, mxc: str) -> bytes:
        server, _, media_id = mxc.removeprefix("mxc://").partition("/")
        return await self._get_bytes(f"/_matrix/client/v1/media/download/{quote(server)}/{quote(media_id)}")

    async def room(
        self,
        *,
        room_id: str,
        name: str,
        network: str,
        account: str,
        chat_id: str,
        is_client,
        bot: str,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> ExportRoom:
        """The portal as an ExportRoom: its events in the time window, participants, and media."""
        state = await self.state(room_id)
        participants = {
            e["state_key"]: (e.get("content") or {}).get("displayname") or e["state_key"]
            for e in state
            if e.get("type") == "m.room.member"
        }
        events: list[ExportEvent] = []
        media: dict[str, MediaFile] = {}
        async for event in self.events(room_id):
            ts = event.get("origin_server_ts", 0)
            if (since_ms is not None and ts < since_ms) or (until_ms is not None and ts >= until_ms):
                continue
            events.append(ExportEvent(event))
            if event.get("type") == "m.room.member":
                participants.setdefault(
                    event.get("state_key", ""),
                    (event.get("content") or {}).get("displayname") or event.get("state_key", ""),
                )
            content = event.get("content") or {}
            url = content.get("url")
            if isinstance(url, str) and url.startswith("mxc://") and url not in media:
                try:
                    data = await self.media(url)
                except ReadError as e:
                    log.warning(
                        "event=export_media_missing room=%s event_id=%s error=%s",
                        room_id,
                        event.get("event_id"),
                        e,
                    )
                    continue
                info = content.get("info") or {}
                media[url] = MediaFile(
                    mxc=url,
                    file_name=content.get("filename") or content.get("body") or "file",
                    mimetype=info.get("mimetype") or "application/octet-stream",
                    data=data,
                )
        clients = frozenset(u for u in participants if is_client(u))
        return ExportRoom(
            room_id=room_id,
            name=name,
            network=network,
            account=account,
            chat_id=chat_id,
            participants=participants,
            clients=clients,
            bot=bot,
            events=tuple(events),
            media=media,
        )
