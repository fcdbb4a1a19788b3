"""The client side of the sandbox: what a person's phone would do in a private chat with the bot
(write, attach files, edit, react, delete, read, block) plus a few knobs for tests (redelivery,
injected faults, the clock, a state dump). See sandbox/telegram/README.md for every endpoint.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from . import content
from .control_common import (
    ControlBase,
    chat_action,
    json_response,
    log,
    path_int,
    sent_answer,
    user_id_of,
)
from .faults import FaultPlan
from .state import ClientError, PrivateChat, SandboxState, StoredMessage
from .views import message_view

MAX_DOCUMENT_BODY = 70 * 1024 * 1024  # base64 of a 50 MB document, with room for the JSON
# Telegram's deep-linking rule: "values up to 64 characters long. A-Z, a-z, 0-9, _ and - are
# allowed" (core.telegram.org/bots/features#deep-linking); messages.startBot refuses others
# (START_PARAM_EMPTY, START_PARAM_INVALID, START_PARAM_TOO_LONG), so no update comes of them.
START_PAYLOAD_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
START_COMMAND = "/start"
_LINK_HOSTS = ("t.me", "telegram.me")


class ControlApi(ControlBase):
    def __init__(self, state: SandboxState, faults: FaultPlan) -> None:
        super().__init__(state)
        self.faults = faults

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/client/{user_id}/messages", self._guard(self.post_message))
        app.router.add_get("/client/{user_id}/messages", self._guard(self.get_messages))
        app.router.add_get("/client/{user_id}/history", self._guard(self.get_history))
        app.router.add_get("/client/{user_id}/files/{file_id}", self._guard(self.get_file))
        app.router.add_post("/client/{user_id}/messages/{message_id}/edit", self._guard(self.edit_message))
        app.router.add_post("/client/{user_id}/messages/{message_id}/react", self._guard(self.react))
        app.router.add_post(
            "/client/{user_id}/messages/{message_id}/delete", self._guard(self.delete_message)
        )
        app.router.add_post("/client/{user_id}/read", self._guard(self.read))
        app.router.add_post("/client/{user_id}/documents", self._guard(self.post_document))
        app.router.add_post("/client/{user_id}/start", self._guard(self.open_start_link))
        app.router.add_post("/client/{user_id}/block", self._guard(self.block))
        app.router.add_post("/client/{user_id}/unblock", self._guard(self.unblock))
        app.router.add_post("/sandbox/redeliver", self._guard(self.redeliver))
        app.router.add_post("/sandbox/faults", self._guard(self.set_faults))
        app.router.add_get("/sandbox/state", self._guard(self.get_state))
        app.router.add_post("/sandbox/clock", self._guard(self.set_clock))

    @staticmethod
    def _user_id(request: web.Request) -> int:
        return user_id_of(request)

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
        """A text (with optional entities), location, contact or multipart file from the client."""
        user_id = self._user_id(request)
        body = await content.read_body(request, content.MAX_CONTROL_BODY)
        reply_to = content.reply_to_id(body)
        chat = self.state.chats.get(user_id)
        if reply_to is not None and (chat is None or chat.find(reply_to) is None):
            raise ClientError("reply_to_message_id is not a message of this chat")
        self.state.client_profile(user_id, body.values)  # validate before storing any file
        fields = content.message_content(self.state, body)
        message = self.state.client_sends(user_id, body.values, content=fields, reply_to_message_id=reply_to)
        return json_response(sent_answer(message))

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
        fields = self.state.client_document(data, file_name, mime_type, caption)
        message = self.state.client_sends(
            user_id, body, content=fields, reply_to_message_id=self._reply_to(body)
        )
        return json_response(sent_answer(message))

    async def open_start_link(self, request: web.Request) -> web.Response:
        """The client opens ``t.me/<bot>?start=<payload>`` and presses START.

        ``{"payload"}`` and/or ``{"url"}`` plus profile fields. Telegram then delivers an
        ordinary message, ``/start <payload>`` with a ``bot_command`` entity over ``/start``,
        which is all a bot ever learns of the link; so that is exactly what is queued.
        """
        user_id = self._user_id(request)
        body = await self._body(request)
        payload = self._start_payload(body)
        self.state.client_profile(user_id, body)  # a bad profile is refused before anything
        command = {"type": "bot_command", "offset": 0, "length": len(START_COMMAND)}
        fields = self.state.client_text(f"{START_COMMAND} {payload}", [command])
        message = self.state.client_sends(user_id, body, content=fields)
        return json_response(sent_answer(message))

    def _start_payload(self, body: dict[str, Any]) -> str:
        """The start parameter named by ``payload`` or carried by ``url`` (both: they agree)."""
        payload, url = body.get("payload"), body.get("url")
        if payload is None and url is None:
            raise ClientError('send "payload" or "url" (https://t.me/<bot username>?start=...)')
        if payload is not None and not isinstance(payload, str):
            raise ClientError('"payload" must be a string')
        if url is not None:
            if not isinstance(url, str):
                raise ClientError('"url" must be a string')
            from_url = self._payload_of_link(url)
            if payload is not None and payload != from_url:
                raise ClientError('"payload" and the "url"\'s start parameter differ')
            payload = from_url
        assert payload is not None
        if not START_PAYLOAD_RE.fullmatch(payload):
            raise ClientError("the start parameter must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
        return payload

    def _payload_of_link(self, url: str) -> str:
        """The ``start`` parameter of a link to this bot: ``https://t.me/<bot>?start=...`` (or
        telegram.me) or ``tg://resolve?domain=<bot>&start=...``. A link to another bot would
        open a chat the sandbox does not emulate, so it is refused."""
        try:
            parts = urlsplit(url.strip())
            host = (parts.hostname or "").lower()
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise ClientError('"url" is not a valid URL') from None
        query = parse_qs(parts.query, keep_blank_values=True)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https") and host.removeprefix("www.") in _LINK_HOSTS:
            username = parts.path.strip("/")
        elif scheme == "tg" and host == "resolve":
            username = (query.get("domain") or [""])[0]
        else:
            raise ClientError('"url" must be a https://t.me/<bot username>?start=... link')
        bot = self.state.bot.username
        if username.lower() != bot.lower():  # usernames are case-insensitive on Telegram
            raise ClientError(f'"url" opens @{username or "?"}, not the sandbox\'s bot @{bot}')
        values = query.get("start")
        if values is None:
            raise ClientError('"url" has no start parameter')
        if len(values) != 1:
            raise ClientError('"url" has more than one start parameter')
        return values[0]

    async def get_messages(self, request: web.Request) -> web.Response:
        """What the client received, oldest first.

        ``?after=<message_id>`` keeps only newer messages; ``&timeout=<seconds>`` waits (up to
        30 s) until there is at least one, so callers can wait on a condition, not a sleep.
        """
        user_id = self._user_id(request)
        after, timeout = self._after_timeout(request)

        def newer() -> list[StoredMessage]:
            chat = self.state.chats.get(user_id)
            if chat is None:
                return []
            return [m for m in chat.after(after) if m.by_bot]

        await self._wait(newer, timeout)
        chat = self.state.chats.get(user_id)
        return json_response(
            {
                "messages": [message_view(message) for message in newer()],
                "chat_action": chat_action(chat),
            }
        )

    async def get_history(self, request: web.Request) -> web.Response:
        """The whole chat as the client's phone shows it: both directions, with ``sender``."""
        user_id = self._user_id(request)
        after, timeout = self._after_timeout(request)

        def newer() -> list[StoredMessage]:
            chat = self.state.chats.get(user_id)
            return list(chat.after(after)) if chat is not None else []

        await self._wait(newer, timeout)
        chat = self.state.chats.get(user_id)
        read_up_to = chat.read_up_to if chat else 0
        return json_response(
            {
                "messages": [
                    {
                        **message_view(m, with_sender=True),
                        **({"read": True} if m.by_bot and m.message_id <= read_up_to else {}),
                    }
                    for m in newer()
                ],
                "chat_action": chat_action(chat),
                "blocked": bool(chat and chat.blocked),
                "read_up_to": read_up_to,
            }
        )

    def _client_message(self, request: web.Request) -> tuple[PrivateChat, StoredMessage]:
        user_id = self._user_id(request)
        chat = self.state.chats.get(user_id)
        if chat is None:
            raise ClientError("this client has not written to the bot yet", status=404)
        message_id = path_int(request, "message_id")
        stored = chat.messages.get(message_id)
        if stored is None:
            raise ClientError("no such message in this chat", status=404)
        return chat, stored

    async def edit_message(self, request: web.Request) -> web.Response:
        """The client edits one of its messages: the bot gets ``edited_message``."""
        chat, stored = self._client_message(request)
        if stored.sender != "client":
            raise ClientError("a client can edit only its own messages", status=403)
        body = await self._body(request)
        edited = self.state.user_edits(stored, body)
        self.state.push_update("edited_message", edited)
        return json_response({"message_id": stored.message_id, "edit_date": edited["edit_date"]})

    async def react(self, request: web.Request) -> web.Response:
        """``{"emoji": [...]}``: the client's reactions on a message (``[]`` removes them)."""
        chat, stored = self._client_message(request)
        body = await self._body(request)
        changed = self.state.user_reacts(stored, chat.client.id, body.get("emoji"))
        if changed is not None:
            self.state.reaction_update(chat, stored, chat.client, *changed)
        return json_response({"message_id": stored.message_id, "changed": changed is not None})

    async def delete_message(self, request: web.Request) -> web.Response:
        """The client deletes a message for both sides. Telegram does not tell the bot."""
        chat, stored = self._client_message(request)
        if stored.deleted:
            raise ClientError("that message was already deleted", status=404)
        stored.deleted = True
        self.state.outbox.notify()
        return json_response({"message_id": stored.message_id, "deleted": True})

    async def read(self, request: web.Request) -> web.Response:
        """The client opens the chat: everything up to ``up_to_message_id`` (default: all) is
        read. There is no Bot API update for this; it is only recorded."""
        user_id = self._user_id(request)
        chat = self.state.chats.get(user_id)
        if chat is None:
            raise ClientError("this client has not written to the bot yet", status=404)
        body = await self._body(request)
        up_to = body.get("up_to_message_id", chat.next_message_id - 1)
        if not isinstance(up_to, int) or isinstance(up_to, bool) or up_to < 0:
            raise ClientError('"up_to_message_id" must be a non-negative integer')
        chat.read_up_to = max(chat.read_up_to, up_to)
        return json_response({"read_up_to": chat.read_up_to})

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        """The bytes the client downloads for a file in its chat (any size: clients are not
        bound by getFile's 20 MB limit)."""
        user_id = self._user_id(request)
        chat = self.state.chats.get(user_id)
        return self._file_response(chat, request.match_info["file_id"])

    async def block(self, request: web.Request) -> web.Response:
        changed = self.state.set_blocked(self._user_id(request), True)
        return json_response({"blocked": True, "changed": changed})

    async def unblock(self, request: web.Request) -> web.Response:
        changed = self.state.set_blocked(self._user_id(request), False)
        return json_response({"blocked": False, "changed": changed})

    # ------------------------------------------------------------------ test knobs

    async def redeliver(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        from_id = body.get("from_update_id")
        if not isinstance(from_id, int) or isinstance(from_id, bool):
            raise ClientError('"from_update_id" is required and must be an integer')
        return json_response({"redelivered": self.state.updates.redeliver(from_id)})

    async def set_faults(self, request: web.Request) -> web.Response:
        return json_response(self.faults.configure(await self._body(request)))

    async def set_clock(self, request: web.Request) -> web.Response:
        """``{"advance_seconds": N}`` moves the sandbox's "now" forward (message dates, the 24 h
        business window, the 48 h edit/delete limits); time never goes back."""
        body = await self._body(request)
        seconds = body.get("advance_seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ClientError('"advance_seconds" must be a non-negative number')
        now = self.state.advance_clock(float(seconds))
        log.info("event=clock_advanced seconds=%s now=%d", seconds, now)
        return json_response({"now": now, "offset_seconds": self.state.clock_offset})

    async def get_state(self, request: web.Request) -> web.Response:
        return json_response({**self.state.summary(), "faults": self.faults.describe()})
