"""Telegram Business as the bot experiences it: people connect the bot to their business
account, their clients write to them, they write back themselves from the Telegram app, and the
bot receives all of it as ``business_connection``, ``business_message``,
``edited_business_message`` and ``deleted_business_messages`` updates.

These are the people's side of the story (the control API drives them); what the bot may do in
those chats is in api_base/api_business.
"""

from __future__ import annotations

import logging
from typing import Any

from .state import (
    BUSINESS_RIGHTS,
    BusinessChat,
    BusinessConnection,
    ClientError,
    SandboxState,
    StoredMessage,
    random_id,
    without_reply,
)

log = logging.getLogger("sandbox.telegram.business")

# What the Telegram app ticks by default under "Manage messages" when connecting a bot.
DEFAULT_RIGHTS = (
    "can_reply",
    "can_read_messages",
    "can_delete_sent_messages",
    "can_delete_all_messages",
)


class BusinessAccounts:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    # ------------------------------------------------------------------ connections

    def connect(self, body: dict[str, Any]) -> BusinessConnection:
        """The owner connects the bot (Settings > Telegram Business > Chatbots).

        Connecting again re-enables the same connection with the new rights, as Telegram
        reports one connection per account.
        """
        if not self.state.bot.can_connect_to_business:
            raise ClientError("the bot has Business Mode switched off in @BotFather", status=409)
        owner_id = body.get("owner_id")
        if not isinstance(owner_id, int) or isinstance(owner_id, bool) or owner_id <= 0:
            raise ClientError('"owner_id" is required and must be a positive integer')
        if owner_id == self.state.bot.id:
            raise ClientError("a bot cannot own a business account")
        fields = {
            name: body[f"owner_{name}"]
            for name in ("first_name", "last_name", "username", "language_code")
            if f"owner_{name}" in body
        }
        rights = self._rights(body)
        existing = next((c for c in self.state.business.values() if c.owner.id == owner_id), None)
        owner = self.state.profile_from(
            owner_id,
            fields,
            existing.owner if existing else self.state.known_profile(owner_id),
        )
        if existing is None:
            connection = BusinessConnection(
                id=random_id(24), owner=owner, date=self.state.now(), rights=rights
            )
            self.state.business[connection.id] = connection
        else:
            connection = existing
            connection.rights = rights
            connection.is_enabled = True
            connection.date = self.state.now()
        self.state.push_update("business_connection", connection.as_json())
        log.info("event=business_connected connection_id=%s owner_id=%d", connection.id, owner_id)
        return connection

    @staticmethod
    def _rights(body: dict[str, Any]) -> dict[str, bool]:
        """Rights from ``"rights": {...}`` and/or top-level ``can_*`` flags; default: the
        message rights Telegram's app proposes."""
        given: dict[str, Any] = {}
        nested = body.get("rights")
        if nested is not None:
            if not isinstance(nested, dict):
                raise ClientError('"rights" must be an object of BusinessBotRights flags')
            given.update(nested)
        given.update({k: v for k, v in body.items() if k in BUSINESS_RIGHTS})
        unknown = sorted(set(given) - set(BUSINESS_RIGHTS))
        if unknown:
            raise ClientError(f"unknown business bot rights: {', '.join(unknown)}")
        if not all(isinstance(value, bool) for value in given.values()):
            raise ClientError("business bot rights must be true or false")
        if not given:
            return {name: True for name in DEFAULT_RIGHTS}
        return {name: value for name, value in given.items() if value}

    def disconnect(self, connection: BusinessConnection) -> BusinessConnection:
        if not connection.is_enabled:
            raise ClientError("this business connection is already disabled", status=409)
        connection.is_enabled = False
        connection.date = self.state.now()
        self.state.push_update("business_connection", connection.as_json())
        log.info("event=business_disconnected connection_id=%s", connection.id)
        return connection

    def connection(self, connection_id: str) -> BusinessConnection:
        connection = self.state.business.get(connection_id)
        if connection is None:
            raise ClientError("no such business connection", status=404)
        return connection

    # ------------------------------------------------------------------ chats

    def chat(self, connection: BusinessConnection, client_id: int) -> BusinessChat:
        chat = connection.chats.get(client_id)
        if chat is None:
            raise ClientError("this client has not written to the business account", status=404)
        return chat

    def _notify(self, connection: BusinessConnection, kind: str, payload: dict[str, Any]) -> None:
        """Business updates reach the bot only while it is connected."""
        if connection.is_enabled:
            self.state.push_update(kind, payload)
        self.state.outbox.notify()

    def client_writes(
        self,
        connection: BusinessConnection,
        client_id: int,
        fields: dict[str, Any],
        content: dict[str, Any],
        reply_to: StoredMessage | None,
    ) -> dict[str, Any]:
        """A client writes to the business account: ``business_message`` from the client."""
        if client_id == connection.owner.id:
            raise ClientError("the owner cannot be a client of their own business account")
        existing = connection.chats.get(client_id)
        profile = self.state.profile_from(
            client_id,
            fields,
            existing.client if existing else self.state.known_profile(client_id),
        )
        chat = existing or BusinessChat(connection=connection, client=profile)
        connection.chats[client_id] = chat
        message = self._message(connection, chat, profile.as_user(), content, reply_to)
        chat.add(message, "client")
        chat.last_incoming_date = message["date"]
        self._notify(connection, "business_message", message)
        return message

    def owner_writes(
        self,
        connection: BusinessConnection,
        chat: BusinessChat,
        content: dict[str, Any],
        reply_to: StoredMessage | None,
    ) -> dict[str, Any]:
        """The owner types in the Telegram app: ``business_message`` from the owner."""
        message = self._message(connection, chat, connection.owner.as_user(), content, reply_to)
        chat.add(message, "owner")
        self._notify(connection, "business_message", message)
        return message

    def _message(
        self,
        connection: BusinessConnection,
        chat: BusinessChat,
        sender: dict[str, Any],
        content: dict[str, Any],
        reply_to: StoredMessage | None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": chat.allocate_message_id(),
            "from": sender,
            "chat": chat.as_chat(),
            "date": self.state.now(),
            "business_connection_id": connection.id,
        }
        if reply_to is not None:
            message["reply_to_message"] = without_reply(reply_to.data)
        message.update(content)
        return message

    def edit(
        self, connection: BusinessConnection, stored: StoredMessage, values: dict[str, Any]
    ) -> dict[str, Any]:
        edited = self.state.user_edits(stored, values)
        self._notify(connection, "edited_business_message", edited)
        return edited

    def delete(self, connection: BusinessConnection, chat: BusinessChat, message_ids: list[int]) -> list[int]:
        """Either side deletes messages for both: ``deleted_business_messages``."""
        found = [chat.find(message_id) for message_id in message_ids]
        missing = [mid for mid, stored in zip(message_ids, found) if stored is None]
        if missing:
            raise ClientError(f"no such messages in this chat: {missing}", status=404)
        for stored in found:
            assert stored is not None
            stored.deleted = True
        self._notify(
            connection,
            "deleted_business_messages",
            {
                "business_connection_id": connection.id,
                "chat": chat.as_chat(),
                "message_ids": message_ids,
            },
        )
        return message_ids
