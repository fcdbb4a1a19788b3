"""Message text the way the Bot API stores it: parse modes turned into entities, entity lists
checked, surrounding whitespace trimmed, and URLs, mentions, hashtags, cashtags, e-mail
addresses and bot commands detected automatically.

The real server hands back the *stored* text and entities, not what the bot sent; a bridge that
checks its echoes or computes offsets has to be tested against that, so the sandbox does the
same. Offsets and lengths are in UTF-16 code units, as in the Bot API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, TypeGuard

MAX_TEXT_LENGTH = 4096

ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
    }
)

# Entities inside which Telegram does not look for URLs, mentions and the like.
_OPAQUE_TYPES = frozenset(
    {
        "code",
        "pre",
        "text_link",
        "text_mention",
        "url",
        "email",
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "phone_number",
        "custom_emoji",
    }
)


class EntityParseError(ValueError):
    """Text or entities the server would refuse with ``can't parse entities: ...``."""


class TextEmpty(ValueError):
    """The text is empty once trimmed."""


class TextTooLong(ValueError):
    """The text is over 4096 characters once parsed and trimmed."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


@dataclass
class FormattedText:
    text: str
    entities: list[dict[str, Any]]


# --------------------------------------------------------------------------- entity lists


def normalize_entities(raw: Any) -> list[dict[str, Any]]:
    """Check an entity list sent by a bot and keep only the fields the server keeps."""
    if not isinstance(raw, list):
        raise EntityParseError("entities must be an array")
    cleaned: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise EntityParseError(f"entity {index} is not an object")
        kind = item.get("type")
        if not isinstance(kind, str) or kind not in ENTITY_TYPES:
            raise EntityParseError(f"unsupported entity type in entity {index}")
        offset, length = item.get("offset"), item.get("length")
        if not is_int(offset) or not is_int(length) or offset < 0 or length < 0:
            raise EntityParseError(f"entity {index} needs non-negative integer offset and length")
        entity: dict[str, Any] = {"offset": offset, "length": length, "type": kind}
        if kind == "text_link":
            url = item.get("url")
            if not isinstance(url, str) or not url:
                raise EntityParseError(f"text_link entity {index} needs a url")
            entity["url"] = url
        elif kind == "pre" and isinstance(item.get("language"), str) and item["language"]:
            entity["language"] = item["language"]
        elif kind == "text_mention":
            user = item.get("user")
            if not isinstance(user, dict) or not is_int(user.get("id")):
                raise EntityParseError(f"text_mention entity {index} needs a user with an id")
            entity["user"] = user
        elif kind == "custom_emoji":
            emoji_id = item.get("custom_emoji_id")
            if not isinstance(emoji_id, str) or not emoji_id:
                raise EntityParseError(f"custom_emoji entity {index} needs a custom_emoji_id")
            entity["custom_emoji_id"] = emoji_id
        cleaned.append(entity)
    return cleaned


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _sort_key(entity: dict[str, Any]) -> tuple[int, int, str]:
    return (entity["offset"], -entity["length"], entity["type"])


def finalize(text: str, entities: list[dict[str, Any]], max_length: int = MAX_TEXT_LENGTH) -> FormattedText:
    """Trim, bound, detect and order, as the server does before it stores a message.

    ``max_length`` is 4096 for message texts and 1024 for media captions. Raises TextEmpty or
    TextTooLong; the caller words the error for its own context.
    """
    stripped_left = text.lstrip()
    lead = utf16_len(text[: len(text) - len(stripped_left)])
    trimmed = stripped_left.rstrip()
    total = utf16_len(trimmed)
    if not trimmed:
        raise TextEmpty()
    if len(trimmed) > max_length:
        raise TextTooLong()
    kept: list[dict[str, Any]] = []
    for entity in entities:
        start = max(0, entity["offset"] - lead)
        end = min(total, entity["offset"] + entity["length"] - lead)
        if end <= start:
            continue
        kept.append({**entity, "offset": start, "length": end - start})
    for found in detect_entities(trimmed):
        if not any(_overlaps(found, other) for other in kept if other["type"] in _OPAQUE_TYPES):
            kept.append(found)
    kept.sort(key=_sort_key)
    return FormattedText(trimmed, kept)


def _overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["offset"] < b["offset"] + b["length"] and b["offset"] < a["offset"] + a["length"])


# --------------------------------------------------------------------------- auto-detection

# Schemeless text counts as a link only with a well-known top-level domain; Telegram checks a
# full list, this short one keeps file names such as "notes.txt" from turning into links.
_COMMON_TLDS = (
    "com|org|net|io|dev|app|info|biz|edu|gov|me|co|ai|ru|de|uk|fr|nl|it|es|pl|ch|at|be|se|no|"
    "dk|fi|eu|us|ca|au|jp|cn|in|br|org\\.uk|co\\.uk|tv|xyz|online|site|tech|store|cloud|page|"
    "link|ly|gg|so|to|sh|fm|cc|ua|by|kz|cz|sk|pt|gr|ie|il|tr|mx|ar|cl|nz|sg|hk|tw|kr|id|vn|th"
)
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
_URL_WITH_SCHEME = re.compile(r"(?<![\w@])(?:https?|ftp|tg|tonsite)://[^\s<>\"]+", re.IGNORECASE)
_URL_NO_SCHEME = re.compile(
    rf"(?<![\w@./-]){_HOST}(?:{_COMMON_TLDS})(?::\d{{1,5}})?(?:[/?#][^\s<>\"]*)?(?![\w-])",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"(?<![\w.+%-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-])")
_BOT_COMMAND = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/@])")
_MENTION = re.compile(r"(?<![\w@])@[A-Za-z0-9_]{5,32}(?![\w@])")
_HASHTAG = re.compile(r"(?<![\w#])#(?=\w*[^\W\d_])\w{1,256}")
_CASHTAG = re.compile(r"(?<![\w$])\$[A-Z]{3,8}(?![\w$])")
_TRAILING_PUNCTUATION = ".,;:!?'\")]}"


def _trim_url(candidate: str) -> str:
    while candidate and candidate[-1] in _TRAILING_PUNCTUATION:
        if candidate[-1] == ")" and candidate.count("(") >= candidate.count(")"):
            break
        candidate = candidate[:-1]
    return candidate


def detect_entities(text: str) -> list[dict[str, Any]]:
    """What Telegram marks up on its own: links, e-mail, @mentions, #tags, $CASHTAGS, /commands."""
    spans: list[tuple[int, int, str]] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s or start >= e for s, e, _ in spans)

    for match in _EMAIL.finditer(text):
        spans.append((match.start(), match.end(), "email"))
    for pattern in (_URL_WITH_SCHEME, _URL_NO_SCHEME):
        for match in pattern.finditer(text):
            url = _trim_url(match.group(0))
            start, end = match.start(), match.start() + len(url)
            scheme, sep, rest = url.partition("://")
            if (rest if sep else scheme) and free(start, end):
                spans.append((start, end, "url"))
    for pattern, kind in (
        (_BOT_COMMAND, "bot_command"),
        (_MENTION, "mention"),
        (_HASHTAG, "hashtag"),
        (_CASHTAG, "cashtag"),
    ):
        for match in pattern.finditer(text):
            if free(match.start(), match.end()):
                spans.append((match.start(), match.end(), kind))
    return [
        {
            "offset": utf16_len(text[:start]),
            "length": utf16_len(text[start:end]),
            "type": kind,
        }
        for start, end, kind in sorted(spans)
    ]


# --------------------------------------------------------------------------- parse modes


def parse_text(text: str, parse_mode: str | None) -> FormattedText:
    """Apply ``parse_mode`` ("HTML", "MarkdownV2", "Markdown"; case-insensitive) to ``text``."""
    mode = (parse_mode or "").strip().lower()
    if mode in ("", "none"):
        return FormattedText(text, [])
    if mode == "html":
        return _parse_html(text)
    if mode == "markdownv2":
        return _MarkdownV2(text).parse()
    if mode == "markdown":
        return _parse_legacy_markdown(text)
    raise ValueError("unsupported parse_mode")


class _Builder:
    """Accumulates plain text and tracks the current UTF-16 offset."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.entities: list[dict[str, Any]] = []

    def add(self, chunk: str) -> None:
        if chunk:
            self.parts.append(chunk)
            self.pos += utf16_len(chunk)

    def emit(self, kind: str, start: int, **extra: Any) -> None:
        if self.pos > start:
            entity: dict[str, Any] = {"offset": start, "length": self.pos - start, "type": kind}
            entity.update({k: v for k, v in extra.items() if v})
            self.entities.append(entity)

    def result(self) -> FormattedText:
        self.entities.sort(key=_sort_key)
        return FormattedText("".join(self.parts), self.entities)


_HTML_SIMPLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
}


@dataclass
class _OpenTag:
    tag: str
    kind: str | None
    start: int
    extra: dict[str, Any]


class _HtmlParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = _Builder()
        self.stack: list[_OpenTag] = []

    def handle_data(self, data: str) -> None:
        self.out.add(data)

    # Telegram's HTML has no comments, declarations or processing instructions.
    def handle_comment(self, data: str) -> None:
        raise EntityParseError("HTML comments are unsupported")

    def handle_decl(self, decl: str) -> None:
        raise EntityParseError("HTML declarations are unsupported")

    def handle_pi(self, data: str) -> None:
        raise EntityParseError("HTML processing instructions are unsupported")

    def unknown_decl(self, data: str) -> None:
        raise EntityParseError("HTML declarations are unsupported")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        extra: dict[str, Any] = {}
        kind: str | None
        if tag in _HTML_SIMPLE_TAGS:
            kind = _HTML_SIMPLE_TAGS[tag]
            if tag == "code" and self.stack and self.stack[-1].kind == "pre":
                parent = self.stack[-1]
                language = attributes.get("class", "")
                if parent.start == self.out.pos and language.startswith("language-"):
                    parent.extra["language"] = language[len("language-") :]
                    kind = None  # folded into the enclosing pre
        elif tag == "span":
            if attributes.get("class") != "tg-spoiler":
                raise EntityParseError('Tag "span" must have class "tg-spoiler"')
            kind = "spoiler"
        elif tag == "a":
            kind = "text_link"
            extra["url"] = attributes.get("href", "")
        elif tag == "blockquote":
            kind = "expandable_blockquote" if "expandable" in attributes else "blockquote"
        elif tag == "tg-emoji":
            kind = "custom_emoji"
            extra["custom_emoji_id"] = attributes.get("emoji-id", "")
            if not extra["custom_emoji_id"]:
                raise EntityParseError('Tag "tg-emoji" must have attribute "emoji-id"')
        else:
            raise EntityParseError(f'Unsupported start tag "{tag}"')
        self.stack.append(_OpenTag(tag, kind, self.out.pos, extra))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1].tag != tag:
            raise EntityParseError(f'Unmatched end tag "{tag}"')
        opened = self.stack.pop()
        if opened.kind is None:
            return
        if opened.kind == "text_link" and not opened.extra.get("url"):
            return
        self.out.emit(opened.kind, opened.start, **opened.extra)


def _parse_html(text: str) -> FormattedText:
    parser = _HtmlParser()
    try:
        parser.feed(text)
        parser.close()
    except EntityParseError:
        raise
    except Exception:  # html.parser asserts on some malformed markup
        raise EntityParseError("Can't parse HTML markup") from None
    if parser.stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{parser.stack[-1].tag}"')
    return parser.out.result()


_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MDV2_MARKERS = {
    "*": "bold",
    "_": "italic",
    "__": "underline",
    "~": "strikethrough",
    "||": "spoiler",
}
_ENTITY_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}


class _MarkdownV2:
    """MarkdownV2 as documented: markers toggle, nesting must be proper, reserved characters
    must be escaped with a backslash outside code."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.i = 0
        self.out = _Builder()
        # (marker, entity type, utf16 start, source index, extra)
        self.stack: list[tuple[str, str, int, int, dict[str, Any]]] = []
        self.quote_start: int | None = None
        self.quote_expandable = False

    def fail(self, message: str) -> EntityParseError:
        return EntityParseError(message)

    def parse(self) -> FormattedText:
        src = self.src
        line_start = True
        while self.i < len(src):
            char = src[self.i]
            if line_start:
                line_start = False
                if self._line_quote_marker():
                    continue
                if self.quote_start is not None:
                    self._close_quote(before_newline=True)
            if char == "\\":
                self._escape()
            elif char == "`":
                self._code()
            elif char == "\n":
                self.out.add(char)
                self.i += 1
                line_start = True
            elif src.startswith("||", self.i) and self._closes_expandable_quote():
                self.i += 2
                self.quote_expandable = True
            elif src.startswith("||", self.i) or src.startswith("__", self.i):
                self._toggle(src[self.i : self.i + 2])
            elif char in "*_~":
                self._toggle(char)
            elif char == "[" or (char == "!" and src.startswith("![", self.i)):
                is_emoji = char == "!"
                self.stack.append(
                    ("[", "custom_emoji" if is_emoji else "text_link", self.out.pos, self.i, {})
                )
                self.i += 2 if is_emoji else 1
            elif char == "]" and self.stack and self.stack[-1][0] == "[":
                self._link_end()
            elif char in _MDV2_RESERVED:
                raise self.fail(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")
            else:
                self.out.add(char)
                self.i += 1
        if self.stack:
            _, kind, _, index, _ = self.stack[-1]
            name = _ENTITY_NAMES.get(kind, kind)
            raise self.fail(f"Can't find end of {name} entity at byte offset {_byte_offset(src, index)}")
        if self.quote_start is not None:
            self._close_quote(before_newline=False)
        return self.out.result()

    def _line_quote_marker(self) -> bool:
        src = self.src
        if src.startswith("**>", self.i):
            if self.quote_start is None:
                self.quote_start = self.out.pos
            self.i += 3
            return True
        if src.startswith(">", self.i):
            if self.quote_start is None:
                self.quote_start = self.out.pos
            self.i += 1
            return True
        return False

    def _closes_expandable_quote(self) -> bool:
        after = self.i + 2
        return (
            self.quote_start is not None
            and (after == len(self.src) or self.src[after] == "\n")
            and not any(m == "||" for m, *_ in self.stack)
        )

    def _close_quote(self, *, before_newline: bool) -> None:
        assert self.quote_start is not None
        end = self.out.pos - 1 if before_newline else self.out.pos
        kind = "expandable_blockquote" if self.quote_expandable else "blockquote"
        if end > self.quote_start:
            self.out.entities.append(
                {"offset": self.quote_start, "length": end - self.quote_start, "type": kind}
            )
        self.quote_start = None
        self.quote_expandable = False

    def _escape(self) -> None:
        src = self.src
        if self.i + 1 < len(src) and 1 <= ord(src[self.i + 1]) <= 126:
            self.out.add(src[self.i + 1])
            self.i += 2
            return
        raise self.fail("Character '\\' is reserved and must be escaped with the preceding '\\'")

    def _read_until(self, terminator: str, start: int) -> tuple[str, int]:
        """Read code/pre/url contents, where only backslash escapes apply."""
        src = self.src
        chunk: list[str] = []
        j = start
        while j < len(src):
            if src[j] == "\\" and j + 1 < len(src) and 1 <= ord(src[j + 1]) <= 126:
                chunk.append(src[j + 1])
                j += 2
                continue
            if src.startswith(terminator, j):
                return "".join(chunk), j
            chunk.append(src[j])
            j += 1
        name = {"```": "Pre", "`": "Code"}.get(terminator, "TextUrl")
        raise self.fail(
            f"Can't find end of {name} entity at byte offset {_byte_offset(src, start - len(terminator))}"
        )

    def _code(self) -> None:
        src = self.src
        if src.startswith("```", self.i):
            content, end = self._read_until("```", self.i + 3)
            language = ""
            first, newline, rest = content.partition("\n")
            if newline and first and " " not in first.strip():
                language, content = first.strip(), rest
            start = self.out.pos
            self.out.add(content)
            self.out.emit("pre", start, language=language)
            self.i = end + 3
            return
        content, end = self._read_until("`", self.i + 1)
        start = self.out.pos
        self.out.add(content)
        self.out.emit("code", start)
        self.i = end + 1

    def _toggle(self, marker: str) -> None:
        kind = _MDV2_MARKERS[marker]
        if self.stack and self.stack[-1][0] == marker:
            _, _, start, _, _ = self.stack.pop()
            self.out.emit(kind, start)
        elif any(entry[0] == marker for entry in self.stack):
            _, open_kind, _, index, _ = self.stack[-1]
            raise self.fail(
                f"Can't find end of {_ENTITY_NAMES.get(open_kind, open_kind)} entity at byte "
                f"offset {_byte_offset(self.src, index)}"
            )
        else:
            self.stack.append((marker, kind, self.out.pos, self.i, {}))
        self.i += len(marker)

    def _link_end(self) -> None:
        src = self.src
        _, kind, start, index, _ = self.stack.pop()
        if not src.startswith("(", self.i + 1):
            raise self.fail(
                f"Can't find end of {_ENTITY_NAMES[kind]} entity at byte offset {_byte_offset(src, index)}"
            )
        url, end = self._read_until(")", self.i + 2)
        self.i = end + 1
        if kind == "custom_emoji":
            match = re.fullmatch(r"tg://emoji\?id=(\d+)", url)
            if not match:
                raise self.fail("Custom emoji entity must contain a tg://emoji URL")
            self.out.emit("custom_emoji", start, custom_emoji_id=match.group(1))
        elif url:
            self.out.emit("text_link", start, url=url)


def _parse_legacy_markdown(text: str) -> FormattedText:
    """The old "Markdown" mode: no nesting, ``*bold* _italic_ `code` ```pre``` [text](url)``."""
    out = _Builder()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in "_*`[":
            out.add(text[i + 1])
            i += 2
            continue
        if char in "*_`[":
            if text.startswith("```", i):
                end = text.find("```", i + 3)
                if end < 0:
                    raise _legacy_unclosed(text, i)
                content = text[i + 3 : end]
                language = ""
                first, newline, rest = content.partition("\n")
                if newline and first and " " not in first.strip():
                    language, content = first.strip(), rest
                start = out.pos
                out.add(content)
                out.emit("pre", start, language=language)
                i = end + 3
                continue
            if char == "[":
                close = text.find("](", i + 1)
                end = text.find(")", close + 2) if close >= 0 else -1
                if close < 0 or end < 0:
                    raise _legacy_unclosed(text, i)
                start = out.pos
                out.add(text[i + 1 : close])
                url = text[close + 2 : end]
                if url:
                    out.emit("text_link", start, url=url)
                i = end + 1
                continue
            end = text.find(char, i + 1)
            if end < 0:
                raise _legacy_unclosed(text, i)
            start = out.pos
            out.add(text[i + 1 : end])
            out.emit({"*": "bold", "_": "italic", "`": "code"}[char], start)
            i = end + 1
            continue
        out.add(char)
        i += 1
    return out.result()


def _legacy_unclosed(text: str, index: int) -> EntityParseError:
    return EntityParseError(
        f"Can't find end of the entity starting at byte offset {_byte_offset(text, index)}"
    )
