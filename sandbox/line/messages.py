"""Validation of the message objects the account sends, with LINE's property paths.

The rules are the reference's ("Message objects"): up to 5 messages per request; text ≤ 5000
characters counted in UTF-16 code units ("Character counting in a text"), LINE emoji ``$``
placeholders at the given indexes (≤ 20); image/video/audio URLs HTTPS and ≤ 2000 characters;
audio ``duration`` in milliseconds; location ``title`` and ``address`` ≤ 100 characters; video
``trackingId`` ≤ 100 characters and not for group chats or multi-person chats; ``quoteToken``
only on text, textV2 and sticker messages, from the same chat.

Every problem becomes one ``details`` entry (``{"message", "property"}``, property like
``messages[0].text``); a value of the wrong JSON type fails the whole body at once, as LINE's
reader does (``The property, 'messages[0].duration', in the request body is invalid``).

Where LINE documents the detail text the sandbox uses it ("May not be empty", "Must be one of
the following values: [...]", "Size must be between 1 and 5", "Length must be between 0 and
5000"; "must be specified" as LINE answers it for missing properties in bot logs); the rest is
marked ``# guess:``. Message types LINE accepts but the
sandbox does not emulate (textV2, imagemap, template, flex, coupon) are refused with a detail
that says so.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .errors import MAY_NOT_BE_EMPTY, MUST_BE_SPECIFIED, TYPE_VALUES, detail
from .jsonbody import Body
from .state import SandboxState
from .webhook import LOCAL_HOSTS

MAX_MESSAGES = 5
MAX_TEXT = 5000
MAX_URL = 2000
MAX_EMOJIS = 20
MAX_LOCATION_TEXT = 100
EMULATED = ("text", "image", "video", "audio", "location", "sticker")
NOT_EMULATED = ("textV2", "imagemap", "template", "flex", "coupon")
#: Messages whose sentMessages entry has a quoteToken ("Get quote tokens").
QUOTABLE = frozenset({"text", "textV2", "sticker", "image", "video", "template", "flex"})
#: Messages that may carry a quoteToken ("Send quote messages").
QUOTING = frozenset({"text", "textV2", "sticker"})
TRACKING_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.=,+*()%$&;:@{}!?<>[]"
)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def utf16_at(text: str, index: int) -> str | None:
    """The character starting at UTF-16 offset ``index`` (None if it falls inside a pair)."""
    offset = 0
    for char in text:
        if offset == index:
            return char
        offset += 2 if ord(char) > 0xFFFF else 1
        if offset > index:
            return None
    return None


def length_detail(low: int, high: int) -> str:
    return f"Length must be between {low} and {high}"


class MessageChecker:
    """Checks ``messages`` of a push/reply body for a target chat kind."""

    def __init__(self, body: Body, state: SandboxState, chat_kind: str | None, chat_id: str | None) -> None:
        self.body = body
        self.state = state
        self.chat_kind = chat_kind
        self.chat_id = chat_id
        self.details: list[dict[str, str]] = []

    def problem(self, prop: str, message: str) -> None:
        self.details.append(detail(prop, message))

    def check(self, value: Any) -> list[dict[str, Any]]:
        """The messages, normalised (sticker ids as strings); problems go to ``details``."""
        if value is None:
            self.problem("messages", MUST_BE_SPECIFIED)
            return []
        if not isinstance(value, list):
            raise self.body.invalid("messages")
        if not 1 <= len(value) <= MAX_MESSAGES:
            # documented ("Validate message objects of a push message", error examples)
            self.problem("messages", f"Size must be between 1 and {MAX_MESSAGES}")
            return []
        return [self._message(f"messages[{i}]", m) for i, m in enumerate(value)]

    # ------------------------------------------------------------------ one message

    def _message(self, p: str, message: Any) -> dict[str, Any]:
        if not isinstance(message, dict):
            raise self.body.invalid(p)
        message = dict(message)
        kind = message.get("type")
        if kind is None:
            self.problem(f"{p}.type", MUST_BE_SPECIFIED)
            return message
        if not isinstance(kind, str):
            raise self.body.invalid(f"{p}.type")
        if kind in NOT_EMULATED:
            self.problem(
                f"{p}.type",
                f"sandbox: '{kind}' messages are not emulated (text, image, video, audio, location and sticker are)",
            )
            return message
        if kind not in EMULATED:
            self.problem(f"{p}.type", TYPE_VALUES)
            return message
        getattr(self, f"_{kind}")(p, message)
        self._common(p, message, kind)
        return message

    def _common(self, p: str, message: dict[str, Any], kind: str) -> None:
        token = message.get("quoteToken")
        if token is not None:
            if not isinstance(token, str):
                raise self.body.invalid(f"{p}.quoteToken")
            if kind not in QUOTING:
                # guess: LINE documents that only text, textV2 and sticker messages can quote
                self.problem(f"{p}.quoteToken", f"quoteToken can't be used with '{kind}' messages")
            else:
                quoted = self.state.quote_tokens.get(token)
                if quoted is None or (self.chat_id is not None and quoted.chat_id != self.chat_id):
                    # guess: quote tokens "can only be used in ... chats where the message to be
                    # quoted was sent"; the detail text is not documented
                    self.problem(f"{p}.quoteToken", "Invalid quote token")
        sender = message.get("sender")
        if sender is not None:
            if not isinstance(sender, dict):
                raise self.body.invalid(f"{p}.sender")
            name = sender.get("name")
            if name is not None:
                if not isinstance(name, str):
                    raise self.body.invalid(f"{p}.sender.name")
                if len(name) > 20:
                    self.problem(f"{p}.sender.name", length_detail(0, 20))
            icon = sender.get("iconUrl")
            if icon is not None:
                self._url(f"{p}.sender.iconUrl", icon)
        quick = message.get("quickReply")
        if quick is not None:
            if not isinstance(quick, dict):
                raise self.body.invalid(f"{p}.quickReply")
            items = quick.get("items")
            if not isinstance(items, list):
                raise self.body.invalid(f"{p}.quickReply.items")
            if len(items) > 13:
                self.problem(f"{p}.quickReply.items", "Size must be between 0 and 13")  # guess: wording

    def _string(
        self, prop: str, value: Any, *, required: bool = True, max_len: int | None = None
    ) -> str | None:
        if value is None:
            if required:
                self.problem(prop, MUST_BE_SPECIFIED)
            return None
        if not isinstance(value, str):
            raise self.body.invalid(prop)
        if required and value == "":
            self.problem(prop, MAY_NOT_BE_EMPTY)
        elif max_len is not None and utf16_len(value) > max_len:
            self.problem(prop, length_detail(0, max_len))
        return value

    def _url(self, prop: str, value: Any) -> None:
        url = self._string(prop, value, max_len=MAX_URL)
        if not url or utf16_len(url) > MAX_URL:
            return
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            parts, host = None, None
        https = parts is not None and parts.scheme == "https" and bool(host)
        local = parts is not None and parts.scheme == "http" and host in LOCAL_HOSTS
        if not (https or local):
            # guess: LINE requires HTTPS ("Protocol: HTTPS (TLS 1.2 or later)"); the detail text
            # is not documented. Plain http to 127.0.0.1/localhost is the sandbox's allowance.
            self.problem(prop, "Must be a valid HTTPS URL")

    def _text(self, p: str, m: dict[str, Any]) -> None:
        text = self._string(f"{p}.text", m.get("text"), max_len=MAX_TEXT)
        emojis = m.get("emojis")
        if emojis is None:
            return
        if not isinstance(emojis, list):
            raise self.body.invalid(f"{p}.emojis")
        if len(emojis) > MAX_EMOJIS:
            self.problem(f"{p}.emojis", f"Size must be between 0 and {MAX_EMOJIS}")  # guess: wording
        for j, emoji in enumerate(emojis):
            q = f"{p}.emojis[{j}]"
            if not isinstance(emoji, dict):
                raise self.body.invalid(q)
            index = emoji.get("index")
            if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
                raise self.body.invalid(f"{q}.index")
            self._string(f"{q}.productId", emoji.get("productId"))
            self._string(f"{q}.emojiId", emoji.get("emojiId"))
            if text is not None and (index is None or utf16_at(text, index) != "$"):
                # "If you specify a position that doesn't match the position of $, the API
                # returns HTTP 400 Bad request." guess: the detail text
                self.problem(f"{q}.index", "Must point at a '$' placeholder in the text")

    def _image(self, p: str, m: dict[str, Any]) -> None:
        self._url(f"{p}.originalContentUrl", m.get("originalContentUrl"))
        self._url(f"{p}.previewImageUrl", m.get("previewImageUrl"))

    def _video(self, p: str, m: dict[str, Any]) -> None:
        self._image(p, m)
        tracking = m.get("trackingId")
        if tracking is None:
            return
        value = self._string(f"{p}.trackingId", tracking, max_len=100)
        if value and not set(value) <= TRACKING_CHARS:
            self.problem(f"{p}.trackingId", "Contains characters that are not allowed")  # guess: wording
        if self.chat_kind in ("group", "room"):
            # "You can't use the trackingId property in messages addressed to group chats or
            # multi-person chats." guess: the detail text
            self.problem(f"{p}.trackingId", "trackingId can't be used in group chats or multi-person chats")

    def _audio(self, p: str, m: dict[str, Any]) -> None:
        self._url(f"{p}.originalContentUrl", m.get("originalContentUrl"))
        duration = m.get("duration")
        if duration is None:
            self.problem(f"{p}.duration", MUST_BE_SPECIFIED)
        elif not isinstance(duration, int) or isinstance(duration, bool):
            raise self.body.invalid(f"{p}.duration")
        elif duration < 0:
            self.problem(f"{p}.duration", "Must be greater than or equal to 0")  # guess: wording

    def _location(self, p: str, m: dict[str, Any]) -> None:
        self._string(f"{p}.title", m.get("title"), max_len=MAX_LOCATION_TEXT)
        self._string(f"{p}.address", m.get("address"), max_len=MAX_LOCATION_TEXT)
        for key in ("latitude", "longitude"):
            value = m.get(key)
            if value is None:
                self.problem(f"{p}.{key}", MUST_BE_SPECIFIED)
            elif not isinstance(value, (int, float)) or isinstance(value, bool):
                raise self.body.invalid(f"{p}.{key}")

    def _sticker(self, p: str, m: dict[str, Any]) -> None:
        for key in ("packageId", "stickerId"):
            value = m.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                m[key] = value = str(value)  # LINE's reader takes a JSON number for a string id
            self._string(f"{p}.{key}", value)
