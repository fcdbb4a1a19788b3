"""How a client's LINE app shows a chat, for the control API's ``GET`` endpoints.

Messages from the account are shown as sent (the message object, less nothing), with the
sandbox's marks: ``id`` and ``quoteToken`` as the API answered them, ``via`` (push or reply),
``quotes`` (the id of the message a quoteToken pointed at) and, for media, what the app got
when it fetched each URL (``media.original``/``media.preview``: state, HTTP status,
Content-Type, size, sha256, problem) and ``display``: ``pending``, ``shown`` or ``broken``.
Messages from clients are shown as their webhook carried them.
"""

from __future__ import annotations

import copy
from typing import Any

from .state import Chat, StoredMessage


def display(message: StoredMessage) -> str | None:
    if not message.media:
        return None
    if message.media_pending:
        return "pending"
    return "broken" if any(m.problem for m in message.media) else "shown"


def message_view(message: StoredMessage) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": message.id,
        "seq": message.seq,
        "type": message.type,
        "timestamp": message.timestamp,
        "from": "account" if message.from_account else message.sender,
    }
    if message.from_account:
        view["via"] = message.via
        view["quoteToken"] = message.quote_token
        view["notificationDisabled"] = message.notification_disabled
        view["delivered"] = message.delivered
        if message.quoted_id:
            view["quotes"] = message.quoted_id
        view["message"] = copy.deepcopy(message.content)
        if message.media:
            view["media"] = {m.role: m.describe() for m in message.media}
            view["display"] = display(message)
    else:
        view["message"] = copy.deepcopy(message.content)
        view["unsent"] = message.unsent
        view["contentDeleted"] = message.content_deleted
    return view


def loading_view(chat: Chat | None, now: float) -> dict[str, Any] | None:
    if chat is None or chat.loading is None:
        return None
    until = chat.loading.requested_at + chat.loading.seconds
    if now >= until:
        return None
    return {"loadingSeconds": chat.loading.seconds, "requestedAt": chat.loading.requested_at, "until": until}
