"""The Bot API methods the sandbox implements, with the official parameters, checks, error
wording and result shapes.

Each handler takes the call's :class:`Params` and returns the ``result`` value (or raises
:class:`ApiError`). Every send method goes through :meth:`BotApi._admit` (blocked user, group
membership, business window, rate limits) and :meth:`BotApi._store_sent`, so the rules apply to
sendMessage, sendPhoto, ... in one place. Media, edits and business methods live in mixins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .api_base import Handler
from .api_business import BusinessMethods
from .api_edit import EditMethods
from .api_media import MediaMethods
from .errors import TEXT_EMPTY, ApiError, bad_request
from .params import Params
from .ratelimit import SendRateLimiter
from .state import CHAT_ACTION_SECONDS, MAX_DOWNLOAD_SIZE, ChatAction, SandboxState
from .webhook import WebhookDelivery, WebhookMethods, WebhookSettings

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


class BotApi(MediaMethods, EditMethods, BusinessMethods, WebhookMethods):
    def __init__(
        self,
        state: SandboxState,
        limiter: SendRateLimiter,
        monotonic: Callable[[], float],
        webhook_settings: WebhookSettings | None = None,
    ) -> None:
        self.state = state
        self.limiter = limiter
        self.monotonic = monotonic
        self.webhook = WebhookDelivery(state, webhook_settings or WebhookSettings(), self.execute)
        handlers: dict[str, Handler] = {
            "getMe": self.get_me,
            "logOut": self.log_out,
            "close": self.close,
            "sendMessage": self.send_message,
            "sendChatAction": self.send_chat_action,
            "getFile": self.get_file,
            **self.webhook_handlers(),
            **self.media_handlers(),
            **self.edit_handlers(),
            **self.business_handlers(),
        }
        # Method names are case-insensitive on the official server.
        self._methods = {name.lower(): (name, handler) for name, handler in handlers.items()}

    def lookup(self, method: str) -> tuple[str, Handler] | None:
        """The canonical name and handler for ``method``, or None if unknown."""
        return self._methods.get(method.lower())

    async def execute(self, method: str, values: dict[str, Any]) -> Any:
        """Run a Bot API call given as JSON values (a webhook's answer can carry one)."""
        found = self.lookup(method)
        if found is None:
            raise ApiError(404, "Not Found")
        return await found[1](Params(values=values))

    # ------------------------------------------------------------------ bot identity

    async def get_me(self, params: Params) -> Any:
        return self.state.bot.get_me()

    async def log_out(self, params: Params) -> Any:
        return True

    async def close(self, params: Params) -> Any:
        return True

    # ------------------------------------------------------------------ sending

    async def send_message(self, params: Params) -> Any:
        target = self._target(params)
        text = params.get_str("text")
        if not text:
            raise bad_request(TEXT_EMPTY)
        formatted = self._formatted(params, text, "entities")
        reply_to = self._reply_to(params, target.chat)
        markup = self._reply_markup(params)
        self._admit(target)
        content: dict[str, Any] = {"text": formatted.text}
        if formatted.entities:
            content["entities"] = formatted.entities
        return self._store_sent(target, content, params, reply_to=reply_to, markup=markup)

    async def send_chat_action(self, params: Params) -> Any:
        target = self._target(params)
        action = (params.get_str("action") or "").strip()
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._check_writable(target)
        target.chat.action = ChatAction(action, self.state.now(), self.monotonic() + CHAT_ACTION_SECONDS)
        self.state.outbox.notify()
        return True

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
