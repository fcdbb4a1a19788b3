"""Plays a WhatsApp client on the sandbox through its control API (what a phone would do)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class WhatsAppClient:
    sandbox_url: str
    wa_id: str
    name: str
    #: The company number written to (None: the sandbox's only number).
    to: str | None = None

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float = 10,
        data: Any = None,
    ) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout + 5)) as http:
            kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
            async with http.request(method, f"{self.sandbox_url}{path}", **kwargs) as resp:
                if resp.content_type != "application/json":
                    payload: Any = await resp.read()
                else:
                    payload = await resp.json()
                if resp.status != 200:
                    raise AssertionError(f"{method} {path} -> {resp.status} {payload!r}"[:500])
                return payload

    def _base(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        if self.to:
            body["to"] = self.to
        return body

    async def say(self, text: str, *, reply_to: str | None = None) -> str:
        body = {**self._base(), "text": text}
        if reply_to:
            body["reply_to"] = reply_to
        return (await self._request("POST", f"/client/{self.wa_id}/messages", body))["id"]

    async def share(self, **content: Any) -> str:
        """location=..., contacts=[...], reaction={...}, unsupported=..."""
        return (await self._request("POST", f"/client/{self.wa_id}/messages", {**self._base(), **content}))[
            "id"
        ]

    async def react(self, message_id: str, emoji: str) -> str:
        return await self.share(reaction={"message_id": message_id, "emoji": emoji})

    async def send_file(
        self,
        kind: str,
        data: bytes,
        file_name: str,
        *,
        caption: str | None = None,
        mime_type: str | None = None,
    ) -> dict[str, Any]:
        form = aiohttp.FormData()
        for key, value in {**self._base(), "kind": kind, "file_name": file_name}.items():
            form.add_field(key, str(value))
        if caption:
            form.add_field("caption", caption)
        if mime_type:
            form.add_field("mime_type", mime_type)
        form.add_field("file", data, filename=file_name, content_type=mime_type or "application/octet-stream")
        return await self._request("POST", f"/client/{self.wa_id}/messages", data=form)

    async def edit(self, message_id: str, text: str) -> str:
        body = {"text": text, **({"to": self.to} if self.to else {})}
        return (await self._request("POST", f"/client/{self.wa_id}/messages/{message_id}/edit", body))["id"]

    async def revoke(self, message_id: str) -> str:
        return (
            await self._request(
                "POST",
                f"/client/{self.wa_id}/messages/{message_id}/revoke",
                {"to": self.to} if self.to else {},
            )
        )["id"]

    async def read(self) -> list[str]:
        return (
            await self._request("POST", f"/client/{self.wa_id}/read", {"to": self.to} if self.to else {})
        )["read"]

    def _query(self, **params: Any) -> str:
        if self.to:
            params["to"] = self.to
        return "&".join(f"{k}={v}" for k, v in params.items() if v is not None)

    async def inbox(self, *, after: str | None = None, timeout: float = 0) -> list[dict[str, Any]]:
        """What the client received from the business, oldest first (waiting up to ``timeout``
        for something newer than ``after``)."""
        q = self._query(after=after, timeout=int(timeout) if timeout else None)
        return (await self._request("GET", f"/client/{self.wa_id}/messages?{q}", timeout=timeout))["messages"]

    async def history(self) -> dict[str, Any]:
        return await self._request("GET", f"/client/{self.wa_id}/history?{self._query()}")

    async def media(self, media_id: str) -> bytes:
        return await self._request("GET", f"/client/{self.wa_id}/media/{media_id}?{self._query()}")

    async def wait_for(self, predicate, what: str, timeout: float = 30) -> dict[str, Any]:
        """The first received message matching ``predicate``; long-polls the sandbox."""
        deadline = time.monotonic() + timeout
        last: str | None = None
        while True:
            for message in await self.inbox():
                if predicate(message):
                    return message
                last = message["id"]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"WhatsApp client {self.wa_id} did not receive {what} within {timeout}s")
            await self.inbox(after=last, timeout=min(remaining, 5))

    async def wait_for_text(self, needle: str, timeout: float = 30) -> dict[str, Any]:
        return await self.wait_for(lambda m: needle in text_of(m), repr(needle), timeout)


def text_of(message: dict[str, Any]) -> str:
    """A received message's text (a text body, or a media caption)."""
    text = message.get("text")
    if isinstance(text, dict):
        return str(text.get("body") or "")
    for kind in ("image", "video", "document", "audio", "sticker"):
        media = message.get(kind)
        if isinstance(media, dict):
            return str(media.get("caption") or "")
    return ""
