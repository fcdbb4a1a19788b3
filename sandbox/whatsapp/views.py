"""How the client's phone shows a chat, for the control API's ``GET`` endpoints.

Business messages are shown as received (``text: {"body", "preview_url"}``, media with the
``media_id`` the client can download, templates rendered), with their delivery ``status``.
Client messages are shown as their webhook carried them, plus the sandbox's marks
(``read_by_business``, ``revoked``, ``edits``).
"""

from __future__ import annotations

import copy
from typing import Any

from .media import MEDIA_KINDS, MediaStore
from .messaging import media_view
from .state import Chat, StoredMessage


def message_view(
    chat: Chat, message: StoredMessage, media: MediaStore, *, with_sender: bool = False
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": message.id,
        "seq": message.seq,
        "type": message.type,
        "timestamp": message.timestamp,
    }
    if with_sender:
        view["sender"] = message.sender
    if message.type == "unsupported":
        view["errors"] = copy.deepcopy(message.extra.get("errors", []))
    else:
        content = copy.deepcopy(message.content)
        if message.sender == "business" and message.type in MEDIA_KINDS:
            assert isinstance(content, dict)
            content.update(media_view(media.stored(message.media_id) if message.media_id else None))
        view[message.type] = content
    if message.context_id is not None:
        view["context"] = {"id": message.context_id, "from": message.context_from}
    if message.reactions:
        view["reactions"] = [
            {"from": side, "emoji": emoji} for side, emoji in sorted(message.reactions.items())
        ]
    if message.sender == "business":
        view["status"] = message.status
        if message.errors:
            view["errors"] = copy.deepcopy(message.errors)
    else:
        view["read_by_business"] = message.read_by_business
        view["revoked"] = message.revoked
        view["edits"] = copy.deepcopy(message.edits)
    return view


def typing(chat: Chat | None, now: int) -> bool:
    return chat is not None and chat.typing_until is not None and now < chat.typing_until
