"""How messages look on the other side of the control API: what a client's (or a group
member's) phone shows, in Bot API field names, with the sandbox's own marks added
(``deleted``, ``reactions``, ``read_by_business``, ``sender``).
"""

from __future__ import annotations

import copy
from typing import Any

from .state import StoredMessage

_INTERNAL_KEYS = ("from", "chat", "reply_to_message")


def message_view(
    stored: StoredMessage, *, with_sender: bool = False, with_from: bool = False
) -> dict[str, Any]:
    """Every Bot API field of the message except ``from``/``chat`` (the chat is the URL's), with
    ``reply_to_message`` flattened to ``reply_to_message_id``."""
    data = stored.data
    view: dict[str, Any] = {
        key: copy.deepcopy(value) for key, value in data.items() if key not in _INTERNAL_KEYS
    }
    if with_from and "from" in data:
        view["from"] = copy.deepcopy(data["from"])
    if "reply_to_message" in data:
        view["reply_to_message_id"] = data["reply_to_message"]["message_id"]
    if with_sender:
        view["sender"] = stored.sender
    if stored.deleted:
        view["deleted"] = True
    if stored.read_by_business:
        view["read_by_business"] = True
    reactions = [
        {"user_id": user_id, **reaction}
        for user_id, listed in stored.reactions.items()
        for reaction in listed
    ]
    if reactions:
        view["reactions"] = reactions
    return view
