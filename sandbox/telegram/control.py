"""The client side of the sandbox: what a person's phone would do (write to the bot, read its
answers, block it) plus a few knobs for tests (redelivery, injected faults, a state dump).

It has no authentication because it stands for the client's own device; it answers loopback
callers only, whatever address the server is bound to.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .errors import ApiError
from .faults import FaultPlan
from .params import loads_utf8, read_limited
from .state import ClientError, PrivateChat, SandboxState

log = logging.getLogger("sandbox.telegram.control")

ControlHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_CONTROL_BODY = 1024 * 1024
MAX_DOCUMENT_BODY = 70 * 1024 * 1024  # base64 of a 50 MB document, with room for the JSON
MAX_CLIENT_WAIT = 30.0


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(
        body, status=status, dumps=lambda value: json.dumps(value, ensure_ascii=False)
    )


def _error(message: str, status: int = 400) -> web.Response:
    return _json({"error": message}, status=status)


def _is_loopback(remote: str | None) -> bool:
    if remote is None:
        return True  # unix sockets and in-process test clients
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class ControlApi:
    def __init__(self, state: SandboxState, faults: FaultPlan) -> None:
        self.state = state
        self.faults = faults

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/client/{user_id}/messages", self._guard(self.post_message))
        app.router.add_get("/client/{user_id}/messages", self._guard(self.get_messages))
        app.router.add_post("/client/{user_id}/documents", self._guard(self.post_document))
        app.router.add_post("/client/{user_id}/block", self._guard(self.block))
        app.router.add_post("/client/{user_id}/unblock", self._guard(self.unblock))
        app.router.add_post("/sandbox/redeliver", self._guard(self.redeliver))
        app.router.add_post("/sandbox/faults", self._guard(self.set_faults))
        app.router.add_get("/sandbox/state", self._guard(self.get_state))

    def _guard(self, handler: ControlHandler) -> ControlHandler:
        """Loopback only, and every refusal as a JSON ``{"error": ...}``."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if not _is_loopback(request.remote):
                return _error("the control API answers loopback callers only", 403)
            try:
                return await handler(request)
            except ClientError as exc:
                return _error(str(exc), exc.status)
            except ApiError as exc:  # body size limits from read_limited
                return _error(exc.description, exc.error_code)
            except Exception:  # a sandbox bug must answer in JSON, not crash
                log.exception("event=control_api_crash path=%s", request.path)
                return _error("internal sandbox error", 500)

        return guarded

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _user_id(request: web.Request) -> int:
        raw = request.match_info["user_id"]
        try:
            user_id = int(raw)
        except ValueError:
            raise ClientError("telegram_user_id in the path must be an integer") from None
        if user_id <= 0:
            raise ClientError("telegram_user_id must be a positive integer")
        return user_id

    @staticmethod
    async def _body(request: web.Request, limit: int = MAX_CONTROL_BODY) -> dict[str, Any]:
        raw = await read_limited(request, limit)
        if not raw.strip():
            return {}
        try:
            body = loads_utf8(raw)
        except ValueError:
            raise ClientError("body must be valid JSON in UTF-8") from None
        if not isinstance(body, dict):
            raise ClientError("body must be a JSON object")
        return body

    @staticmethod
    def _reply_to(body: dict[str, Any]) -> int | None:
        value = body.get("reply_to_message_id")
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise ClientError('"reply_to_message_id" must be an integer')
        return value

    # ------------------------------------------------------------------ the client's phone

    async def post_message(self, request: web.Request) -> web.Response:
        user_id = self._user_id(request)
        body = await self._body(request)
        content = self.state.client_text(body.get("text"))
        message = self.state.client_sends(
            user_id, body, content=content, reply_to_message_id=self._reply_to(body)
        )
        return _json({"message_id": message["message_id"], "chat_id": message["chat"]["id"]})

    async def post_document(self, request: web.Request) -> web.Response:
        """``{"file_name", "content_base64", "mime_type"?, "caption"?}``: a file from the client."""
        user_id = self._user_id(request)
        body = await self._body(request, MAX_DOCUMENT_BODY)
        file_name = body.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip() or "/" in file_name:
            raise ClientError('"file_name" is required and must be a plain file name')
        encoded = body.get("content_base64")
        if not isinstance(encoded, str):
            raise ClientError('"content_base64" is required and must be a string')
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ClientError('"content_base64" is not valid base64') from None
        if not data:
            raise ClientError("the document must not be empty")
        mime_type = body.get("mime_type")
        caption = body.get("caption")
        if mime_type is not None and not isinstance(mime_type, str):
            raise ClientError('"mime_type" must be a string')
        if caption is not None and not isinstance(caption, str):
            raise ClientError('"caption" must be a string')
        self.state.client_profile(user_id, body)  # validate before storing the file
        content = self.state.client_document(data, file_name, mime_type, caption)
        message = self.state.client_sends(
            user_id, body, content=content, reply_to_message_id=self._reply_to(body)
        )
        return _json(
            {
                "message_id": message["message_id"],
                "chat_id": message["chat"]["id"],
                "file_id": content["document"]["file_id"],
            }
        )

    async def get_messages(self, request: web.Request) -> web.Response:
        """What the client received, oldest first.

        ``?after=<message_id>`` keeps only newer messages; ``&timeout=<seconds>`` waits (up to
        30 s) until there is at least one, so callers can wait on a condition, not a sleep.
        """
        user_id = self._user_id(request)
        try:
            after = int(request.query.get("after", "0"))
            timeout = min(float(request.query.get("timeout", "0")), MAX_CLIENT_WAIT)
        except ValueError:
            raise ClientError('"after" must be an integer and "timeout" a number') from None

        def newer() -> list[dict[str, Any]]:
            chat = self.state.chats.get(user_id)
            if chat is None:
                return []
            return [m for m in chat.from_bot if m["message_id"] > after]

        if timeout > 0:
            await self.state.outbox.wait_for(
                lambda: bool(newer()) or self.state.updates.closed, timeout
            )
        chat = self.state.chats.get(user_id)
        return _json(
            {
                "messages": [_client_view(message) for message in newer()],
                "chat_action": _chat_action(chat),
            }
        )

    async def block(self, request: web.Request) -> web.Response:
        changed = self.state.set_blocked(self._user_id(request), True)
        return _json({"blocked": True, "changed": changed})

    async def unblock(self, request: web.Request) -> web.Response:
        changed = self.state.set_blocked(self._user_id(request), False)
        return _json({"blocked": False, "changed": changed})

    # ------------------------------------------------------------------ test knobs

    async def redeliver(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        from_id = body.get("from_update_id")
        if not isinstance(from_id, int) or isinstance(from_id, bool):
            raise ClientError('"from_update_id" is required and must be an integer')
        return _json({"redelivered": self.state.updates.redeliver(from_id)})

    async def set_faults(self, request: web.Request) -> web.Response:
        return _json(self.faults.configure(await self._body(request)))

    async def get_state(self, request: web.Request) -> web.Response:
        return _json({**self.state.summary(), "faults": self.faults.describe()})


def _client_view(message: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"message_id": message["message_id"], "date": message["date"]}
    for key in ("text", "entities", "caption", "caption_entities", "reply_markup"):
        if key in message:
            view[key] = message[key]
    if "reply_to_message" in message:
        view["reply_to_message_id"] = message["reply_to_message"]["message_id"]
    return view


def _chat_action(chat: PrivateChat | None) -> dict[str, Any] | None:
    if chat is None or chat.action is None or chat.action.expires_at <= time.monotonic():
        return None
    return {"action": chat.action.action, "date": chat.action.date}
