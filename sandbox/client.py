"""Plays a client on the sandbox Telegram through its control API (what a phone would do)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class SandboxClient:
    sandbox_url: str
    user_id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.request(method, f"{self.sandbox_url}{path}", json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise AssertionError(f"{method} {path} -> {resp.status} {data}")
                return data

    async def say(self, text: str) -> dict[str, Any]:
        """The client writes to the company's bot; returns {"message_id", "chat_id"}."""
        body: dict[str, Any] = {"text": text, "first_name": self.first_name}
        if self.last_name:
            body["last_name"] = self.last_name
        if self.username:
            body["username"] = self.username
        return await self._request("POST", f"/client/{self.user_id}/messages", body)

    async def inbox(self) -> list[dict[str, Any]]:
        return (await self._request("GET", f"/client/{self.user_id}/messages"))["messages"]

    async def block(self) -> None:
        await self._request("POST", f"/client/{self.user_id}/block", {})

    async def unblock(self) -> None:
        await self._request("POST", f"/client/{self.user_id}/unblock", {})

    async def wait_for_text(self, needle: str, timeout: float = 30) -> dict[str, Any]:
        """The first received message containing ``needle``; polls the control API."""
        deadline = time.monotonic() + timeout
        while True:
            for message in await self.inbox():
                if needle in message.get("text", ""):
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"client {self.user_id} did not receive {needle!r} within {timeout}s")
            await asyncio.sleep(0.1)
