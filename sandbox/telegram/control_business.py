"""Control endpoints for Telegram Business: a person connects the bot to their business account,
their clients write to them, and they answer, edit and delete from the Telegram app.

Routes live under ``/business``; see sandbox/telegram/README.md.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import content
from .business import BusinessAccounts
from .control_common import (
    ControlBase,
    json_response,
    path_int,
    sent_answer,
    user_id_of,
)
from .state import BusinessChat, BusinessConnection, ClientError, SandboxState, StoredMessage
from .views import message_view


class BusinessControl(ControlBase):
    def __init__(self, state: SandboxState) -> None:
        super().__init__(state)
        self.accounts = BusinessAccounts(state)

    def add_routes(self, app: web.Application) -> None:
        route = app.router
        prefix = "/business/{connection_id}"
        client = f"{prefix}/clients/{{client_id}}"
        route.add_post("/business/connect", self._guard(self.connect))
        route.add_get(prefix, self._guard(self.get_connection))
        route.add_post(f"{prefix}/disconnect", self._guard(self.disconnect))
        route.add_post(f"{client}/messages", self._guard(self.client_writes))
        route.add_get(f"{client}/messages", self._guard(self.get_messages))
        route.add_get(f"{client}/files/{{file_id}}", self._guard(self.get_file))
        route.add_post(f"{client}/messages/{{message_id}}/edit", self._guard(self.client_edits))
        route.add_post(f"{client}/messages/{{message_id}}/delete", self._guard(self.client_deletes))
        route.add_post(f"{prefix}/owner/messages", self._guard(self.owner_writes))
        route.add_post(f"{prefix}/owner/messages/{{message_id}}/edit", self._guard(self.owner_edits))
        route.add_post(f"{prefix}/owner/messages/delete", self._guard(self.owner_deletes))

    # ------------------------------------------------------------------ helpers

    def _connection(self, request: web.Request) -> BusinessConnection:
        return self.accounts.connection(request.match_info["connection_id"])

    def _client_chat(self, request: web.Request) -> tuple[BusinessConnection, BusinessChat]:
        connection = self._connection(request)
        return connection, self.accounts.chat(connection, user_id_of(request, "client_id"))

    @staticmethod
    def _reply_target(chat: BusinessChat | None, body: content.ClientBody) -> StoredMessage | None:
        reply_to = content.reply_to_id(body)
        if reply_to is None:
            return None
        stored = chat.find(reply_to) if chat is not None else None
        if stored is None:
            raise ClientError("reply_to_message_id is not a message of this chat")
        return stored

    def _connection_answer(self, connection: BusinessConnection) -> dict[str, Any]:
        return {**connection.as_json(), "chats": sorted(connection.chats)}

    # ------------------------------------------------------------------ the owner's settings

    async def connect(self, request: web.Request) -> web.Response:
        connection = self.accounts.connect(await self._body(request))
        return json_response(self._connection_answer(connection))

    async def get_connection(self, request: web.Request) -> web.Response:
        return json_response(self._connection_answer(self._connection(request)))

    async def disconnect(self, request: web.Request) -> web.Response:
        connection = self.accounts.disconnect(self._connection(request))
        return json_response(self._connection_answer(connection))

    # ------------------------------------------------------------------ the client's phone

    async def client_writes(self, request: web.Request) -> web.Response:
        connection = self._connection(request)
        client_id = user_id_of(request, "client_id")
        body = await content.read_body(request)
        reply_to = self._reply_target(connection.chats.get(client_id), body)
        existing = connection.chats.get(client_id)
        known = existing.client if existing else self.state.known_profile(client_id)
        self.state.profile_from(client_id, body.values, known)  # validate before storing files
        fields = content.message_content(self.state, body)
        message = self.accounts.client_writes(connection, client_id, body.values, fields, reply_to)
        return json_response(sent_answer(message))

    async def get_messages(self, request: web.Request) -> web.Response:
        """The chat as the client's phone shows it: every message, with ``sender`` (client,
        owner or bot), ``read_by_business`` on the client's messages the bot marked read."""
        connection = self._connection(request)
        client_id = user_id_of(request, "client_id")
        after, timeout = self._after_timeout(request)

        def newer() -> list[StoredMessage]:
            chat = connection.chats.get(client_id)
            return list(chat.after(after)) if chat is not None else []

        await self._wait(newer, timeout)
        return json_response({"messages": [message_view(m, with_sender=True) for m in newer()]})

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        connection, chat = self._client_chat(request)
        return self._file_response(chat, request.match_info["file_id"])

    async def client_edits(self, request: web.Request) -> web.Response:
        connection, chat = self._client_chat(request)
        stored = self._own_message(chat, path_int(request, "message_id"), "client")
        edited = self.accounts.edit(connection, stored, await self._body(request))
        return json_response({"message_id": stored.message_id, "edit_date": edited["edit_date"]})

    async def client_deletes(self, request: web.Request) -> web.Response:
        connection, chat = self._client_chat(request)
        deleted = self.accounts.delete(connection, chat, [path_int(request, "message_id")])
        return json_response({"message_ids": deleted, "deleted": True})

    # ------------------------------------------------------------------ the owner's app

    def _owner_chat(
        self, connection: BusinessConnection, body: dict[str, Any] | content.ClientBody
    ) -> BusinessChat:
        values = body.values if isinstance(body, content.ClientBody) else body
        raw = values.get("chat_id")
        try:
            chat_id = int(raw) if raw is not None and not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            chat_id = None
        if chat_id is None:
            raise ClientError('"chat_id" (the client\'s user id) is required')
        return self.accounts.chat(connection, chat_id)

    @staticmethod
    def _own_message(chat: BusinessChat, message_id: int, sender: str) -> StoredMessage:
        stored = chat.find(message_id)
        if stored is None:
            raise ClientError("no such message in this chat", status=404)
        if stored.sender != sender:
            raise ClientError(f"the {sender} can edit only their own messages", status=403)
        return stored

    async def owner_writes(self, request: web.Request) -> web.Response:
        connection = self._connection(request)
        body = await content.read_body(request)
        chat = self._owner_chat(connection, body)
        reply_to = self._reply_target(chat, body)
        fields = content.message_content(self.state, body)
        message = self.accounts.owner_writes(connection, chat, fields, reply_to)
        return json_response(sent_answer(message))

    async def owner_edits(self, request: web.Request) -> web.Response:
        connection = self._connection(request)
        body = await self._body(request)
        chat = self._owner_chat(connection, body)
        stored = self._own_message(chat, path_int(request, "message_id"), "owner")
        edited = self.accounts.edit(connection, stored, body)
        return json_response({"message_id": stored.message_id, "edit_date": edited["edit_date"]})

    async def owner_deletes(self, request: web.Request) -> web.Response:
        connection = self._connection(request)
        body = await self._body(request)
        chat = self._owner_chat(connection, body)
        ids = body.get("message_ids")
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise ClientError('"message_ids" must be a non-empty list of message ids')
        deleted = self.accounts.delete(connection, chat, ids)
        return json_response({"message_ids": deleted, "deleted": True})
