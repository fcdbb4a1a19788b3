"""Telegram text limits and offsets.

Telegram measures entity offsets and lengths in UTF-16 code units and caps a text at 4096
characters; these helpers keep both right for any script or emoji.
"""

from __future__ import annotations

from bridge import text_split

MAX_TEXT = 4096


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split into pieces of at most ``limit`` characters by :func:`bridge.text_split.split_text`
    (paragraph, then line, then word break, else a hard cut that keeps characters whole).

    Nothing is dropped: joining the pieces gives back the text (the whitespace at a cut stays at
    the end of the piece before it), which :func:`~bridge.networks.telegram.formatting.split_entities`
    needs to rebase entities. ``limit`` counts code points, not UTF-16 units: Telegram measures
    entities in UTF-16 but the message length in characters.
    """
    return text_split.split_text(text, limit, measure=len, keep_separators=True)
