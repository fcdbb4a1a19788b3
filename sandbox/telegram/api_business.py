"""getBusinessConnection, readBusinessMessage, deleteBusinessMessages.

Sending and editing on behalf of a business account is the ordinary send/edit methods with
``business_connection_id`` (see api_base.ApiBase._target); these are the business-only methods.
"""

from __future__ import annotations

from typing import Any

from .api_base import ApiBase, Handler
from .errors import BUSINESS_NO_RIGHTS, BUSINESS_PEER_USAGE_MISSING, DELETE_NOT_FOUND, bad_request
from .params import Params
from .state import BusinessChat, StoredMessage

MAX_DELETE_BATCH = 100


class BusinessMethods(ApiBase):
    def business_handlers(self) -> dict[str, Handler]:
        return {
            "getBusinessConnection": self.get_business_connection,
            "readBusinessMessage": self.read_business_message,
            "deleteBusinessMessages": self.delete_business_messages,
        }

    async def get_business_connection(self, params: Params) -> Any:
        """Also answers for disconnected accounts (``is_enabled: false``)."""
        connection_id = (params.get_str("business_connection_id") or "").strip()
        return self._connection(connection_id, enabled=False).as_json()

    async def read_business_message(self, params: Params) -> Any:
        """Marks an incoming message (and those before it) read; needs ``can_read_messages``
        and a chat active in the last 24 hours."""
        connection_id = (params.get_str("business_connection_id") or "").strip()
        connection = self._connection(connection_id, enabled=True)
        chat = connection.chats.get(self._chat_id(params))
        if chat is None:
            raise bad_request(BUSINESS_PEER_USAGE_MISSING)
        self._check_business_window(connection, chat, "can_read_messages")
        message_id = params.get_int("message_id")
        stored = chat.find(message_id) if message_id else None
        if stored is None:
            raise bad_request("message not found")
        if stored.sender != "client":
            raise bad_request("message is not incoming")  # only incoming messages are "read"
        for earlier in chat.messages.values():
            if earlier.sender == "client" and earlier.message_id <= stored.message_id:
                earlier.read_by_business = True
        self.state.outbox.notify()
        return True

    async def delete_business_messages(self, params: Params) -> Any:
        """Deletes messages of one business chat; the bot's own need ``can_delete_sent_messages``
        (or ``can_delete_all_messages``), others ``can_delete_all_messages``."""
        connection_id = (params.get_str("business_connection_id") or "").strip()
        connection = self._connection(connection_id, enabled=True)
        raw = params.get_json("message_ids", "message identifiers")
        if not isinstance(raw, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
            raise bad_request("can't parse message identifiers JSON object")
        if not raw:
            raise bad_request("message identifiers are not specified")
        if len(raw) > MAX_DELETE_BATCH:
            raise bad_request("too many message identifiers specified")
        found: list[tuple[BusinessChat, StoredMessage]] = []
        for message_id in raw:
            located = connection.find_message(message_id)
            if located is not None:
                found.append(located)
        if not found:
            raise bad_request(DELETE_NOT_FOUND)
        if len({id(chat) for chat, _ in found}) > 1:
            raise bad_request("all messages must be from the same chat")
        for _, stored in found:
            allowed = connection.can("can_delete_all_messages") or (
                stored.by_bot and connection.can("can_delete_sent_messages")
            )
            if not allowed:
                raise bad_request(BUSINESS_NO_RIGHTS)
        for _, stored in found:
            stored.deleted = True
        self.state.outbox.notify()
        return True
