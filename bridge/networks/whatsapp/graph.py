"""A small client for the documented Cloud API endpoints, on aiohttp.

Plain HTTP rather than a wrapper library: the base URL must be configurable (Meta's Graph host in
production, the sandbox in tests and the demo), and the bridge needs every error's code and
subcode to decide between retrying, waiting and telling the employee.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger("houseline.whatsapp.graph")

#: Graph's own answer times are well under this; media downloads get longer.
TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
MEDIA_TIMEOUT = aiohttp.ClientTimeout(total=300, connect=10)
#: 250 templates a page; an account holds at most a few thousand (Meta's per-WABA limit).
MAX_TEMPLATE_PAGES = 40


@dataclass
class GraphError(Exception):
    """An error answer of the Graph API (or a failure to reach it: ``status`` 0)."""

    status: int
    code: int
    message: str
    subcode: int | None = None
    details: str = ""

    def __str__(self) -> str:
        return f"HTTP {self.status} code {self.code}: {self.message}" + (
            f" ({self.details})" if self.details else ""
        )


class GraphClient:
    """Calls on behalf of one company number (its id and access token)."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, phone_number_id: str, token: str
    ) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.phone_number_id = phone_number_id
        self._token = token

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with self.session.request(
                method, url, headers=self._auth, timeout=TIMEOUT, **kwargs
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise GraphError(0, 0, f"could not reach WhatsApp ({type(e).__name__})") from e
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        if status >= 400 or not isinstance(body, dict) or "error" in body:
            err = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
            data = err.get("error_data") if isinstance(err.get("error_data"), dict) else {}
            raise GraphError(
                status,
                int(err.get("code") or 0),
                str(err.get("message") or f"HTTP {status}"),
                err.get("error_subcode") if isinstance(err.get("error_subcode"), int) else None,
                str(data.get("details") or ""),
            )
        return body

    async def send(self, body: dict[str, Any]) -> str:
        """POST /{phone-number-id}/messages; the new message's wamid."""
        payload = {"messaging_product": "whatsapp", "recipient_type": "individual", **body}
        answer = await self._call("POST", f"{self.base}/{self.phone_number_id}/messages", json=payload)
        messages = answer.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not isinstance(messages[0], dict)
            or not messages[0].get("id")
        ):
            raise GraphError(200, 0, "the answer carried no message id")
        return str(messages[0]["id"])

    async def mark_read(self, message_id: str, *, typing: bool = False) -> None:
        body: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
        if typing:
            body["typing_indicator"] = {"type": "text"}
        await self._call("POST", f"{self.base}/{self.phone_number_id}/messages", json=body)

    async def upload(self, data: bytes, mimetype: str, file_name: str) -> str:
        form = aiohttp.FormData()
        form.add_field("messaging_product", "whatsapp")
        form.add_field("type", mimetype)
        form.add_field("file", data, filename=file_name, content_type=mimetype)
        answer = await self._call("POST", f"{self.base}/{self.phone_number_id}/media", data=form)
        if not answer.get("id"):
            raise GraphError(200, 0, "the upload answer carried no media id")
        return str(answer["id"])

    async def download(self, media_id: str) -> bytes:
        """The two documented steps: the media's short-lived URL, then its bytes (Bearer too)."""
        info = await self._call("GET", f"{self.base}/{media_id}")
        url = info.get("url")
        if not isinstance(url, str) or not url:
            raise GraphError(200, 0, "the media answer carried no URL")
        try:
            async with self.session.get(url, headers=self._auth, timeout=MEDIA_TIMEOUT) as resp:
                if resp.status >= 400:
                    raise GraphError(resp.status, 0, f"media download answered HTTP {resp.status}")
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise GraphError(0, 0, f"could not download the media ({type(e).__name__})") from e

    async def templates(self, waba_id: str) -> list[dict[str, Any]]:
        """Every template of the account: Graph pages the list (``paging.next``), and a template
        on a later page would otherwise look like one that does not exist."""
        found: list[dict[str, Any]] = []
        url: str | None = f"{self.base}/{waba_id}/message_templates"
        params: dict[str, str] | None = {"limit": "250"}
        for _ in range(MAX_TEMPLATE_PAGES):
            if url is None:
                break
            answer = await self._call("GET", url, params=params)
            data = answer.get("data")
            found += [t for t in data if isinstance(t, dict)] if isinstance(data, list) else []
            paging = answer.get("paging")
            following = paging.get("next") if isinstance(paging, dict) else None
            # The next page's URL carries the query (and cursor) already; the token goes only
            # to the host it was configured for.
            same_host = isinstance(following, str) and urlsplit(following)[:2] == urlsplit(self.base)[:2]
            url, params = (following, None) if same_host else (None, None)
        return found

    async def phone_number(self, fields: str = "display_phone_number,verified_name") -> dict[str, Any]:
        """GET /{phone-number-id}: the number's facts (its ``display_phone_number``, its
        ``quality_rating`` for capture health)."""
        return await self._call("GET", f"{self.base}/{self.phone_number_id}", params={"fields": fields})
