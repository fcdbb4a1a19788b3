"""The one splitting rule both networks use (bridge.text_split): where it cuts, what it keeps or
drops at a cut, its length measures, and properties over all of them."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.networks.telegram.text import split_text as telegram_split
from bridge.networks.whatsapp.formatting import split_text as whatsapp_split
from bridge.text_split import split_text

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_BREAK = "\u00a0\u2007\u202f"
PAIR = "\ud83d\ude00"  # 😀 as two UTF-16 code units in a str, as a surrogatepass decode gives


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def both(text: str, limit: int, **kw: Callable[[str], int]) -> tuple[list[str], list[str]]:
    """The pieces with the whitespace at the cuts kept, and with it dropped."""
    return (
        split_text(text, limit, keep_separators=True, **kw),
        split_text(text, limit, keep_separators=False, **kw),
    )


# --- where it cuts ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "  a  ", "a\n\nb"])
def test_a_text_that_fits_is_the_only_piece_as_it_is(text: str) -> None:
    assert both(text, 10) == ([text], [text])


def test_paragraph_then_line_then_word_then_hard() -> None:
    para = "a" * 60 + "\n\n" + "b" * 30 + "\n" + "c" * 5
    assert both(para, 95) == (
        ["a" * 60 + "\n\n", "b" * 30 + "\n" + "c" * 5],
        ["a" * 60, "b" * 30 + "\n" + "c" * 5],
    )
    # The paragraph break is in the first half of the window: the line break wins.
    lines = "a" * 40 + "\n\n" + "b" * 40 + "\n" + "c" * 40
    keep, drop = both(lines, 100)
    assert keep == ["a" * 40 + "\n\n" + "b" * 40 + "\n", "c" * 40]
    assert drop == ["a" * 40 + "\n\n" + "b" * 40, "c" * 40]
    assert both("aaaa bbbb cccc", 6) == (["aaaa ", "bbbb ", "cccc"], ["aaaa", "bbbb", "cccc"])
    assert both("x" * 10, 4) == (["xxxx", "xxxx", "xx"], ["xxxx", "xxxx", "xx"])


def test_any_whitespace_is_a_word_break_but_a_no_break_space() -> None:
    assert both("aaaa\tbbbb\u3000cccc", 6) == (["aaaa\t", "bbbb\u3000", "cccc"], ["aaaa", "bbbb", "cccc"])
    # The no-break space in the second half is not a cut: the space before it is.
    assert both("aa bbbbbb\u00a0cccc", 12) == (["aa ", "bbbbbb\u00a0cccc"], ["aa", "bbbbbb\u00a0cccc"])


def test_a_word_break_in_the_first_half_beats_a_hard_cut() -> None:
    assert both("a babaa", 5) == (["a ", "babaa"], ["a", "babaa"])
    assert both("aaa bb cccccc", 8) == (["aaa bb ", "cccccc"], ["aaa bb", "cccccc"])


def test_dropped_whitespace_may_lie_past_the_window_kept_must_fit() -> None:
    keep, drop = both("aaaa     bbbb", 4)
    assert drop == ["aaaa", "bbbb"]
    assert keep == ["aaaa", "    ", " bbb", "b"] and "".join(keep) == "aaaa     bbbb"


def test_whitespace_longer_than_a_piece() -> None:
    keep, drop = both(" " * 10 + "x", 4)
    assert keep == ["    ", "    ", "  x"]
    assert drop == ["x"]
    assert split_text(" " * 10, 4) == []  # an all-blank text that does not fit gives nothing to send


# --- length measures --------------------------------------------------------------------------


def test_the_measure_sets_what_the_limit_counts() -> None:
    emoji = "😀" * 5
    assert split_text(emoji, 5) == [emoji]
    assert split_text(emoji, 4, measure=utf16_units) == ["😀😀", "😀😀", "😀"]
    assert split_text("😀 😀 😀", 9, measure=utf8_bytes) == ["😀 😀", "😀"]
    # Telegram's own test (counting code points) gives ["😀😀😀\n", "😀😀"] for this.
    assert both("😀😀😀\n😀😀", 4, measure=utf16_units) == (["😀😀", "😀\n", "😀😀"], ["😀😀", "😀", "😀😀"])


def test_a_generic_measure_finds_the_window_quickly() -> None:
    text = "word 😀 " * 50_000
    started = time.monotonic()
    pieces = split_text(text, 4096, measure=utf16_units)
    assert time.monotonic() - started < 5
    assert all(utf16_units(p) <= 4096 for p in pieces) and len(pieces) == -(-utf16_units(text) // 4090)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")


# --- visible characters stay whole ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "pieces"),
    [
        ("aaae\u0301b", 4, ["aaa", "e\u0301b"]),  # a combining mark
        ("aaa\u0915\u093fb", 4, ["aaa", "\u0915\u093fb"]),  # a spacing mark (Devanagari कि)
        ("aaa\u0915\u0941b", 4, ["aaa", "\u0915\u0941b"]),  # a mark of combining class 0 (कु)
        ("aaa1\ufe0f\u20e3b", 5, ["aaa", "1\ufe0f\u20e3b"]),  # a keycap: selector, enclosing mark
        ("aaa👍🏽b", 4, ["aaa", "👍🏽b"]),  # a skin tone
        ("aa👨\u200d👩", 4, ["aa", "👨\u200d👩"]),  # a ZWJ sequence
        ("a🇩🇪🇫🇷", 2, ["a", "🇩🇪", "🇫🇷"]),  # flags pair their regional indicators
        ("a🏴\U000e0067\U000e0062\U000e007f", 4, ["a", "🏴\U000e0067\U000e0062\U000e007f"]),  # a tag sequence
    ],
)
def test_a_hard_cut_keeps_a_visible_character_whole(text: str, limit: int, pieces: list[str]) -> None:
    assert both(text, limit) == (pieces, pieces)


def test_a_hard_cut_never_splits_a_surrogate_pair() -> None:
    text = "a" + PAIR * 10
    for pieces in both(text, 4) + both(text, 5, measure=utf16_units):
        assert "".join(pieces) == text
        assert all(not p.startswith("\ude00") and not p.endswith("\ud83d") for p in pieces)


def test_with_no_clean_cut_near_it_cuts_anyway() -> None:
    text = "e" + "\u0301" * 80
    for pieces in both(text, 10):
        assert "".join(pieces) == text and all(len(p) <= 10 for p in pieces)


def test_a_limit_that_cannot_hold_a_character_is_refused() -> None:
    with pytest.raises(ValueError):
        split_text("abc", 0)
    with pytest.raises(ValueError):
        split_text("😀😀", 1, measure=utf16_units)
    with pytest.raises(ValueError):
        split_text(PAIR * 2, 1)
    assert split_text("😀", 2, measure=utf16_units) == ["😀"]


# --- the networks -----------------------------------------------------------------------------


def test_telegram_keeps_the_separators_whatsapp_drops_them() -> None:
    text = "a" * 60 + "\n\n" + "b" * 30 + "\n" + "c" * 5 + " 😀" * 20
    assert telegram_split(text, 50) == split_text(text, 50, keep_separators=True)
    assert whatsapp_split(text, 50) == split_text(text, 50)
    with pytest.raises(ValueError):
        whatsapp_split("abc", 1)  # a part must hold a surrogate pair


# --- properties -------------------------------------------------------------------------------

TOKENS = ["a", "bb", "ccc", "漢", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\u3000", "\u00a0", "\u202f"]
TOKENS += ["😀", PAIR, "e\u0301", "\u0941", "\u200d", "👍🏽", "🇩🇪", "\ufe0f"]
texts = st.lists(st.sampled_from(TOKENS), max_size=80).map("".join)
measures = st.sampled_from([len, utf16_units, utf8_bytes])


def ink(text: str) -> str:
    """The text's non-whitespace content."""
    return "".join(c for c in text if not c.isspace())


def breakable(c: str) -> bool:
    return c.isspace() and c not in NO_BREAK


def splits_pair(text: str, i: int) -> bool:
    return 0 < i < len(text) and "\ud800" <= text[i - 1] <= "\udbff" and "\udc00" <= text[i] <= "\udfff"


@PROPERTY
@given(texts, st.integers(1, 40), measures, st.booleans())
def test_pieces_fit_and_keep_the_text_in_order(
    text: str, limit: int, measure: Callable[[str], int], keep: bool
) -> None:
    try:
        pieces = split_text(text, limit, measure=measure, keep_separators=keep)
    except ValueError:  # only when one character alone is over the limit
        units = text.replace(PAIR, "\0")
        assert any(measure(PAIR if c == "\0" else c) > limit for c in units)
        return
    assert all(measure(p) <= limit for p in pieces)
    assert ink("".join(pieces)) == ink(text)
    if measure(text) <= limit:
        assert pieces == [text]
        return
    assert all(pieces)
    if keep:
        assert "".join(pieces) == text
        ends = [sum(len(p) for p in pieces[: i + 1]) for i in range(len(pieces))]
        assert not any(splits_pair(text, i) for i in ends)
        return
    pos = 0
    for i, piece in enumerate(pieces):
        assert ink(piece), "no blank piece"
        assert i == 0 or not breakable(piece[0])
        assert i == len(pieces) - 1 or not breakable(piece[-1])
        found = text.find(piece, pos)
        assert found >= pos and all(c.isspace() for c in text[pos:found]), "only the cut's whitespace goes"
        assert not splits_pair(text, found) and not splits_pair(text, found + len(piece))
        pos = found + len(piece)
    assert all(c.isspace() for c in text[pos:])
