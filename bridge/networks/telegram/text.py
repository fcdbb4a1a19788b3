"""Telegram text limits and offsets.

Telegram measures entity offsets and lengths in UTF-16 code units and caps a text at 4096
characters; these helpers keep both right for any script or emoji.
"""

from __future__ import annotations

MAX_TEXT = 4096


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split into pieces of at most ``limit`` characters, preferring line then word breaks.

    Nothing is dropped: joining the pieces gives back the text (the break characters stay at the
    end of the piece before them).
    """
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n")
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit - 1
        pieces.append(rest[: cut + 1])
        rest = rest[cut + 1 :]
    pieces.append(rest)
    return pieces
