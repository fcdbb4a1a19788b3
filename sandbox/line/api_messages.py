"""Messaging endpoints: reply, push, message validation, quota, the loading animation.

Shapes from the reference and line-openapi's messaging-api.yml: ``ReplyMessageRequest``
(``replyToken``, ``messages`` 1..5, ``notificationDisabled``), ``PushMessageRequest`` (``to``,
``messages``, ``notificationDisabled``, ``customAggregationUnits``), ``sentMessages: [{"id",
"quoteToken"?}]``, ``MessageQuotaResponse`` (``type``: none|limited, ``value``),
``QuotaConsumptionResponse`` (``totalUsage``), ``ShowLoadingAnimationRequest`` (``chatId``,
``loadingSeconds`` 5..60 in steps of 5, default 20) answered ``202 {}``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .api import BotApiRouter, line_json
from .errors import (
    LOADING_MULTIPLE,
    LOADING_RANGE,
    LOADING_USER_ONLY,
    MAY_NOT_BE_EMPTY,
    MUST_BE_SPECIFIED,
    RETRY_KEY_ACCEPTED,
    LineError,
    detail,
    request_body_errors,
)
from .ids import GROUP_ID, ROOM_ID, USER_ID, UUID_HEX
from .jsonbody import Body, read_body
from .messages import MessageChecker
from .messaging import Messaging
from .state import Loading, SandboxState

log = logging.getLogger("sandbox.line.api")

DEFAULT_LOADING_SECONDS = 20


def chat_kind(chat_id: str) -> str | None:
    if USER_ID.fullmatch(chat_id):
        return "user"
    if GROUP_ID.fullmatch(chat_id):
        return "group"
    if ROOM_ID.fullmatch(chat_id):
        return "room"
    return None


def notification_disabled(body: Body) -> bool:
    value = body.data.get("notificationDisabled", False)
    if not isinstance(value, bool):
        raise body.invalid("notificationDisabled")
    return value


def required_string(body: Body, key: str, details: list[dict[str, str]]) -> str | None:
    value = body.data.get(key)
    if value is None:
        details.append(detail(key, MUST_BE_SPECIFIED))
        return None
    if not isinstance(value, str):
        raise body.invalid(key)
    if value == "":
        details.append(detail(key, MAY_NOT_BE_EMPTY))
        return None
    return value


class MessagingApi:
    def __init__(self, state: SandboxState, messaging: Messaging) -> None:
        self.state = state
        self.messaging = messaging

    def add_routes(self, app: web.Application, router: BotApiRouter) -> None:
        router.add(app, "POST", "/v2/bot/message/reply", self.reply)
        router.add(app, "POST", "/v2/bot/message/push", self.push)
        router.add(app, "POST", "/v2/bot/message/validate/reply", self.validate)
        router.add(app, "POST", "/v2/bot/message/validate/push", self.validate)
        router.add(app, "GET", "/v2/bot/message/quota", self.quota)
        router.add(app, "GET", "/v2/bot/message/quota/consumption", self.consumption)
        router.add(app, "POST", "/v2/bot/chat/loading/start", self.loading)

    # ------------------------------------------------------------------ sending

    async def reply(self, request: web.Request, request_id: str) -> web.Response:
        body = await read_body(request)
        details: list[dict[str, str]] = []
        token = required_string(body, "replyToken", details)
        known = self.state.reply_tokens.get(token or "")
        chat_id = known.chat_id if known is not None else None
        chat = self.state.chats.get(chat_id) if chat_id else None
        checker = MessageChecker(body, self.state, chat.kind if chat else None, chat_id)
        messages = checker.check(body.data.get("messages"))
        silent = notification_disabled(body)
        details += checker.details
        if details:
            raise request_body_errors(details)
        assert token is not None
        target = self.messaging.take_reply_token(token)
        sent = self.messaging.send(
            target, messages, via="reply", notification_disabled=silent, request_id=request_id
        )
        return line_json({"sentMessages": sent})

    async def push(self, request: web.Request, request_id: str) -> web.Response:
        key = request.headers.get("X-Line-Retry-Key")
        if key is not None:
            if not UUID_HEX.fullmatch(key):
                # guess: the UUID requirement is documented, the message text is not
                raise LineError(400, "The value for the 'X-Line-Retry-Key' header is invalid")
            accepted = self.messaging.accepted_retry(key)
            if accepted is not None:
                log.info("event=retry_key_conflict accepted_request_id=%s", accepted.request_id)
                raise LineError(
                    409,
                    RETRY_KEY_ACCEPTED,
                    extra={"sentMessages": [dict(m) for m in accepted.sent_messages]},
                    headers={"X-Line-Accepted-Request-Id": accepted.request_id},
                )
        body = await read_body(request)
        details: list[dict[str, str]] = []
        to = required_string(body, "to", details)
        kind = chat_kind(to) if to is not None else None
        if to is not None and kind is None:
            raise body.invalid("to")  # as LINE answers an id of the wrong shape
        checker = MessageChecker(body, self.state, kind, to)
        messages = checker.check(body.data.get("messages"))
        silent = notification_disabled(body)
        units = body.data.get("customAggregationUnits")
        if units is not None and (not isinstance(units, list) or not all(isinstance(u, str) for u in units)):
            raise body.invalid("customAggregationUnits")
        details += checker.details
        if details:
            raise request_body_errors(details)
        assert to is not None
        chat = self.messaging.push_target(to)
        count = self.messaging.recipients(chat)
        self.messaging.check_quota(count)
        sent = self.messaging.send(
            chat, messages, via="push", notification_disabled=silent, request_id=request_id
        )
        self.state.usage += count
        if key is not None:
            self.messaging.accept_retry(key, request_id, sent)
        return line_json({"sentMessages": sent})

    async def validate(self, request: web.Request, request_id: str) -> web.Response:
        """``validate/push`` and ``validate/reply``: "doesn't validate the values of the
        properties other than the messages property"."""
        body = await read_body(request)
        checker = MessageChecker(body, self.state, None, None)
        checker.check(body.data.get("messages"))
        checker.details = [d for d in checker.details if d["message"] != "Invalid quote token"]
        if checker.details:
            raise request_body_errors(checker.details)
        return line_json({})

    # ------------------------------------------------------------------ quota

    async def quota(self, request: web.Request, request_id: str) -> web.Response:
        return line_json(self.state.quota())

    async def consumption(self, request: web.Request, request_id: str) -> web.Response:
        return line_json({"totalUsage": self.state.usage})

    # ------------------------------------------------------------------ loading animation

    async def loading(self, request: web.Request, request_id: str) -> web.Response:
        body = await read_body(request)
        details: list[dict[str, str]] = []
        chat_id = body.data.get("chatId")
        if chat_id is None:
            details.append(detail("chatId", MUST_BE_SPECIFIED))
        elif not isinstance(chat_id, str):
            raise body.invalid("chatId")
        elif not USER_ID.fullmatch(chat_id):
            details.append(detail("chatId", LOADING_USER_ONLY))
        seconds: Any = body.data.get("loadingSeconds", DEFAULT_LOADING_SECONDS)
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise body.invalid("loadingSeconds")
        if not 5 <= seconds <= 60:
            details.append(detail("loadingSeconds", LOADING_RANGE))
        if seconds % 5:
            details.append(detail("loadingSeconds", LOADING_MULTIPLE))
        if details:
            raise request_body_errors(details)
        self._show_loading(chat_id, seconds)
        return line_json({}, status=202)

    def _show_loading(self, user_id: str, seconds: int) -> None:
        """202 either way; whether the user sees it depends on them ("Response", loading)."""
        user = self.state.users.get(user_id)
        reason = None
        if user is None:
            reason = "unknown user"
        elif user.relation == "blocked":
            reason = "blocked the account"
        elif user.relation != "friend":
            reason = "not a friend"
        elif not user.screen_open:
            reason = "chat screen not open"
        if user is None:
            log.info("event=loading_not_shown chat_id=%s reason=%r", user_id, reason)
            return
        chat = self.state.user_chat(user)
        now = self.state.now()
        loading = Loading(seconds, now, reason is None, reason)
        chat.loading_log.append(
            {"loadingSeconds": seconds, "requestedAt": now, "shown": reason is None, "reason": reason}
        )
        if reason is None:
            chat.loading = loading  # a second request overrides the remaining time
        self.state.changes.notify()
        log.info("event=loading_requested chat_id=%s seconds=%d shown=%s", user_id, seconds, reason is None)
