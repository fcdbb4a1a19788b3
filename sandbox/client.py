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
    language_code: str | None = None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.request(method, f"{self.sandbox_url}{path}", json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise AssertionError(f"{method} {path} -> {resp.status} {data}")
                return data

    def _profile(self) -> dict[str, Any]:
        body: dict[str, Any] = {"first_name": self.first_name}
        if self.last_name:
            body["last_name"] = self.last_name
        if self.username:
            body["username"] = self.username
        if self.language_code:
            body["language_code"] = self.language_code
        return body

    async def say(
        self, text: str, *, entities: list[dict[str, Any]] | None = None, reply_to: int | None = None
    ) -> dict[str, Any]:
        """The client writes to the company's bot; returns {"message_id", "chat_id"}."""
        body: dict[str, Any] = {"text": text, **self._profile()}
        if entities is not None:
            body["entities"] = entities
        if reply_to is not None:
            body["reply_to_message_id"] = reply_to
        return await self._request("POST", f"/client/{self.user_id}/messages", body)

    async def share(self, **fields: Any) -> dict[str, Any]:
        """A location or contact: ``share(location={...})`` / ``share(contact={...})``."""
        return await self._request("POST", f"/client/{self.user_id}/messages", {**fields, **self._profile()})

    async def send_file(
        self, kind: str, data: bytes, file_name: str, *, caption: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """A photo, document, voice note... as a multipart upload from the client's phone."""
        form = aiohttp.FormData()
        for key, value in {**self._profile(), "kind": kind, **fields}.items():
            form.add_field(key, str(value))
        if caption is not None:
            form.add_field("caption", caption)
        form.add_field("file", data, filename=file_name)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.post(f"{self.sandbox_url}/client/{self.user_id}/messages", data=form) as resp:
                answer = await resp.json()
                if resp.status != 200:
                    raise AssertionError(f"file upload -> {resp.status} {answer}")
                return answer

    async def edit(self, message_id: int, text: str) -> dict[str, Any]:
        return await self._request(
            "POST", f"/client/{self.user_id}/messages/{message_id}/edit", {"text": text}
        )

    async def react(self, message_id: int, emoji: list[str]) -> dict[str, Any]:
        return await self._request(
            "POST", f"/client/{self.user_id}/messages/{message_id}/react", {"emoji": emoji}
        )

    async def history(self) -> list[dict[str, Any]]:
        """Both directions as the client's phone shows them (with reactions and deletions)."""
        return (await self._request("GET", f"/client/{self.user_id}/history"))["messages"]

    async def chat_action(self) -> dict[str, Any] | None:
        return (await self._request("GET", f"/client/{self.user_id}/messages"))["chat_action"]

    async def file(self, file_id: str) -> bytes:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.get(f"{self.sandbox_url}/client/{self.user_id}/files/{file_id}") as resp:
                if resp.status != 200:
                    raise AssertionError(f"file {file_id} -> {resp.status}")
                return await resp.read()

    async def wait_until(self, predicate, what: str, timeout: float = 30) -> Any:
        """Poll the client's phone (history) until ``predicate(messages)`` is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(await self.history())
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"client {self.user_id}: timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(0.1)

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
