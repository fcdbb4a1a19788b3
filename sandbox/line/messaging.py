"""Sending: reply tokens, retry keys, the monthly quota, delivery into chats.

- **Reply tokens** (reference, "Reply token"): usable once; "within one minute after receiving
  the webhook" (``reply_token_validity``, 60 s); a token in a redelivered webhook is usable for
  that long after the redelivery, but not once "20 minutes have passed since the event occurred"
  (``reply_token_redelivery_limit``) nor if the original was used. Replies are free: "Sending
  methods that are not counted as message count: Reply messages".
- **Retry keys** ("Retrying an API request"): a push with an ``X-Line-Retry-Key`` already
  accepted within 24 hours (``retry_key_validity``) is not sent again; LINE answers 409, the
  accepted request's id in ``x-line-accepted-request-id`` and ``{"message": "The retry key is
  already accepted", "sentMessages": [the ids and quote tokens sent the first time]}``. After 24
  hours the key is new again. Only accepted (2xx) requests consume a key.
- **Quota** ("How to count the number of messages sent"): a push counts once per person it
  reaches — a group chat of five counts five, whatever the number of message objects; pushes
  that do not reach anyone (blocked users, non-friends) are not counted. When the target limit
  would be exceeded the push answers 429 ``You have reached your monthly limit.``
- **Non-friends** ("Conditions for sending push message"): a push to a user who blocked the
  account or never added it (and did not message it in the last 7 days) answers 200 with
  sentMessages but nobody receives it; a user id this channel has never seen answers 400
  ``Failed to send messages``, as does a group or room the account is not in.
"""

from __future__ import annotations

import logging
from typing import Any

from . import ids
from .errors import FAILED_TO_SEND, INVALID_REPLY_TOKEN, LineError, monthly_limit
from .media import MediaFetcher
from .messages import QUOTABLE
from .state import AcceptedRetry, Chat, ReplyToken, SandboxState, StoredMessage

log = logging.getLogger("sandbox.line.messaging")


class Messaging:
    def __init__(
        self,
        state: SandboxState,
        fetcher: MediaFetcher,
        *,
        reply_token_validity: float = 60.0,
        reply_token_redelivery_limit: float = 20 * 60.0,
        retry_key_validity: float = 24 * 3600.0,
    ) -> None:
        self.state = state
        self.fetcher = fetcher
        self.reply_token_validity = reply_token_validity
        self.reply_token_redelivery_limit = reply_token_redelivery_limit
        self.retry_key_validity = retry_key_validity

    # ------------------------------------------------------------------ reply tokens

    def token_usable(self, token: ReplyToken) -> bool:
        now = self.state.now()
        if token.used or token.sent_at is None:
            return False
        if now - token.sent_at > self.reply_token_validity:
            return False
        return not (token.redelivered and now - token.event_time > self.reply_token_redelivery_limit)

    def take_reply_token(self, value: str) -> Chat:
        """The chat a usable reply token answers; the token is used up. 400 otherwise."""
        token = self.state.reply_tokens.get(value)
        if token is None or not self.token_usable(token):
            raise LineError(400, INVALID_REPLY_TOKEN)
        chat = self.state.chats.get(token.chat_id)
        if chat is None or not chat.bot_member:
            raise LineError(400, INVALID_REPLY_TOKEN)
        token.used = True
        return chat

    # ------------------------------------------------------------------ retry keys

    def accepted_retry(self, key: str) -> AcceptedRetry | None:
        accepted = self.state.retry_keys.get(key.lower())
        if accepted is None:
            return None
        if self.state.now() - accepted.accepted_at > self.retry_key_validity:
            del self.state.retry_keys[key.lower()]
            return None
        return accepted

    def accept_retry(self, key: str, request_id: str, sent: list[dict[str, str]]) -> None:
        self.state.retry_keys[key.lower()] = AcceptedRetry(self.state.now(), request_id, sent)

    # ------------------------------------------------------------------ targets

    def push_target(self, to: str) -> Chat:
        """The chat ``to`` names, or LINE's 400 for ids this channel cannot send to."""
        if to.startswith("U"):
            user = self.state.users.get(to)
            if user is None:
                raise LineError(400, FAILED_TO_SEND)
            return self.state.user_chat(user)
        chat = self.state.chats.get(to)
        if chat is None or chat.kind == "user" or not chat.bot_member:
            raise LineError(400, FAILED_TO_SEND)
        return chat

    def reaches(self, chat: Chat) -> bool:
        if chat.kind == "user":
            return self.state.can_push(self.state.users[chat.chat_id])
        return chat.bot_member

    def recipients(self, chat: Chat) -> int:
        """How many messages a push to ``chat`` counts: its people, or 0 if none receives it."""
        if not self.reaches(chat):
            return 0
        return 1 if chat.kind == "user" else len(chat.members)

    def check_quota(self, count: int) -> None:
        limit = self.state.quota_limit
        if limit is not None and count > 0 and self.state.usage + count > limit:
            raise monthly_limit()

    # ------------------------------------------------------------------ sending

    def send(
        self,
        chat: Chat,
        messages: list[dict[str, Any]],
        *,
        via: str,
        notification_disabled: bool,
        request_id: str,
    ) -> list[dict[str, str]]:
        """Put ``messages`` into ``chat`` (if it is reached) and answer ``sentMessages``."""
        delivered = self.reaches(chat) if via == "push" else self._reply_reaches(chat)
        now_ms = self.state.clock.ms()
        sent: list[dict[str, str]] = []
        for message in messages:
            kind = message["type"]
            quote = ids.quote_token() if kind in QUOTABLE else None
            quoted = self.state.quote_tokens.get(message.get("quoteToken") or "")
            stored = StoredMessage(
                seq=self.state.next_seq(),
                id=ids.message_id(),
                chat_id=chat.chat_id,
                sender="account",
                type=kind,
                content=message,
                timestamp=now_ms,
                quote_token=quote,
                via=via,
                delivered=delivered,
                notification_disabled=notification_disabled,
                quoted_id=quoted.id if quoted is not None else None,
                request_id=request_id,
            )
            self.state.add_message(stored)
            if delivered:
                self.fetcher.schedule(stored)
            entry = {"id": stored.id}
            if quote is not None:
                entry["quoteToken"] = quote
            sent.append(entry)
        if delivered and chat.loading is not None:
            chat.loading = None  # "disappear ... when a new message arrives from your LINE Official Account"
        log.info(
            "event=messages_sent via=%s chat=%s count=%d delivered=%s request_id=%s",
            via,
            chat.chat_id,
            len(messages),
            delivered,
            request_id,
        )
        return sent

    def _reply_reaches(self, chat: Chat) -> bool:
        if chat.kind == "user":
            return self.state.users[chat.chat_id].relation != "blocked"
        return chat.bot_member
