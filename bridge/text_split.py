"""Cutting a long text into pieces that fit a network's message limit: one rule for every network.

A bridged message longer than a network accepts (Telegram and WhatsApp: 4096) goes out as several
messages, and where the cuts fall decides how readable they are. So each cut is made at the most
natural boundary that still leaves the piece at least half full:

1. a paragraph break (a whitespace run holding two or more newlines),
2. else a line break,
3. else a word break (any other whitespace, but never a no-break space: U+00A0, U+2007, U+202F
   are there precisely to hold two words together);
4. if the second half of the window has none of these, the last whitespace anywhere in it (a
   short piece reads better than a word cut in two);
5. only then a hard cut, moved back a little (at most 32 code points) rather than split a visible
   character: a mark from its base, an emoji from its modifier, variation selector, tag or ZWJ
   sequence, a flag's two regional indicators. A hard cut never splits a UTF-16 surrogate pair
   (possible in a str decoded with ``surrogatepass``), even when no clean cut is near.

What the networks differ in is a parameter each:

* ``measure`` counts a piece's length, and every piece measures at most ``limit``. The default,
  ``len``, counts code points. It must be monotone (a longer prefix never measures less); the
  cut's preference for "the second half" is measured with it too.
* ``keep_separators``: Telegram rebases entity offsets piece by piece, so its pieces must join
  back to the text exactly; the whitespace at a cut then stays at the end of the piece before it
  (as much of it as fits; any rest starts the next piece). WhatsApp has nothing to rebase and
  drops that whitespace instead (``keep_separators=False``): no piece starts or ends with the
  whitespace of a cut, and no piece is blank (an all-blank text that does not fit gives none).

Either way a text that fits is returned as it is, as the only piece, and no piece is empty.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["split_text"]

#: Where a text may be cut: whitespace, except the no-break spaces.
_BREAK = re.compile(r"[^\S\u00a0\u2007\u202f]+")
#: A hard cut backs off at most this many code points looking for a clean place.
_BACKOFF = 32


def split_text(
    text: str,
    limit: int,
    *,
    measure: Callable[[str], int] = len,
    keep_separators: bool = False,
) -> list[str]:
    """``text`` in pieces of at most ``limit`` by ``measure``, cut as the module docstring says.

    Raises ValueError if ``limit`` is below 1, or if a single character (a surrogate pair counting
    as one) does not fit in ``limit`` where a cut is needed.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    n = len(text)
    if _fit(text, 0, limit, measure) == n:
        return [text]
    pieces: list[str] = []
    pos = 0
    while (end := _fit(text, pos, limit, measure)) < n:
        cut, resume = _cut(text, pos, end, limit, measure, keep_separators)
        if keep_separators:
            pieces.append(text[pos:resume])
        elif not text[pos:cut].isspace():  # e.g. a whitespace run longer than a piece, at the start
            pieces.append(text[pos:cut])
        pos = resume
    if keep_separators or (pos < n and not text[pos:].isspace()):
        pieces.append(text[pos:])
    return pieces


def _fit(text: str, pos: int, budget: int, measure: Callable[[str], int]) -> int:
    """The largest ``end`` with ``measure(text[pos:end]) <= budget`` (``budget >= 0``)."""
    n = len(text)
    if measure is len:
        return min(n, pos + budget)
    lo, step = pos, max(budget, 1)  # text[pos:lo] fits; gallop, then bisect
    while True:
        hi = min(n, lo + step)
        if measure(text[pos:hi]) > budget:
            break
        if hi == n:
            return n
        lo, step = hi, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if measure(text[pos:mid]) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def _cut(
    text: str, pos: int, end: int, limit: int, measure: Callable[[str], int], keep: bool
) -> tuple[int, int]:
    """Where the piece starting at ``pos`` ends (``cut``) and the next one starts (``resume``);
    ``text[cut:resume]`` is the whitespace at the cut. ``text[pos:end]`` is the most that fits.

    With ``keep`` the piece is ``text[pos:resume]``, so the whitespace must fit too: only runs
    inside the window count, clipped to it. Dropped whitespace need not fit, so a run starting
    right after the window is a cut too, and the whole run goes.
    """
    if end == pos:
        raise ValueError(f"limit {limit} cannot hold the character at {pos}")
    half = pos if limit // 2 == 0 else _fit(text, pos, limit // 2 - 1, measure) + 1
    best: dict[int, re.Match[str]] = {}  # 2/1/0: paragraph/line/word in the second half; -1: before
    for m in _BREAK.finditer(text, pos, end if keep else end + 1):
        if m.start() == pos:
            continue  # nothing before it to send
        rank = min(m.group().count("\n"), 2) if m.start() >= half else -1
        best[rank] = m
    for rank in (2, 1, 0, -1):
        if (m := best.get(rank)) is not None:
            return m.start(), m.end() if keep else _run_end(text, m.start())
    cut = end
    while cut > max(pos + 1, end - _BACKOFF) and _unsafe_cut(text, cut):
        cut -= 1
    if _unsafe_cut(text, cut):  # no clean cut nearby: at least keep a surrogate pair whole
        cut = end - _inside_pair(text, end)
        if cut == pos:
            raise ValueError(f"limit {limit} cannot hold the character at {pos}")
    return cut, cut if keep else _run_end(text, cut)  # (a blank start longer than a piece)


def _run_end(text: str, i: int) -> int:
    """The end of the whitespace run starting at ``i`` (``i`` itself if there is none)."""
    m = _BREAK.match(text, i)
    return m.end() if m else i


def _inside_pair(text: str, i: int) -> bool:
    """Whether ``text[i - 1:i + 1]`` is a UTF-16 surrogate pair."""
    return "\udc00" <= text[i] <= "\udfff" and "\ud800" <= text[i - 1] <= "\udbff"


def _is_regional(c: str) -> bool:
    return "\U0001f1e6" <= c <= "\U0001f1ff"


def _unsafe_cut(text: str, i: int) -> bool:
    """Whether cutting before ``text[i]`` (``0 < i < len(text)``) would split one visible
    character: a surrogate pair, a mark (combining or spacing) or variation selector from its
    base, an emoji from its skin tone or tag characters, a ZWJ sequence, or a flag's pair of
    regional indicators."""
    c, before = text[i], text[i - 1]
    if unicodedata.category(c) in ("Mn", "Mc", "Me") or "\u200d" in (c, before) or _inside_pair(text, i):
        return True
    if "\U0001f3fb" <= c <= "\U0001f3ff" or "\U000e0020" <= c <= "\U000e007f":
        return True
    if _is_regional(c) and _is_regional(before):
        run = 0  # regional indicators pair up from the start of their run
        while i - run - 1 >= 0 and _is_regional(text[i - run - 1]):
            run += 1
        return run % 2 == 1
    return False
