"""What every Bot API method group shares: resolving the chat a call addresses, the gate every
send passes (blocked user, group membership, business 24-hour window, rate limits), storing a
sent message, and parsing texts, captions, replies and keyboards.

The method groups (sending, media, edits, business, webhooks) are mixins over this base so each
stays readable on its own while the rules live in one place.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import formatting
from .errors import (
    BOT_BLOCKED,
    BUSINESS_CONNECTION_INVALID,
    BUSINESS_CONNECTION_NOT_FOUND,
    BUSINESS_NO_RIGHTS,
    BUSINESS_PEER_USAGE_MISSING,
    CAPTION_TOO_LONG,
    CHAT_NOT_FOUND,
    GROUP_MIGRATED,
    TEXT_EMPTY,
    TEXT_TOO_LONG,
    ApiError,
    bad_request,
    forbidden,
    too_many_requests,
)
from .params import Params
from .ratelimit import SendRateLimiter
from .state import (
    BUSINESS_REPLY_WINDOW,
    MAX_CAPTION_LENGTH,
    BusinessChat,
    BusinessConnection,
    Conversation,
    GroupChat,
    PrivateChat,
    SandboxState,
    StoredMessage,
    without_reply,
)


Handler = Callable[[Params], Awaitable[Any]]


@dataclass
class Described:
    """A successful result that also carries a ``description``, as deleteWebhook's does."""

    result: Any
    description: str


@dataclass
class Target:
    """Where a call acts: a chat, and the business connection it goes through, if any."""

    chat: Conversation
    connection: BusinessConnection | None = None

    @property
    def rate_key(self) -> object:
        if self.connection is not None:
            return ("business", self.connection.id, self.chat.id)
        return self.chat.id


class ApiBase:
    state: SandboxState
    limiter: SendRateLimiter
    monotonic: Callable[[], float]

    # ------------------------------------------------------------------ targets

    def _target(self, params: Params) -> Target:
        """The chat a send/edit addresses, through ``business_connection_id`` if given.

        Only methods whose documentation lists ``business_connection_id`` use this; the others
        (deleteMessage, setMessageReaction, ...) use :meth:`_chat` and so ignore the parameter,
        as the official server ignores unknown parameters."""
        connection_id = (params.get_str("business_connection_id") or "").strip()
        if connection_id:
            connection = self._connection(connection_id, enabled=True)
            chat_id = self._chat_id(params)
            chat = connection.chats.get(chat_id)
            if chat is None:
                # No incoming message ever: the user has not "recently contacted us".
                raise bad_request(BUSINESS_PEER_USAGE_MISSING)
            return Target(chat, connection)
        return Target(self._chat(params))

    def _connection(self, connection_id: str, *, enabled: bool) -> BusinessConnection:
        connection = self.state.business.get(connection_id)
        if connection is None:
            raise bad_request(BUSINESS_CONNECTION_NOT_FOUND)
        if enabled and not connection.is_enabled:
            raise bad_request(BUSINESS_CONNECTION_INVALID)
        return connection

    @staticmethod
    def _chat_id(params: Params) -> int:
        raw = (params.get_str("chat_id") or "").strip()
        if not raw:
            raise bad_request("chat_id is empty")
        try:
            return int(raw)
        except ValueError:
            # "@username" addresses public groups and channels only, never private chats.
            raise bad_request(CHAT_NOT_FOUND) from None

    def _chat(self, params: Params) -> PrivateChat | GroupChat:
        chat_id = self._chat_id(params)
        chat: PrivateChat | GroupChat | None
        if chat_id < 0:
            chat = self.state.groups.get(chat_id)
            if chat is not None and chat.migrated_to is not None:
                raise ApiError(
                    400,
                    f"Bad Request: {GROUP_MIGRATED}",
                    parameters={"migrate_to_chat_id": chat.migrated_to},
                )
        else:
            chat = self.state.chats.get(chat_id)
        if chat is None:
            raise bad_request(CHAT_NOT_FOUND)
        return chat

    def _check_writable(self, target: Target) -> None:
        """Whether the bot may post in the target at all (before any rate limit)."""
        chat = target.chat
        if isinstance(chat, PrivateChat) and chat.blocked:
            raise forbidden(BOT_BLOCKED)
        if isinstance(chat, GroupChat) and not chat.bot_present:
            kind = "supergroup chat" if chat.type == "supergroup" else "group chat"
            if chat.bot_status == "kicked":
                raise forbidden(f"bot was kicked from the {kind}")
            raise forbidden(f"bot is not a member of the {kind}")
        if target.connection is not None and isinstance(chat, BusinessChat):
            self._check_business_window(target.connection, chat, "can_reply")

    def _check_business_window(self, connection: BusinessConnection, chat: BusinessChat, right: str) -> None:
        if not connection.can(right):
            raise bad_request(BUSINESS_NO_RIGHTS)
        last = chat.last_incoming_date
        if last is None or self.state.now() - last > BUSINESS_REPLY_WINDOW:
            raise bad_request(BUSINESS_PEER_USAGE_MISSING)

    def _admit(self, target: Target) -> None:
        """Every send's gate: may the bot write there, and does the rate limit allow it now."""
        self._check_writable(target)
        is_group = isinstance(target.chat, GroupChat)
        retry_after = self.limiter.acquire(target.rate_key, group=is_group)
        if retry_after is not None:
            raise too_many_requests(retry_after)

    def _store_sent(
        self,
        target: Target,
        content: dict[str, Any],
        params: Params,
        *,
        reply_to: StoredMessage | None = None,
        markup: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record a message the bot sent (after :meth:`_admit`) and wake waiting clients."""
        chat = target.chat
        connection = target.connection
        sender = connection.owner.as_user() if connection else self.state.bot.as_user()
        message: dict[str, Any] = {
            "message_id": chat.allocate_message_id(),
            "from": sender,
            "chat": chat.as_chat(),
            "date": self.state.now(),
        }
        if connection is not None:
            message["business_connection_id"] = connection.id
            message["sender_business_bot"] = self.state.bot.as_user()
        if reply_to is not None:
            message["reply_to_message"] = without_reply(reply_to.data)
        message.update(content)
        if params.get_bool("protect_content"):
            message["has_protected_content"] = True
        if markup is not None:
            message["reply_markup"] = markup
        chat.add(message, "bot")
        chat.action = None  # a client stops showing "typing..." once the message arrives
        self.state.outbox.notify()
        return copy.deepcopy(message)

    # ------------------------------------------------------------------ shared parsing

    def _formatted(
        self,
        params: Params,
        text: str,
        entities_name: str,
        *,
        caption: bool = False,
    ) -> formatting.FormattedText:
        parse_mode = (params.get_str("parse_mode") or "").strip()
        try:
            if parse_mode:
                parsed = formatting.parse_text(text, parse_mode)
            else:
                raw = params.get_json(entities_name, "entities")
                parsed = formatting.FormattedText(
                    text, formatting.normalize_entities(raw) if raw is not None else []
                )
        except formatting.EntityParseError as exc:
            raise bad_request(f"can't parse entities: {exc}") from None
        except ValueError:
            raise bad_request("unsupported parse_mode") from None
        limit = MAX_CAPTION_LENGTH if caption else formatting.MAX_TEXT_LENGTH
        try:
            return formatting.finalize(parsed.text, parsed.entities, limit)
        except formatting.TextEmpty:
            if caption:
                return formatting.FormattedText("", [])
            raise bad_request(TEXT_EMPTY) from None
        except formatting.TextTooLong:
            raise bad_request(CAPTION_TOO_LONG if caption else TEXT_TOO_LONG) from None

    def _caption(self, params: Params) -> dict[str, Any]:
        """``caption``/``caption_entities`` fields from a call (empty when there is none)."""
        caption = params.get_str("caption")
        if not caption:
            return {}
        formatted = self._formatted(params, caption, "caption_entities", caption=True)
        if not formatted.text:
            return {}
        content: dict[str, Any] = {"caption": formatted.text}
        if formatted.entities:
            content["caption_entities"] = formatted.entities
        if params.get_bool("show_caption_above_media"):
            content["show_caption_above_media"] = True
        return content

    def _reply_to(self, params: Params, chat: Conversation) -> StoredMessage | None:
        reply = params.get_json("reply_parameters", "reply parameters")
        allow_without = params.get_bool("allow_sending_without_reply")
        message_id: int | None
        if reply is not None:
            if not isinstance(reply, dict) or not formatting.is_int(reply.get("message_id")):
                raise bad_request("can't parse reply parameters JSON object")
            message_id = reply["message_id"]
            allow_without = bool(reply.get("allow_sending_without_reply", allow_without))
            other_chat = reply.get("chat_id")
            if other_chat is not None and str(other_chat) != str(chat.id):
                if allow_without:
                    return None
                raise bad_request("message to be replied not found")
        else:
            message_id = params.get_int("reply_to_message_id")
        if not message_id:
            return None
        found = chat.find(message_id)
        if found is None and not allow_without:
            raise bad_request("message to be replied not found")
        return found

    def _reply_markup(self, params: Params) -> dict[str, Any] | None:
        markup = params.get_json("reply_markup", "reply keyboard markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        keyboard = markup.get("inline_keyboard")
        if keyboard is None:
            return None  # reply keyboards are not echoed in the sent message
        if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
            raise bad_request('can\'t parse reply keyboard markup: "inline_keyboard" must be an array')
        return {"inline_keyboard": keyboard}
