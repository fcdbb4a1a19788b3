"""Small helpers shared by the end-to-end tests (names, the sandbox's control API, waiting)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import aiohttp

from bridge.devstack import COMPANY, DevStack
from sandbox.employee import Employee

BOT = "@houseline:localhost"
SIGNATURE = f"Erin Employee ({COMPANY})"


def ghost(user_id: int) -> str:
    """The Matrix user that stands for a Telegram user."""
    return f"@telegram_{user_id}:localhost"


def ghost_of(client) -> str:
    return ghost(client.user_id)


async def control(
    stack: DevStack, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A call to the sandbox's control API that must succeed."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.request(method, f"{stack.telegram.url}{path}", json=body) as resp:
            data = await resp.json()
            assert resp.status == 200, (path, resp.status, data)
            return data


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30) -> Any:
    """Poll ``check`` until it returns something truthy, failing with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


def bot_notice_about(room_id: str, event_id: str) -> Callable[[Any], bool]:
    """Matches the bot's notice replying to ``event_id``."""
    return lambda e: (
        e.room_id == room_id
        and e.sender == BOT
        and e.content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == event_id
    )


def bot_notice_in(room_id: str, needle: str) -> Callable[[Any], bool]:
    return lambda e: e.room_id == room_id and e.sender == BOT and needle in e.content.get("body", "")


async def open_dm(person) -> str:
    """A direct chat between ``person`` (a sandbox Employee) and the policy bot; waits until the
    bot has joined it."""
    resp = await person.client.room_create(invite=[BOT], is_direct=True)
    room_id = getattr(resp, "room_id", None)
    assert room_id, resp

    async def bot_joined() -> bool:
        members = await person.client.joined_members(room_id)
        return any(m.user_id == BOT for m in getattr(members, "members", []))

    await eventually(bot_joined, "the bot to join the direct chat")
    return room_id


async def upload(employee: Employee, data: bytes, mime: str, name: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{employee.homeserver_url}/_matrix/media/v3/upload",
            params={"filename": name},
            data=data,
            headers={"Authorization": f"Bearer {employee.access_token}", "Content-Type": mime},
        ) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["content_uri"]


async def download(employee: Employee, mxc: str) -> bytes:
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{employee.homeserver_url}/_matrix/client/v1/media/download/{server}/{media_id}",
            headers={"Authorization": f"Bearer {employee.access_token}"},
        ) as resp:
            assert resp.status == 200
            return await resp.read()


#: The bot's replies already taken by :func:`command`, so the same answer text twice is two replies.
_replies_seen: set[str] = set()


async def command(person: Employee, dm: str, text: str, expect: str) -> str:
    """Sends a bot command in ``dm`` and returns the body of the bot's next reply containing
    ``expect``."""
    await person.send_text(dm, text)
    reply = await person.wait_for_event(
        lambda e: (
            e.room_id == dm
            and e.sender == BOT
            and expect in e.content.get("body", "")
            and e.event_id not in _replies_seen
        ),
        30,
        f"a reply containing {expect!r} to {text!r}",
    )
    _replies_seen.add(reply.event_id)
    return reply.content["body"]
