"""The Bot API methods the sandbox implements, with the official parameters, checks, error
wording and result shapes.

Each handler takes the call's :class:`Params` and returns the ``result`` value (or raises
:class:`ApiError`). Sending is funnelled through :meth:`BotApi._deliver` so the blocked-user
check and rate limits apply to every future send method (sendPhoto, ...) the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import formatting
from .errors import (
    BOT_BLOCKED,
    CHAT_NOT_FOUND,
    TERMINATED_BY_OTHER_POLL,
    TEXT_EMPTY,
    TEXT_TOO_LONG,
    WEBHOOK_ACTIVE,
    bad_request,
    conflict,
    forbidden,
    too_many_requests,
)
from .params import Params
from .ratelimit import SendRateLimiter
from .state import (
    CHAT_ACTION_SECONDS,
    MAX_DOWNLOAD_SIZE,
    ChatAction,
    PrivateChat,
    SandboxState,
    without_reply,
)

LONG_POLL_MAX_TIMEOUT = 50
RETAINED_SENT_PER_CHAT = 10_000
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)


@dataclass
class Described:
    """A successful result that also carries a ``description``, as deleteWebhook's does."""

    result: Any
    description: str


Handler = Callable[[Params], Awaitable[Any]]


class BotApi:
    def __init__(
        self,
        state: SandboxState,
        limiter: SendRateLimiter,
        monotonic: Callable[[], float],
    ) -> None:
        self.state = state
        self.limiter = limiter
        self.monotonic = monotonic
        handlers: dict[str, Handler] = {
            "getMe": self.get_me,
            "logOut": self.log_out,
            "close": self.close,
            "getUpdates": self.get_updates,
            "setWebhook": self.set_webhook,
            "deleteWebhook": self.delete_webhook,
            "getWebhookInfo": self.get_webhook_info,
            "sendMessage": self.send_message,
            "sendChatAction": self.send_chat_action,
            "getFile": self.get_file,
        }
        # Method names are case-insensitive on the official server.
        self._methods = {name.lower(): (name, handler) for name, handler in handlers.items()}

    def lookup(self, method: str) -> tuple[str, Handler] | None:
        """The canonical name and handler for ``method``, or None if unknown."""
        return self._methods.get(method.lower())

    # ------------------------------------------------------------------ bot identity

    async def get_me(self, params: Params) -> Any:
        return self.state.bot.get_me()

    async def log_out(self, params: Params) -> Any:
        return True

    async def close(self, params: Params) -> Any:
        return True

    # ------------------------------------------------------------------ updates

    async def get_updates(self, params: Params) -> Any:
        queue = self.state.updates
        offset = params.get_int("offset", 0) or 0
        limit = params.get_int("limit", 100, lo=1, hi=100) or 100
        timeout = params.get_int("timeout", 0, lo=0, hi=LONG_POLL_MAX_TIMEOUT) or 0
        allowed = params.get_json("allowed_updates", "allowed updates")
        if allowed is not None and (
            not isinstance(allowed, list) or not all(isinstance(x, str) for x in allowed)
        ):
            raise bad_request("can't parse allowed updates JSON object")
        queue.interrupt_poll()
        if self.state.webhook_url:
            raise conflict(WEBHOOK_ACTIVE)
        if allowed is not None:
            queue.set_allowed(allowed)
        if offset < 0:
            queue.keep_last(-offset)
        elif offset > 0:
            queue.confirm_below(offset)
        if queue.pending_count == 0 and timeout > 0:
            outcome = await queue.wait(timeout)
            if outcome == "conflict":
                raise conflict(TERMINATED_BY_OTHER_POLL)
        return [update.to_json() for update in queue.peek(limit)]

    async def set_webhook(self, params: Params) -> Any:
        """Stored only so getUpdates conflicts like on Telegram; nothing is delivered to it."""
        url = (params.get_str("url") or "").strip()
        if url and not url.lower().startswith("https://"):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if params.get_bool("drop_pending_updates"):
            self.state.updates.drop_pending()
        if not url:
            return await self.delete_webhook(params)
        self.state.webhook_url = url
        return Described(True, "Webhook was set")

    async def delete_webhook(self, params: Params) -> Any:
        if params.get_bool("drop_pending_updates"):
            self.state.updates.drop_pending()
        was_set = bool(self.state.webhook_url)
        self.state.webhook_url = ""
        return Described(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def get_webhook_info(self, params: Params) -> Any:
        info: dict[str, Any] = {
            "url": self.state.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": self.state.updates.pending_count,
        }
        if self.state.webhook_url:
            info["max_connections"] = 40
        return info

    # ------------------------------------------------------------------ sending

    async def send_message(self, params: Params) -> Any:
        chat = self._chat(params)
        text = params.get_str("text")
        if not text:
            raise bad_request(TEXT_EMPTY)
        formatted = self._formatted(params, text, "entities")
        reply_to = self._reply_to(params, chat)
        markup = self._reply_markup(params)
        content: dict[str, Any] = {"text": formatted.text}
        if formatted.entities:
            content["entities"] = formatted.entities
        return self._deliver(chat, content, reply_to=reply_to, markup=markup)

    async def send_chat_action(self, params: Params) -> Any:
        chat = self._chat(params)
        action = (params.get_str("action") or "").strip()
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        if chat.blocked:
            raise forbidden(BOT_BLOCKED)
        chat.action = ChatAction(action, self.state.now(), self.monotonic() + CHAT_ACTION_SECONDS)
        self.state.outbox.notify()
        return True

    def _chat(self, params: Params) -> PrivateChat:
        raw = (params.get_str("chat_id") or "").strip()
        if not raw:
            raise bad_request("chat_id is empty")
        try:
            chat_id = int(raw)
        except ValueError:
            # "@username" addresses public groups and channels only, never private chats.
            raise bad_request(CHAT_NOT_FOUND) from None
        chat = self.state.chats.get(chat_id)
        if chat is None:
            raise bad_request(CHAT_NOT_FOUND)
        return chat

    def _formatted(self, params: Params, text: str, entities_name: str) -> formatting.FormattedText:
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
        try:
            return formatting.finalize(parsed.text, parsed.entities)
        except formatting.TextEmpty:
            raise bad_request(TEXT_EMPTY) from None
        except formatting.TextTooLong:
            raise bad_request(TEXT_TOO_LONG) from None

    def _reply_to(self, params: Params, chat: PrivateChat) -> dict[str, Any] | None:
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
        found = chat.messages.get(message_id)
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
            raise bad_request(
                'can\'t parse reply keyboard markup: "inline_keyboard" must be an array'
            )
        return {"inline_keyboard": keyboard}

    def _deliver(
        self,
        chat: PrivateChat,
        content: dict[str, Any],
        *,
        reply_to: dict[str, Any] | None = None,
        markup: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The common tail of every send method: blocked check, rate limits, storing, waking."""
        if chat.blocked:
            raise forbidden(BOT_BLOCKED)
        retry_after = self.limiter.acquire(chat.id)
        if retry_after is not None:
            raise too_many_requests(retry_after)
        message: dict[str, Any] = {
            "message_id": chat.allocate_message_id(),
            "from": self.state.bot.as_user(),
            "chat": chat.client.as_chat(),
            "date": self.state.now(),
        }
        if reply_to is not None:
            message["reply_to_message"] = without_reply(reply_to)
        message.update(content)
        if markup is not None:
            message["reply_markup"] = markup
        chat.remember(message)
        chat.from_bot.append(message)
        del chat.from_bot[:-RETAINED_SENT_PER_CHAT]
        chat.action = None  # a client stops showing "typing..." once the message arrives
        self.state.outbox.notify()
        return message

    # ------------------------------------------------------------------ files

    async def get_file(self, params: Params) -> Any:
        file_id = (params.get_str("file_id") or "").strip()
        if not file_id:
            raise bad_request("file_id is empty")
        stored = self.state.files_by_id.get(file_id)
        if stored is None:
            raise bad_request("invalid file_id")
        if len(stored.content) > MAX_DOWNLOAD_SIZE:
            raise bad_request("file is too big")
        return stored.as_file()
