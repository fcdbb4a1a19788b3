"""Reactions as the Bot API documents them: ``ReactionTypeEmoji`` with one of Telegram's
allowed reaction emoji, ``ReactionTypeCustomEmoji`` and ``ReactionTypePaid``.

The emoji list is the one in the ``ReactionTypeEmoji`` documentation. Clients send some of them
with or without the U+FE0F variation selector; both spellings are accepted and the documented
one is stored.
"""

from __future__ import annotations

from typing import Any

ALLOWED_REACTION_EMOJI: tuple[str, ...] = (
    "❤",
    "👍",
    "👎",
    "🔥",
    "🥰",
    "👏",
    "😁",
    "🤔",
    "🤯",
    "😱",
    "🤬",
    "😢",
    "🎉",
    "🤩",
    "🤮",
    "💩",
    "🙏",
    "👌",
    "🕊",
    "🤡",
    "🥱",
    "🥴",
    "😍",
    "🐳",
    "❤\u200d🔥",
    "🌚",
    "🌭",
    "💯",
    "🤣",
    "⚡",
    "🍌",
    "🏆",
    "💔",
    "🤨",
    "😐",
    "🍓",
    "🍾",
    "💋",
    "🖕",
    "😈",
    "😴",
    "😭",
    "🤓",
    "👻",
    "👨\u200d💻",
    "👀",
    "🎃",
    "🙈",
    "😇",
    "😨",
    "🤝",
    "✍",
    "🤗",
    "🫡",
    "🎅",
    "🎄",
    "☃",
    "💅",
    "🤪",
    "🗿",
    "🆒",
    "💘",
    "🙉",
    "🦄",
    "😘",
    "💊",
    "🙊",
    "😎",
    "👾",
    "🤷\u200d♂",
    "🤷",
    "🤷\u200d♀",
    "😡",
)
_BY_BARE_FORM = {emoji.replace("\ufe0f", ""): emoji for emoji in ALLOWED_REACTION_EMOJI}
BOT_MAX_REACTIONS = 1  # "as non-premium users, bots can set up to one reaction per message"
CLIENT_MAX_REACTIONS = 3  # a Telegram Premium client may leave up to three


class ReactionError(ValueError):
    """``args[0]`` is the Bot API detail: REACTION_INVALID, or a JSON parse complaint."""


def canonical_emoji(emoji: Any) -> str | None:
    """The documented spelling of an allowed reaction emoji, or None if it is not one."""
    if not isinstance(emoji, str):
        return None
    return _BY_BARE_FORM.get(emoji.replace("\ufe0f", ""))


def parse_reactions(raw: Any, present: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check a bot's ``reaction`` list; ``present`` are reactions already on the message (a
    custom emoji may be used only if it is already there, bots may not pay stars)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ReactionError("can't parse reaction types JSON object")
    parsed: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise ReactionError("can't parse reaction types JSON object")
        kind = item["type"]
        if kind == "emoji":
            emoji = canonical_emoji(item.get("emoji"))
            if emoji is None:
                raise ReactionError("REACTION_INVALID")
            reaction = {"type": "emoji", "emoji": emoji}
        elif kind == "custom_emoji":
            custom_id = item.get("custom_emoji_id")
            reaction = {"type": "custom_emoji", "custom_emoji_id": custom_id}
            if not isinstance(custom_id, str) or reaction not in present:
                raise ReactionError("REACTION_INVALID")
        elif kind == "paid":
            raise ReactionError("REACTION_INVALID")
        else:
            raise ReactionError("can't parse reaction types JSON object")
        if reaction not in parsed:
            parsed.append(reaction)
    return parsed
