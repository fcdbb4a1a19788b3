"""Webhook event objects, built the way LINE's reference ("Webhook Event Objects") shows them.

Common properties: ``type``, ``mode`` (always ``active``: no module channels here), ``timestamp``
(ms), ``source``, ``webhookEventId`` (a ULID), ``deliveryContext.isRedelivery``. A
``replyToken`` is issued for the events LINE says "you can reply to": message, follow, join,
memberJoined — not for unfollow, leave, memberLeft or unsend. In group and room sources
``userId`` is given for message events (and unsend, as the reference's example shows), not for
join, leave, memberJoined or memberLeft.

A room (multi-person chat) gets its join event lazily: "A join event is sent when the first
event (for example when a user sends a message or is added to the multi-person chat) occurs
after your LINE Official Account is added."
"""

from __future__ import annotations

import logging
from typing import Any

from . import ids
from .state import Chat, ReplyToken, SandboxState
from .webhook import WebhookDispatcher

log = logging.getLogger("sandbox.line.events")

REPLYABLE = frozenset({"message", "follow", "join", "memberJoined", "postback"})
SOURCE_USER = frozenset({"message", "unsend", "postback"})


class Events:
    def __init__(self, state: SandboxState, webhooks: WebhookDispatcher) -> None:
        self.state = state
        self.webhooks = webhooks

    def emit(self, chat: Chat, type_: str, user_id: str | None = None, **fields: Any) -> dict[str, Any]:
        """Build one event in ``chat`` (by ``user_id`` for message/unsend in groups) and queue it."""
        if chat.kind == "room" and chat.pending_join and type_ != "join":
            chat.pending_join = False
            self.emit(chat, "join")
        now = self.state.now()
        ms = int(now * 1000)
        event: dict[str, Any] = {
            "type": type_,
            "mode": "active",
            "timestamp": ms,
            "source": chat.source(user_id if type_ in SOURCE_USER else None),
            "webhookEventId": ids.ulid(ms),
            "deliveryContext": {"isRedelivery": False},
        }
        if type_ in REPLYABLE:
            token = ids.reply_token()
            event["replyToken"] = token
            self.state.reply_tokens[token] = ReplyToken(token, chat.chat_id, now, event["webhookEventId"])
        event.update(fields)
        self.webhooks.enqueue(event)
        log.info(
            "event=webhook_event_queued type=%s chat=%s webhook_event_id=%s",
            type_,
            chat.chat_id,
            event["webhookEventId"],
        )
        return event

    def mark_sent(self, events: list[dict[str, Any]], redelivery: bool) -> None:
        """The dispatcher is about to POST ``events``: their reply tokens' minute starts now."""
        now = self.state.now()
        for event in events:
            token = self.state.reply_tokens.get(event.get("replyToken") or "")
            if token is not None:
                token.sent_at = now
                token.redelivered = token.redelivered or redelivery
