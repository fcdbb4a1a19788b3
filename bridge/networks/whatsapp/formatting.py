"""WhatsApp text ⇄ Matrix ``org.matrix.custom.html``.

WhatsApp has no entities: formatting is typed into the text (``*bold*``, ``_italic_``,
``~strike~``, ```` ```mono``` ````, `` `code` ``, ``> `` quotes, ``* ``/``- `` bullets, ``1. ``
numbers). Pure functions, no I/O. The rules this module assumes, matching what WhatsApp renders:

* ``*``, ``_`` and ``~`` must hug their text (``* x *`` is not bold) and sit at word boundaries:
  the opener is not preceded by a letter or digit and the closer is not followed by one, so
  ``snake_case_name`` and ``2*3*4`` stay plain. A doubled marker (``**x**``, ``__init__``) is
  Markdown, not WhatsApp, and stays plain. Spans do not cross lines, and the same marker does not
  nest inside itself. Nothing is formatted inside code or inside a URL (the link must survive).
* ```` ``` ```` spans that fill whole lines are code blocks; on part of a line they are inline
  monospace, shown in Matrix as ``<code>`` so a sentence is not broken apart.

Client text is untrusted: every character of it is HTML-escaped and only a fixed set of tags is
ever produced. Employee HTML is parsed with :mod:`html.parser` into a small tree and laid out the
way a browser would (whitespace collapses, blocks break lines) before markers are added.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from html import escape
from html.parser import HTMLParser

from bridge import text_split
from bridge.events import RichText

__all__ = ["MAX_CAPTION", "MAX_TEXT", "matrix_to_whatsapp", "split_text", "whatsapp_to_matrix"]

#: WhatsApp's limits, in characters (taken as code points, see :func:`split_text`).
MAX_TEXT = 4096
MAX_CAPTION = 1024

# --- WhatsApp → Matrix ------------------------------------------------------------------------

_INLINE_TAGS = {"*": "strong", "_": "em", "~": "del"}
#: A URL ends before whitespace/backticks; trailing punctuation (and markers) is not part of it.
_URL = re.compile(r"(?i)\bhttps?://[^\s`<>]+")
_URL_TAIL = ".,;:!?)'\"*_~"
_NUMBERED = re.compile(r"([0-9]{1,9})\. (.*\S.*)")
_FENCE = "```"


def _esc(text: str) -> str:
    return escape(text, quote=False)


def _fence(lines: list[str], k: int) -> tuple[int, str] | None:
    """``(last line, content)`` if a code block starts at ``lines[k]``, else None.

    The opening fence must start the line and the next fence must end one; otherwise the
    backticks are inline monospace (or literal), handled per line.
    """
    line = lines[k]
    if not line.startswith(_FENCE):
        return None
    end, close = k, line.find(_FENCE, 3)
    while close < 0 and end + 1 < len(lines):
        end += 1
        close = lines[end].find(_FENCE)
    if close < 0 or close != len(lines[end]) - 3 or (end == k and close == 3):
        return None  # no closer, or it does not end its line (or "``````": nothing inside)
    content = "\n".join([line, *lines[k + 1 : end + 1]])[3:-3] if end > k else line[3:close]
    content = content.removeprefix("\n").removesuffix("\n")
    return (end, content) if content.strip() else None


def _atoms(line: str) -> tuple[dict[int, tuple[int, str]], bytearray]:
    """Code spans and URLs as ``start -> (end, html)``, and a mask of the characters they cover:
    nothing inside them is formatted."""
    atoms: dict[int, tuple[int, str]] = {}
    blocked = bytearray(len(line))
    i = 0
    while (j := line.find("`", i)) >= 0:
        if line.startswith(_FENCE, j):
            k, width = line.find(_FENCE, j + 4), 3
        else:
            k, width = line.find("`", j + 1), 1
            if k == j + 1:  # "``": nothing inside
                i = j + 2
                continue
        if k < 0:
            i = j + width
            continue
        atoms[j] = (k + width, f"<code>{_esc(line[j + width : k])}</code>")
        blocked[j : k + width] = b"\x01" * (k + width - j)
        i = k + width
    for m in _URL.finditer(line):
        start, end = m.start(), m.end()
        while end > start and line[end - 1] in _URL_TAIL:
            end -= 1
        if not any(blocked[start:end]):
            atoms[start] = (end, _esc(line[start:end]))
            blocked[start:end] = b"\x01" * (end - start)
    return atoms, blocked


def _inline(line: str) -> tuple[str, bool]:
    """One line's HTML and whether it has any formatting (see the module docstring's rules)."""
    atoms, blocked = _atoms(line)
    n = len(line)

    def opener(i: int, m: str) -> bool:
        before = line[i - 1] if i else " "
        return (
            i + 1 < n
            and not before.isalnum()
            and before != m
            and not line[i + 1].isspace()
            and line[i + 1] != m
        )

    def closer(j: int, m: str) -> bool:
        after = line[j + 1] if j + 1 < n else " "
        return (
            not blocked[j]
            and not line[j - 1].isspace()
            and line[j - 1] != m
            and not after.isalnum()
            and after != m
        )

    closers = {m: [j for j in range(1, n) if line[j] == m and closer(j, m)] for m in _INLINE_TAGS}
    formatted = any(h.startswith("<") for _, h in atoms.values())

    def emit(lo: int, hi: int, active: frozenset[str]) -> str:
        nonlocal formatted
        out: list[str] = []
        i = plain = lo
        while i < hi:
            c = line[i]
            if i in atoms:
                out.append(_esc(line[plain:i]) + atoms[i][1])
                i = plain = atoms[i][0]
                continue
            if c in _INLINE_TAGS and c not in active and opener(i, c):
                ends = closers[c]
                k = bisect_left(ends, i + 2)
                if k < len(ends) and ends[k] < hi:
                    j, tag = ends[k], _INLINE_TAGS[c]
                    out.append(f"{_esc(line[plain:i])}<{tag}>{emit(i + 1, j, active | {c})}</{tag}>")
                    formatted = True
                    i = plain = j + 1
                    continue
            i += 1
        out.append(_esc(line[plain:hi]))
        return "".join(out)

    html = emit(0, n, frozenset())
    return html, formatted


@dataclass
class _Block:
    kind: str  # "text", "quote", "ul", "ol" or "pre"
    items: list[str] = field(default_factory=list)
    start: int = 1


def _line_kind(line: str) -> tuple[str, str, int]:
    """``(kind, content, number)`` of one line outside code blocks."""
    if line.startswith("> ") and line[2:].strip():
        return "quote", line[2:], 0
    if line[:2] in ("* ", "- ") and line[2:].strip():
        return "ul", line[2:], 0
    if m := _NUMBERED.fullmatch(line):
        return "ol", m.group(2), int(m.group(1))
    return "text", line, 0


def whatsapp_to_matrix(body: str) -> RichText:
    """Client's WhatsApp text → Matrix. ``body`` stays verbatim (markers kept) for the record;
    ``html`` is None unless some formatting was recognised."""
    lines = body.split("\n")
    blocks: list[_Block] = []
    formatted = False
    k = 0
    while k < len(lines):
        if (fence := _fence(lines, k)) is not None:
            blocks.append(_Block("pre", [fence[1]]))
            formatted = True
            k = fence[0] + 1
            continue
        line = lines[k]
        kind, content, number = _line_kind(line)
        prev = blocks[-1] if blocks else None
        quoted = prev is not None and prev.kind == "quote" and k + 1 < len(lines)
        if quoted and line.rstrip() == ">" and _line_kind(lines[k + 1])[0] == "quote":
            kind, content = "quote", ""  # a blank line inside a quote
        html, inline = _inline(content)
        formatted |= inline or kind != "text"
        # Consecutive quote or bullet lines form one block; numbered ones only if they count up.
        if (
            prev is not None
            and prev.kind == kind != "text"
            and (kind != "ol" or number == prev.start + len(prev.items))
        ):
            prev.items.append(html)
        else:
            blocks.append(_Block(kind, [html], number))
        k += 1
    if not formatted:
        return RichText(body, None)
    out: list[str] = []
    for prev, block in zip([None, *blocks], blocks):
        # Blocks break the line themselves; a <br> next to one would add an empty line, except
        # after a really empty line, which is what the client typed.
        if prev is not None and prev.kind == "text" and (block.kind == "text" or not prev.items[0]):
            out.append("<br>")
        if block.kind == "text":
            out.append(block.items[0])
        elif block.kind == "pre":  # ends in a newline, like Markdown renderers' (and Telegram's)
            out.append(f"<pre><code>{_esc(block.items[0])}\n</code></pre>")
        elif block.kind == "quote":
            out.append("<blockquote>" + "<br>".join(block.items) + "</blockquote>")
        else:
            start = f' start="{block.start}"' if block.kind == "ol" and block.start != 1 else ""
            out.append(
                f"<{block.kind}{start}>" + "".join(f"<li>{i}</li>" for i in block.items) + f"</{block.kind}>"
            )
    return RichText(body, "".join(out))


# --- Matrix → WhatsApp ------------------------------------------------------------------------

# Layout is computed with sentinel characters (removed from the HTML's text first):
# \x00 "start a new line", \x01 "start a new paragraph", \x04 a collapsible space, \x05 a <br>,
# \x02N\x03 a finished block (quote, list, code block) kept aside so nothing rewrites it.
_SENTINELS = re.compile(r"[\x00-\x08]")
_HTML_WS = re.compile(r"[ \t\n\r\f]+")
_LAYOUT_RUN = re.compile(r"[\x00\x01\x04\x05]+")
_LINE_BREAKS = re.compile(r"([\x00\x01\x05]+)")
_PLACEHOLDER = re.compile(r"\x02(\d+)\x03")
#: What hugging moves outside markers: every Unicode space, and the collapsible one.
_BLANKS = "".join(c for c in map(chr, range(0x3001)) if c.isspace()) + "\x04"

_MARKS = {"strong": "*", "b": "*", "em": "_", "i": "_", "del": "~", "s": "~", "strike": "~"}
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
#: Never shown: the reply fallback (WhatsApp gets a real reply) and non-text content.
_SKIPPED = {"mx-reply", "script", "style", "head", "title", "template"}
_SAFE_URL = re.compile(r"(?i)^(?:https?|mailto|tel):")
#: matrix.to links (user pills, rooms, events) mean nothing to a WhatsApp client.
_MATRIX_TO = re.compile(r"(?i)^https?://matrix\.to/#/")
#: Deeper elements are flattened into their parent, so hostile nesting cannot exhaust the stack.
_MAX_DEPTH = 64


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str]
    children: list[_Node | str] = field(default_factory=list)


class _TreeBuilder(HTMLParser):
    """Matrix HTML → a tree; unclosed tags close with their parent, stray end tags are ignored."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = _Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID and len(self.stack) < _MAX_DEPTH:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(_Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag == "br":  # browsers read </br> as <br>
            self.stack[-1].children.append(_Node("br", {}))
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


@dataclass(frozen=True)
class _Ctx:
    active: frozenset[str] = frozenset()  # markers already open around this node
    code: bool = False


def _wrap(inner: str, marker: str) -> str:
    """Put ``marker`` around each line of ``inner``, hugging the text: surrounding spaces move
    outside (WhatsApp ignores ``* x *``), empty lines get no markers, finished blocks none."""
    pieces = _LINE_BREAKS.split(inner)
    for i in range(0, len(pieces), 2):
        piece = pieces[i]
        core = piece.strip(_BLANKS)
        if core and "\x02" not in piece:
            start = len(piece) - len(piece.lstrip(_BLANKS))
            pieces[i] = f"{piece[:start]}{marker}{core}{marker}{piece[start + len(core) :]}"
    return "".join(pieces)


class _Renderer:
    def __init__(self) -> None:
        self.blocks: list[str] = []

    def keep(self, text: str) -> str:
        """Set a finished block aside; layout sees one opaque line."""
        if not text:
            return ""
        self.blocks.append(text)
        return f"\x00\x02{len(self.blocks) - 1}\x03\x00"

    def finish(self, laid_out: str) -> str:
        """Sentinels → text: breaks become newlines (at most one blank line), spaces collapse,
        nothing leads or trails, and the blocks set aside come back."""

        def run(m: re.Match[str]) -> str:
            if m.start() == 0 or m.end() == len(laid_out):
                return ""
            s = m.group()
            newlines = min(2, max(s.count("\x05"), 2 if "\x01" in s else 1 if "\x00" in s else 0))
            return "\n" * newlines or " "

        lines = _LAYOUT_RUN.sub(run, laid_out).split("\n")
        text = "\n".join(line.rstrip() for line in lines).rstrip().lstrip("\n")
        return _PLACEHOLDER.sub(lambda m: self.blocks[int(m.group(1))], text)

    def children(self, node: _Node, ctx: _Ctx) -> str:
        return "".join(
            _HTML_WS.sub("\x04", _SENTINELS.sub("", c)) if isinstance(c, str) else self.element(c, ctx)
            for c in node.children
        )

    def element(self, node: _Node, ctx: _Ctx) -> str:
        tag = node.tag
        if tag in _SKIPPED:
            return ""
        if tag == "br":
            return "\x05"
        if tag == "img":
            return _HTML_WS.sub(
                "\x04", _SENTINELS.sub("", node.attrs.get("alt") or node.attrs.get("title") or "")
            )
        if tag == "pre":
            return self.pre(node)
        if ctx.code:
            return self.children(node, ctx)
        if tag in _MARKS:
            return self.mark(node, ctx, _MARKS[tag])
        if tag == "code":
            inner = self.children(node, replace(ctx, code=True))
            return inner if _FENCE in inner else _wrap(inner, _FENCE if "`" in inner else "`")
        if tag == "a":
            return self.link(node, ctx)
        if tag in _HEADINGS:
            return "\x00" + self.mark(node, ctx, "*") + "\x00"
        if tag == "p":
            return "\x01" + self.children(node, ctx) + "\x01"
        if tag == "blockquote":
            text = self.finish(self.children(node, _Ctx()))
            return self.keep(
                "\n".join(f"> {line}" if line else ">" for line in text.split("\n")) if text else ""
            )
        if tag in ("ul", "ol", "li"):
            return self.keep(self.list_(node))
        if tag == "hr":
            return "\x00———\x00"
        if tag in _BLOCKS:
            return "\x00" + self.children(node, ctx) + "\x00"
        if tag in ("td", "th"):
            return "\x04" + self.children(node, ctx) + "\x04"
        return self.children(node, ctx)

    def mark(self, node: _Node, ctx: _Ctx, marker: str) -> str:
        if marker in ctx.active:
            return self.children(node, ctx)
        return _wrap(self.children(node, replace(ctx, active=ctx.active | {marker})), marker)

    def link(self, node: _Node, ctx: _Ctx) -> str:
        inner = self.children(node, ctx)
        href = node.attrs.get("href", "").strip()
        if not _SAFE_URL.match(href) or _MATRIX_TO.match(href):
            return inner  # a pill shows its name; javascript: and friends lose their target
        shown = href[len("mailto:") :] if href.lower().startswith("mailto:") else href
        label = self.finish(inner)
        if not label or label in (href, shown):
            return shown
        return f"{inner}\x04({shown})"

    def list_(self, node: _Node) -> str:
        """A list as finished lines: ``- x`` or ``N. x``; nested lists are indented."""
        ordered = node.tag == "ol"
        number = _list_start(node.attrs.get("start")) if ordered else 1
        items = [c for c in node.children if isinstance(c, _Node)] if node.tag != "li" else [node]
        lines: list[str] = []
        for item in items:
            if item.tag != "li":  # stray content, e.g. a list nested without its <li>
                content = self.finish(self.element(item, _Ctx()))
                lines.extend("  " + line if line else "" for line in content.split("\n") if content)
                continue
            first, *rest = self.finish(self.children(item, _Ctx())).split("\n")
            lines.append(((f"{number}. " if ordered else "- ") + first).rstrip())
            lines.extend("  " + line if line else "" for line in rest)
            number += 1
        return "\n".join(lines)

    def pre(self, node: _Node) -> str:
        # HTML ignores a newline right after <pre>; Markdown ends the block with one.
        raw = _raw_text(node).removeprefix("\n").removesuffix("\n")
        if not raw.strip():
            return ""
        return self.keep(raw if _FENCE in raw else f"{_FENCE}{raw}{_FENCE}")


def _raw_text(node: _Node) -> str:
    """Text of a subtree with every space kept (for <pre>), <br> as a newline."""
    parts: list[str] = []
    for child in node.children:
        if isinstance(child, str):
            parts.append(_SENTINELS.sub("", child))
        elif child.tag == "br":
            parts.append("\n")
        elif child.tag not in _SKIPPED:
            parts.append(_raw_text(child))
    return "".join(parts)


def _list_start(value: str | None) -> int:
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else 1


def matrix_to_whatsapp(text: RichText) -> str:
    """Employee's message (Matrix) → the text WhatsApp shows.

    Without HTML the body goes verbatim: markers a Matrix user typed as plain text are theirs
    (WhatsApp has no escape for them anyway). With HTML, formatting becomes markers, links read
    ``text (url)``, reply fallbacks are dropped. Limitation: WhatsApp cannot format part of a
    word, so ``<b>foo</b>bar`` gives ``*foo*bar``, which WhatsApp shows with its asterisks.
    """
    if text.html is None:
        return text.body
    builder = _TreeBuilder()
    builder.feed(text.html)
    builder.close()
    renderer = _Renderer()
    return renderer.finish(renderer.children(builder.root, _Ctx()))


# --- splitting --------------------------------------------------------------------------------


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split a long text into parts of at most ``limit`` characters for separate messages.

    The cuts are :func:`bridge.text_split.split_text`'s: the last paragraph break in the second
    half of the window, else the last line break there, else the last word break there (no-break
    spaces are not one), else the last whitespace at all, else hard (never inside a surrogate
    pair, and not inside a combined character when it can be avoided). The whitespace at a cut
    is dropped, so the parts rejoin to the text modulo that whitespace.
    ``limit`` counts code points (Python's ``len``): Meta documents the limit in characters,
    and we assume a character is a code point, not a UTF-16 unit. ``limit`` must be at least 2
    so that a part can always hold a whole surrogate pair. A text that fits is returned as it
    is; otherwise no part is blank (an all-blank text gives none).
    """
    if limit < 2:
        raise ValueError("limit must be at least 2")
    return text_split.split_text(text, limit, measure=len, keep_separators=False)
