"""Telegram text + entities ⇄ Matrix ``org.matrix.custom.html``.

Pure functions, no I/O: the translator and the sender call them with plain dicts in the Bot
API's entity shape (``{"type", "offset", "length", "url"?, "user"?, "language"?}``).

Two things drive the design:

* Everything that comes from a remote client is untrusted. Telegram text is always escaped
  before it becomes HTML, only an allowlist of tags and attributes is ever produced, and link
  targets are kept only for harmless schemes. Entities are never trusted either: malformed,
  overlapping or out-of-range ones are clamped or dropped, never a crash.
* A message should look the same on both sides, and our own HTML should read back as what we
  wrote. Telegram keeps every space, HTML collapses them, so spaces that a browser would swallow
  are written as ``&nbsp;`` and read back as plain spaces; block elements (quote, code block)
  carry their own line breaks, so the newline next to them is not written twice.

Telegram counts offsets in UTF-16 code units; Python strings count code points. Conversions
go through :func:`_utf16_bounds`, and an offset that falls inside a surrogate pair widens the
entity to the whole character.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from html import escape, unescape
from html.entities import html5 as _HTML5_ENTITIES
from html.parser import HTMLParser
from itertools import accumulate
from typing import Any

from bridge.networks.telegram.text import split_text

__all__ = ["MatrixText", "matrix_to_telegram", "split_entities", "telegram_to_matrix"]


@dataclass(frozen=True)
class MatrixText:
    """A message body for Matrix: the plain text and, when it has formatting, its HTML."""

    body: str
    html: str | None


# --- shared helpers ---------------------------------------------------------------------------

#: Whitespace as HTML sees it (collapsible outside <pre>); other Unicode spaces are plain text.
_HTML_WS = " \t\n\r\f"
_WS_SPLIT = re.compile(r"([ \t\n\r\f]+)")
#: Schemes a link may carry in either direction: anything else (javascript:, data:, file:...)
#: is dropped, keeping the link's text.
_SAFE_URL = re.compile(r"(?i)^(?:https?|mailto|tg|tel):")
_ANY_SCHEME_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_MATRIX_TO = re.compile(r"(?i)^https?://matrix\.to/#/")
_LANGUAGE_JUNK = re.compile(r"[^A-Za-z0-9_+-]")
_USERNAME = re.compile(r"^@([A-Za-z0-9_]{1,64})$")
_PHONE_JUNK = re.compile(r"[^0-9+]")


def _utf16_len(text: str) -> int:
    """UTF-16 length that tolerates lone surrogates (``text.utf16_len`` would raise on them)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _utf16_bounds(text: str) -> list[int]:
    """``bounds[i]`` is the UTF-16 offset of ``text[i]``; ``bounds[len(text)]`` the total."""
    return [0, *accumulate(2 if ord(c) > 0xFFFF else 1 for c in text)]


def _int(value: Any) -> int | None:
    """The value as an int, or None: bools and floats are not offsets."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _clamped_span(entity: Any, total16: int) -> tuple[int, int] | None:
    """An entity's ``[start, end)`` in UTF-16 units cut to the text, or None if nothing is left."""
    if not isinstance(entity, dict) or not isinstance(entity.get("type"), str):
        return None
    offset, length = _int(entity.get("offset")), _int(entity.get("length"))
    if offset is None or length is None:
        return None
    start, end = max(offset, 0), min(offset + length, total16)
    return (start, end) if end > start else None


def _safe_url(url: Any) -> str | None:
    """The URL if its scheme is on the allowlist, else None."""
    if isinstance(url, str) and _SAFE_URL.match(url):
        return url
    return None


def _sanitize_language(language: Any) -> str:
    return _LANGUAGE_JUNK.sub("", language) if isinstance(language, str) else ""


# --- Telegram → Matrix ------------------------------------------------------------------------

_SIMPLE_TAGS = {
    "bold": "strong",
    "italic": "em",
    "underline": "u",
    "strikethrough": "del",
    "code": "code",
}
#: Same span, which tag goes outside: quotes and code blocks first, code innermost.
_RANK = {"blockquote": 0, "pre": 1, "a": 2, "code": 4}


@dataclass
class _Span:
    """One formatting entity, in code points, with the HTML that renders it."""

    start: int
    end: int
    kind: str  # "blockquote", "pre", "a", "code" or "inline"
    open_tag: str
    close_tag: str
    index: int

    @property
    def is_block(self) -> bool:
        return self.kind in ("blockquote", "pre")

    def sort_key(self) -> tuple[int, int, int, int, int]:
        """Stack order: blocks outermost, then older and longer spans outside newer ones."""
        return (0 if self.is_block else 1, self.start, -self.end, _RANK.get(self.kind, 3), self.index)


_MentionUrl = Callable[[dict], "str | None"]


def _link_target(kind: str, covered: str, entity: dict, mention_url: _MentionUrl | None) -> str | None:
    """Where a link-like entity points, or None when it should stay plain text."""
    if kind == "text_link":
        return _safe_url(entity.get("url"))
    if kind == "url":
        if _SAFE_URL.match(covered):
            return covered
        return None if _ANY_SCHEME_URL.match(covered) else "https://" + covered
    if kind == "email":
        return "mailto:" + covered
    if kind == "phone_number":
        digits = _PHONE_JUNK.sub("", covered)
        return "tel:" + digits if digits.strip("+") else None
    if kind == "mention":
        m = _USERNAME.match(covered)
        return f"https://t.me/{m.group(1)}" if m else None
    if kind == "text_mention":
        user = entity.get("user")
        if mention_url is None or not isinstance(user, dict):
            return None
        return _safe_url(mention_url(user))
    return None


def _tags_for(entity: dict, covered: str, mention_url: _MentionUrl | None) -> tuple[str, str, str] | None:
    """``(kind, open tag, close tag)`` for an entity, or None if it renders as plain text."""
    kind = entity["type"]
    if kind in _SIMPLE_TAGS:
        tag = _SIMPLE_TAGS[kind]
        return ("code" if tag == "code" else "inline", f"<{tag}>", f"</{tag}>")
    if kind == "spoiler":
        return ("inline", "<span data-mx-spoiler>", "</span>")
    if kind in ("blockquote", "expandable_blockquote"):
        return ("blockquote", "<blockquote>", "</blockquote>")
    if kind == "pre":
        language = _sanitize_language(entity.get("language"))
        attr = f' class="language-{language}"' if language else ""
        return ("pre", f"<pre><code{attr}>", "</code></pre>")
    url = _link_target(kind, covered, entity, mention_url)
    if url is None:
        return None  # hashtag, cashtag, bot_command, custom_emoji, unsafe or unknown
    return ("a", f'<a href="{escape(url, quote=True)}">', "</a>")


def _spans(text: str, entities: list[dict] | None, mention_url: _MentionUrl | None) -> list[_Span]:
    """The entities that produce formatting, converted to code points and made renderable.

    A link inside a link, or code inside code, cannot be expressed in HTML: the later of two
    such overlapping entities is dropped (its text stays).
    """
    bounds = _utf16_bounds(text)
    candidates: list[tuple[int, int, int, dict]] = []
    for index, entity in enumerate(entities or []):
        span16 = _clamped_span(entity, bounds[-1])
        if span16 is None:
            continue
        # Round outwards so an entity that splits a surrogate pair keeps the whole character.
        start = bisect_right(bounds, span16[0]) - 1
        end = bisect_left(bounds, span16[1])
        candidates.append((start, -end, index, entity))
    spans: list[_Span] = []
    # Candidates come by start, so one overlaps an accepted one iff it starts before their end.
    exclusive_end = {"a": 0, "code": 0}
    for start, neg_end, index, entity in sorted(candidates, key=lambda c: c[:3]):
        tags = _tags_for(entity, text[start:-neg_end], mention_url)
        if tags is None:
            continue
        span = _Span(start, -neg_end, tags[0], tags[1], tags[2], index)
        group = "code" if span.kind == "pre" else span.kind
        if group in exclusive_end:
            if span.start < exclusive_end[group]:
                continue
            exclusive_end[group] = span.end
        spans.append(span)
    return spans


_TEXT_SPECIALS = re.compile(r"[\n \t\r\f]")


def _escape_text(text: str, start: int, end: int, in_pre: bool, keep_space: Callable[[int], bool]) -> str:
    """``text[start:end]`` as HTML character data, with whitespace made to survive rendering."""
    if in_pre:
        return escape(text[start:end], quote=False)
    out: list[str] = []
    last = start
    for m in _TEXT_SPECIALS.finditer(text, start, end):
        i, c = m.start(), m.group()
        out.append(escape(text[last:i], quote=False))
        if c == "\n":
            out.append("<br>")
        elif c == " ":
            out.append(" " if keep_space(i) else "&nbsp;")
        else:
            out.append(f"&#{ord(c)};")  # a tab or CR that HTML would collapse
        last = i + 1
    out.append(escape(text[last:end], quote=False))
    return "".join(out)


def _render(text: str, spans: list[_Span]) -> str:
    """Spans → well-formed HTML, splitting only the spans that cross another one.

    At every boundary the open tags must equal the active spans in :meth:`_Span.sort_key`
    order: the common bottom of the stack stays open, the rest is closed and (re)opened.
    """
    edges = {p for s in spans for p in (s.start, s.end)}
    block_edges = {p for s in spans if s.is_block for p in (s.start, s.end)}

    def keep_space(i: int) -> bool:
        # A literal space survives only between two visible characters on one line, and not
        # alone between two tags (an element holding only a collapsible space reads as empty).
        return (
            0 < i < len(text) - 1
            and text[i - 1] not in _HTML_WS
            and text[i + 1] not in _HTML_WS
            and i not in block_edges
            and i + 1 not in block_edges
            and not (i in edges and i + 1 in edges)
        )

    points = sorted(edges | {0, len(text)})
    starting: dict[int, list[_Span]] = {}
    for span in spans:
        starting.setdefault(span.start, []).append(span)
    out: list[str] = []
    stack: list[_Span] = []
    live: list[_Span] = []
    for here, nxt in zip(points, points[1:] + [len(text)]):
        live = [s for s in live if s.end > here] + starting.get(here, [])
        active = sorted(live, key=_Span.sort_key)
        keep = 0
        while keep < min(len(stack), len(active)) and stack[keep] is active[keep]:
            keep += 1
        block_ended = False
        for span in reversed(stack[keep:]):
            # Markdown code blocks end in a newline that readers strip: write one to be stripped.
            out.append("\n" + span.close_tag if span.kind == "pre" else span.close_tag)
            block_ended |= span.is_block and span.end == here
        out.extend(span.open_tag for span in active[keep:])
        stack = active
        start = here
        if block_ended and here < len(text) and text[here] == "\n" and text[here - 1] != "\n":
            start += 1  # the block already ends the line
        in_pre = any(s.kind == "pre" for s in stack)
        out.append(_escape_text(text, start, nxt, in_pre, keep_space))
    return "".join(out)


def telegram_to_matrix(
    text: str,
    entities: list[dict] | None,
    *,
    mention_url: _MentionUrl | None = None,
) -> MatrixText:
    """Render a Telegram text and its entities for Matrix.

    ``mention_url`` maps a ``text_mention``'s user dict to a link (the bridge passes the ghost's
    matrix.to link); without it, or when it returns None, the mention stays plain text.
    ``html`` is None when no entity produced formatting, so plain messages stay plain.
    """
    spans = _spans(text, entities, mention_url)
    if not spans:
        return MatrixText(text, None)
    return MatrixText(text, _render(text, spans))


# --- Matrix → Telegram ------------------------------------------------------------------------

_ENTITY_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "del": "strikethrough",
    "strike": "strikethrough",
}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCKS = {
    "div",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "tr",
    "caption",
    "details",
    "summary",
    "section",
    "article",
    "header",
    "footer",
    "nav",
    "aside",
    "main",
    "figure",
    "figcaption",
    "address",
    "center",
    "dl",
    "dt",
    "dd",
}
_VOID = {
    "br",
    "img",
    "hr",
    "wbr",
    "input",
    "meta",
    "link",
    "area",
    "base",
    "col",
    "embed",
    "source",
    "track",
    "param",
}
#: Elements whose content never reaches Telegram: the reply fallback and non-text content.
_SKIPPED = {"mx-reply", "script", "style", "head", "title", "template"}
_HR_TEXT = "———"


@dataclass
class _Entity:
    """An entity being read; ``start`` stays None until its first character is written."""

    type: str
    seq: int
    start: int | None = None
    end: int | None = None
    url: str | None = None
    language: str | None = None

    def as_dict(self) -> dict[str, Any]:
        assert self.start is not None and self.end is not None
        entity: dict[str, Any] = {"type": self.type, "offset": self.start, "length": self.end - self.start}
        if self.url is not None:
            entity["url"] = self.url
        if self.language:
            entity["language"] = self.language
        return entity


@dataclass
class _Frame:
    """An open element and what closing it must undo."""

    tag: str
    entity: _Entity | None = None
    breaks: int = 0
    pre: bool = False
    code: bool = False
    skip: bool = False
    list_: bool = False


@dataclass
class _ListState:
    ordered: bool
    counter: int = 1


class _Reader(HTMLParser):
    """Reads Matrix HTML the way a browser lays it out, into Telegram text and entities.

    Whitespace outside ``<pre>`` collapses: a run becomes one *soft* space, written only if
    more text follows on the same line. Block elements ask for line breaks that are written only
    when more content follows, so nothing trails and nothing doubles. Entities start at their
    first written character, which keeps separators out of them.
    """

    def __init__(self) -> None:
        # Character references are resolved by hand: "&nbsp;" must stay distinguishable from a
        # literal U+00A0, and "&#9;" from a tab that collapses.
        super().__init__(convert_charrefs=False)
        self.chunks: list[str] = []
        self.len16 = 0
        self.trailing_newlines = 0
        self.pending_newlines = 0
        self.line_start = True  # a soft space here would be dropped
        self.after_prefix = False  # right after a list bullet: the line is already broken
        self.soft_space_seq: int | None = None  # entities opened up to this seq contain it
        self.seq = 0
        self.entities: list[_Entity] = []
        self.unstarted: list[_Entity] = []
        self.awaiting_space: list[_Entity] = []  # closed, but own the soft space if written
        self.frames: list[_Frame] = []
        self.lists: list[_ListState] = []
        self.pre_depth = 0
        self.code_depth = 0
        self.skip_depth = 0
        self.pre_fresh = False  # right after <pre>, where HTML ignores one newline

    # output

    def _flush(self) -> None:
        """Write what must precede new content: pending line breaks or a soft space."""
        if self.pending_newlines and self.len16:
            self._append("\n" * self.pending_newlines)
        elif self.soft_space_seq is not None and not self.line_start:
            seq = self.soft_space_seq
            self._start_entities(lambda e: e.seq <= seq)
            self._append(" ")
            for entity in self.awaiting_space:
                entity.end = self.len16
        self.pending_newlines = 0
        self.soft_space_seq = None
        self.awaiting_space.clear()
        self._start_entities(lambda e: True)

    def _start_entities(self, which: Callable[[_Entity], bool]) -> None:
        for entity in [e for e in self.unstarted if which(e)]:
            entity.start = self.len16
            self.unstarted.remove(entity)

    def _append(self, s: str) -> None:
        self.chunks.append(s)
        self.len16 += _utf16_len(s)
        stripped = s.rstrip("\n")
        self.trailing_newlines = len(s) - len(stripped) + (self.trailing_newlines if not stripped else 0)
        self.line_start = s.endswith("\n")
        self.after_prefix = False

    def _write(self, s: str) -> None:
        """Content that does not collapse (text, a bullet, a character reference)."""
        if not s:
            return
        self._flush()
        self._append(s)

    def _drop_soft_space(self) -> None:
        self.soft_space_seq = None
        self.awaiting_space.clear()

    def _soft_space(self) -> None:
        if self.soft_space_seq is None and not self.line_start and not self.pending_newlines:
            self.soft_space_seq = self.seq

    def _break(self, newlines: int) -> None:
        """Make the next content start after at least ``newlines`` line breaks."""
        self._drop_soft_space()
        if self.len16 and not self.after_prefix:
            self.pending_newlines = max(self.pending_newlines, newlines - self.trailing_newlines)

    def _newline(self) -> None:
        self._drop_soft_space()
        self._flush()
        self._append("\n")

    def _text(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.pre_depth:
            if self.pre_fresh and data.startswith("\n"):
                data = data[1:]  # HTML ignores a newline right after <pre>
            self.pre_fresh = False
            self._write(data)
            return
        for part in _WS_SPLIT.split(data):
            if not part:
                continue
            if part[0] in _HTML_WS:
                self._soft_space()
            else:
                self._write(part)

    # entities

    def _open_entity(self, type_: str, **attrs: Any) -> _Entity | None:
        """Start an entity unless Telegram would not accept it here."""
        if self.skip_depth or self.code_depth or self.pre_depth:
            return None  # nothing nests inside code
        if any(f.entity is not None and f.entity.type == type_ for f in self.frames):
            return None  # no link in a link, no quote in a quote, no bold in bold
        self.seq += 1
        entity = _Entity(type_, self.seq, **attrs)
        self.entities.append(entity)
        self.unstarted.append(entity)
        return entity

    def _close_entity(self, entity: _Entity) -> None:
        if entity.start is None:
            self.unstarted.remove(entity)
            return
        entity.end = self.len16
        if self.soft_space_seq is not None and entity.seq <= self.soft_space_seq:
            self.awaiting_space.append(entity)  # its trailing space counts if it is written

    # elements

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.pre_fresh = False
        if self.skip_depth:
            if tag not in _VOID:
                self.frames.append(_Frame(tag, skip=tag in _SKIPPED))
                self.skip_depth += tag in _SKIPPED
            return
        if tag in _VOID:
            self._void(tag, dict(attrs))
            return
        self.frames.append(self._open(tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        self.pre_fresh = False
        for i in range(len(self.frames) - 1, -1, -1):
            if self.frames[i].tag == tag:
                while len(self.frames) > i:
                    self._close(self.frames.pop())
                return

    def _void(self, tag: str, attrs: dict[str, str | None]) -> None:
        if tag == "br":
            self._newline()
        elif tag == "hr":
            self._break(1)
            self._write(_HR_TEXT)
            self._break(1)
        elif tag == "img":
            alt = _WS_SPLIT.sub(" ", attrs.get("alt") or "").strip()
            self._write(alt or "[image]")

    def _open(self, tag: str, attrs: dict[str, str | None]) -> _Frame:
        frame = _Frame(tag)
        if tag in _SKIPPED:
            frame.skip = True
            self.skip_depth += 1
        elif tag in _ENTITY_TAGS:
            frame.entity = self._open_entity(_ENTITY_TAGS[tag])
        elif tag in ("span", "font") and "data-mx-spoiler" in attrs:
            frame.entity = self._open_entity("spoiler")
        elif tag == "a":
            href = attrs.get("href") or ""
            if not _MATRIX_TO.match(href) and _safe_url(href):
                frame.entity = self._open_entity("text_link", url=href)
        elif tag == "code":
            self._open_code(frame, attrs)
        elif tag == "pre":
            self._open_block(frame, 1)
            frame.entity = self._open_entity("pre")
            frame.pre = True
            self.pre_depth += 1
            self.pre_fresh = True
        elif tag == "blockquote":
            self._open_block(frame, 1)
            frame.entity = self._open_entity("blockquote")
        elif tag in _HEADINGS:
            self._open_block(frame, 1)
            frame.entity = self._open_entity("bold")
        elif tag == "p":
            self._open_block(frame, 1 if self.lists else 2)
        elif tag in ("ul", "ol"):
            self._open_block(frame, 1)
            frame.list_ = True
            self.lists.append(_ListState(tag == "ol", _list_start(attrs.get("start")) if tag == "ol" else 1))
        elif tag == "li":
            self._open_block(frame, 1)
            self._bullet()
        elif tag in _BLOCKS:
            self._open_block(frame, 1)
        elif tag in ("td", "th"):
            self._soft_space()
        return frame

    def _open_block(self, frame: _Frame, breaks: int) -> None:
        self._break(breaks)
        frame.breaks = breaks

    def _open_code(self, frame: _Frame, attrs: dict[str, str | None]) -> None:
        if self.pre_depth:
            # <pre><code class="language-x">: the code element only names the language.
            pre = next((f.entity for f in reversed(self.frames) if f.pre), None)
            if pre is not None and not pre.language:
                pre.language = _class_language(attrs.get("class")) or None
            return
        frame.entity = self._open_entity("code")
        frame.code = True
        self.code_depth += 1

    def _bullet(self) -> None:
        depth = max(len(self.lists), 1)
        state = self.lists[-1] if self.lists else _ListState(False)
        marker = f"{state.counter}." if state.ordered else "•"
        state.counter += 1
        self._write("  " * (depth - 1) + marker + " ")
        self.line_start = True
        self.after_prefix = True

    def _close(self, frame: _Frame) -> None:
        if frame.skip:
            self.skip_depth -= 1
            return
        if self.skip_depth:
            return
        if frame.pre:
            self.pre_depth -= 1
            self._strip_pre_newline(frame.entity)
        if frame.code:
            self.code_depth -= 1
        if frame.list_:
            self.lists.pop()
        if frame.entity is not None:
            self._close_entity(frame.entity)
        if frame.breaks:
            self._break(frame.breaks)

    def _strip_pre_newline(self, entity: _Entity | None) -> None:
        """Drop the newline that ends every Markdown code block (and ours, see ``_render``)."""
        if entity is None or entity.start is None or self.len16 <= entity.start or not self.trailing_newlines:
            return
        last = self.chunks[-1]
        if len(last) > 1:
            self.chunks[-1] = last[:-1]
        else:
            self.chunks.pop()
        self.len16 -= 1
        self.trailing_newlines -= 1
        self.line_start = self.trailing_newlines > 0 or not self.len16
        for e in self.entities:
            if e.end is not None and e.end > self.len16:
                e.end = self.len16

    # character references

    def handle_data(self, data: str) -> None:
        self._text(data)

    def handle_entityref(self, name: str) -> None:
        if name == "nbsp":
            self._reference(" ")
        elif name + ";" in _HTML5_ENTITIES:
            self._reference(_HTML5_ENTITIES[name + ";"])
        else:
            self._reference(unescape("&" + name))

    def handle_charref(self, name: str) -> None:
        hexadecimal = name[:1] in ("x", "X")
        digits = name[1:] if hexadecimal else name
        if not digits or len(digits) > 8:
            self._reference("\ufffd")  # also keeps int() away from absurdly long numbers
            return
        num = int(digits, 16 if hexadecimal else 10)
        if num == 0xA0:
            self._reference(" ")  # like &nbsp;
        elif num in (9, 10, 12, 13):
            self._reference(chr(num))
        else:
            self._reference(unescape(f"&#{name};"))

    def _reference(self, s: str) -> None:
        """A character reference is literal: it never collapses, and ``&nbsp;`` is a space."""
        if self.skip_depth:
            return
        self.pre_fresh = False
        self._write(s)

    # result

    def result(self) -> tuple[str, list[dict]]:
        self.close()
        while self.frames:
            self._close(self.frames.pop())
        text = "".join(self.chunks).rstrip()
        total16 = _utf16_len(text)
        out: list[dict] = []
        for entity in self.entities:
            if entity.start is None or entity.end is None:
                continue
            entity.end = min(entity.end, total16)
            if entity.end > entity.start:
                out.append(entity.as_dict())
        out.sort(key=lambda e: (e["offset"], -e["length"]))
        return text, out


def _list_start(value: str | None) -> int:
    try:
        return int(value or 1)
    except ValueError:
        return 1


def _class_language(value: str | None) -> str:
    for name in (value or "").split():
        if name.startswith("language-"):
            return _sanitize_language(name[len("language-") :])
    return ""


def matrix_to_telegram(body: str, html: str | None) -> tuple[str, list[dict]]:
    """Read a Matrix message into Telegram text and entities (UTF-16, sorted by offset).

    Without ``html`` the body is sent as it is. Reply fallbacks are dropped, matrix.to links
    lose their target (Matrix ids must not reach clients), lists and headings become text.
    """
    if html is None:
        return body, []
    reader = _Reader()
    # The newline (collapsible, and trailing whitespace goes anyway) lets html.parser decode a
    # reference at the very end ("&amp"), which it otherwise returns as raw text.
    reader.feed(html + "\n")
    return reader.result()


# --- splitting --------------------------------------------------------------------------------


def split_entities(text: str, entities: list[dict], limit: int = 4096) -> list[tuple[str, list[dict]]]:
    """Split a long text into pieces Telegram accepts, each with its own entities.

    ``limit`` counts characters (code points), like Telegram's message limit. The cuts are
    those of :func:`~bridge.networks.telegram.text.split_text` (the shared rule of
    bridge.text_split: paragraph, line, word, else a hard cut that keeps characters whole), so
    the pieces join back to the text; an entity crossing a cut continues in the next piece.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    bounds = _utf16_bounds(text)
    spans = [(span, e) for e in entities or [] if (span := _clamped_span(e, bounds[-1])) is not None]
    pieces: list[tuple[str, list[dict]]] = []
    start = 0
    for piece in split_text(text, limit):
        lo, hi = bounds[start], bounds[start + len(piece)]
        pieces.append((piece, _rebased(spans, lo, hi)))
        start += len(piece)
    return pieces


def _rebased(spans: list[tuple[tuple[int, int], dict]], lo: int, hi: int) -> list[dict]:
    """The parts of the entities that fall in ``[lo, hi)``, with offsets relative to ``lo``."""
    out = []
    for (start, end), entity in spans:
        s, e = max(start, lo), min(end, hi)
        if e > s:
            out.append({**entity, "offset": s - lo, "length": e - s})
    out.sort(key=lambda e: (e["offset"], -e["length"]))
    return out
