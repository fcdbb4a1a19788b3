"""A scripted employee on a real Matrix client (matrix-nio), for the demo and the tests.

A background sync loop records invites and timeline events; callers wait on conditions with
timeouts instead of sleeping, so a test fails with a clear message rather than hanging.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
from nio import AsyncClient, SyncResponse


@dataclass
class SeenEvent:
    room_id: str
    event_id: str
    sender: str
    type: str
    content: dict[str, Any]
    origin_server_ts: int


@dataclass
class Employee:
    homeserver_url: str
    user_id: str
    access_token: str = field(repr=False)
    device_id: str
    #: Join every invite as it arrives, as an employee who answers new clients would.
    auto_join: bool = False
    #: TLS settings for a homeserver with a self-signed certificate (LocalHomeserver.client_ssl).
    ssl: Any = field(default=None, repr=False)
    invites: dict[str, float] = field(default_factory=dict)
    events: list[SeenEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = AsyncClient(self.homeserver_url, self.user_id, ssl=self.ssl)
        self.client.access_token = self.access_token
        self.client.user_id = self.user_id
        self.client.device_id = self.device_id
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._next_batch: str | None = None
        self.sync_errors = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._sync_forever(), name=f"sync-{self.user_id}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.client.close()

    async def _sync_forever(self) -> None:
        while True:
            try:
                resp = await self.client.sync(
                    timeout=1000, since=self._next_batch, full_state=self._next_batch is None
                )
            except (OSError, asyncio.TimeoutError, aiohttp.ClientError):
                # The homeserver restarting (a fault test does that): try again shortly.
                self.sync_errors += 1
                await asyncio.sleep(0.5)
                continue
            if not isinstance(resp, SyncResponse):
                self.sync_errors += 1
                await asyncio.sleep(0.5)
                continue
            self._next_batch = resp.next_batch
            new_invites = [r for r in resp.rooms.invite if r not in self.invites]
            if self.auto_join:
                for room_id in new_invites:
                    await self.client.join(room_id)
            async with self._changed:
                for room_id in new_invites:
                    self.invites[room_id] = time.time()
                for room_id, info in resp.rooms.join.items():
                    for ev in info.timeline.events:
                        src = ev.source
                        self.events.append(
                            SeenEvent(
                                room_id=room_id,
                                event_id=src.get("event_id", ""),
                                sender=src.get("sender", ""),
                                type=src.get("type", ""),
                                content=src.get("content", {}),
                                origin_server_ts=src.get("origin_server_ts", 0),
                            )
                        )
                self._changed.notify_all()

    async def wait_for(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until ``condition()`` is truthy (checked after each sync); return its value."""

        async def _wait() -> Any:
            async with self._changed:
                while True:
                    value = condition()
                    if value:
                        return value
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(_wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None

    async def wait_for_invite(self, timeout: float = 30, exclude: set[str] = frozenset()) -> str:
        return await self.wait_for(
            lambda: next((r for r in self.invites if r not in exclude), None), timeout, "an invite"
        )

    async def join(self, room_id: str) -> None:
        resp = await self.client.join(room_id)
        if not hasattr(resp, "room_id"):
            raise AssertionError(f"join {room_id} failed: {resp}")

    def messages(
        self,
        room_id: str | None = None,
        *,
        sender: str | None = None,
        msgtype: str | None = None,
        body: str | None = None,
    ) -> list[SeenEvent]:
        return [
            e
            for e in self.events
            if e.type == "m.room.message"
            and (room_id is None or e.room_id == room_id)
            and (sender is None or e.sender == sender)
            and (msgtype is None or e.content.get("msgtype") == msgtype)
            and (body is None or e.content.get("body") == body)
        ]

    async def wait_for_message(
        self, body: str, room_id: str | None = None, *, sender: str | None = None, timeout: float = 30
    ) -> SeenEvent:
        return await self.wait_for(
            lambda: next(iter(self.messages(room_id, sender=sender, body=body)), None),
            timeout,
            f"message {body!r}"
            + (f" in {room_id}" if room_id else "")
            + (f" from {sender}" if sender else ""),
        )

    async def wait_for_event(
        self, predicate: Callable[[SeenEvent], bool], timeout: float, what: str
    ) -> SeenEvent:
        return await self.wait_for(
            lambda: next((e for e in self.events if predicate(e)), None), timeout, what
        )

    async def send_text(self, room_id: str, body: str, *, txn_id: str | None = None, **extra: Any) -> str:
        resp = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body, **extra}, tx_id=txn_id
        )
        event_id = getattr(resp, "event_id", None)
        if not event_id:
            raise AssertionError(f"send to {room_id} failed: {resp}")
        return event_id

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        resp = await self.client.room_send(room_id, event_type, content)
        event_id = getattr(resp, "event_id", None)
        if not event_id:
            raise AssertionError(f"send {event_type} to {room_id} failed: {resp}")
        return event_id
