"""What a client's LINE app sends, turned into message events the way LINE's webhook carries
them (reference, "Message event"):

- ``text``: ``id``, ``type``, ``quoteToken``, ``text``, ``emojis``? (``index``, ``length``,
  ``productId``, ``emojiId``), ``mention.mentionees``? (``index``, ``length``, ``type``: user|all,
  ``userId``, ``isSelf``), ``quotedMessageId``?
- ``image``: ``id``, ``type``, ``quoteToken``, ``contentProvider: {"type": "line"}``,
  ``imageSet: {"id", "index", "total"}`` when several images are sent at once (one event each)
- ``video``: ``id``, ``type``, ``quoteToken``, ``duration``?, ``contentProvider``
- ``audio``: ``id``, ``type``, ``duration``?, ``contentProvider``
- ``file``: ``id``, ``type``, ``fileName``, ``fileSize``
- ``location``: ``id``, ``type``, ``title``?, ``address``?, ``latitude``, ``longitude``
- ``sticker``: ``id``, ``type``, ``quoteToken``, ``packageId``, ``stickerId``,
  ``stickerResourceType``, ``keywords``? (≤ 15), ``text``? (message stickers, ≤ 100),
  ``quotedMessageId``?

The bytes of images, videos, audio and files are kept for Get content.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from . import ids
from .events import Events
from .media import CLIENT_TYPES, file_type, sniff
from .messages import utf16_len
from .state import Chat, ClientError, SandboxState, StoredMessage, User

CONTENT_KEYS = ("text", "image", "images", "video", "audio", "file", "location", "sticker")
MAX_CLIENT_FILE = 50 * 1024 * 1024
STICKER_RESOURCE_TYPES = (
    "STATIC",
    "ANIMATION",
    "SOUND",
    "ANIMATION_SOUND",
    "POPUP",
    "POPUP_SOUND",
    "CUSTOM",
    "MESSAGE",
    "NAME_TEXT",
    "PER_STICKER_TEXT",
)
QUOTE_TOKEN_TYPES = frozenset({"text", "sticker", "image", "video"})  # "Get quote tokens via webhook"


@dataclass
class Inbound:
    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None
    mime: str | None = None
    preview: bytes | None = None


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ClientError(f'"{name}" must be base64-encoded bytes')
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(f'"{name}" is not valid base64') from None
    if len(data) > MAX_CLIENT_FILE:
        raise ClientError(f'"{name}" is larger than 50 MB', 413)
    return data


def _int(body: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ClientError(f'"{name}" is required')
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ClientError(f'"{name}" must be a non-negative integer')
    return value


def _text(state: SandboxState, body: dict[str, Any]) -> Inbound:
    text = body["text"]
    if not isinstance(text, str) or not text:
        raise ClientError('"text" must be a non-empty string')
    fields: dict[str, Any] = {"text": text}
    length = utf16_len(text)
    emojis = body.get("emojis")
    if emojis is not None:
        if not isinstance(emojis, list):
            raise ClientError('"emojis" must be a list')
        fields["emojis"] = [_span(e, length, "emoji", ("productId", "emojiId")) for e in emojis]
    mention = body.get("mention")
    if mention is not None:
        mentionees = mention.get("mentionees") if isinstance(mention, dict) else mention
        if not isinstance(mentionees, list) or not mentionees or len(mentionees) > 20:
            raise ClientError('"mention" must be a list of 1 to 20 mentionees ("Max: 20 mentions")')
        fields["mention"] = {"mentionees": [_mentionee(state, m, length) for m in mentionees]}
    return Inbound("text", fields)


def _span(value: Any, length: int, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ClientError(f"each {what} must be an object")
    index, size = value.get("index"), value.get("length")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, size)):
        raise ClientError(f'each {what} needs integer "index" and "length" (UTF-16 code units)')
    assert isinstance(index, int) and isinstance(size, int)
    if index < 0 or size < 1 or index + size > length:
        raise ClientError(f"{what} at {index}+{size} lies outside the text ({length} UTF-16 code units)")
    span: dict[str, Any] = {"index": index, "length": size}
    for key in keys:
        if not isinstance(value.get(key), str) or not value[key]:
            raise ClientError(f'each {what} needs "{key}"')
        span[key] = value[key]
    return span


def _mentionee(state: SandboxState, value: Any, length: int) -> dict[str, Any]:
    kind = value.get("type", "user") if isinstance(value, dict) else None
    if kind not in ("user", "all"):
        raise ClientError('a mentionee "type" is "user" or "all"')
    span = _span(value, length, "mentionee", ())
    span["type"] = kind
    if kind == "user":
        target = value.get("userId")
        if not isinstance(target, str):
            raise ClientError('a "user" mentionee needs "userId" (a user id, an alias, or the bot\'s id)')
        user_id = target if target == state.bot.user_id else state.resolve_user(target)
        span["userId"] = user_id
        span["isSelf"] = user_id == state.bot.user_id
    return span


def _sticker(body: dict[str, Any]) -> Inbound:
    sticker = body["sticker"]
    if not isinstance(sticker, dict):
        raise ClientError('"sticker" must be an object {"packageId", "stickerId", ...}')
    fields: dict[str, Any] = {}
    for key in ("packageId", "stickerId"):
        value = sticker.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value:
            raise ClientError(f'"sticker.{key}" is required')
        fields[key] = value
    kind = sticker.get("stickerResourceType", "STATIC")
    if kind not in STICKER_RESOURCE_TYPES:
        raise ClientError(f'"sticker.stickerResourceType" must be one of {", ".join(STICKER_RESOURCE_TYPES)}')
    fields["stickerResourceType"] = kind
    keywords = sticker.get("keywords")
    if keywords is not None:
        if (
            not isinstance(keywords, list)
            or len(keywords) > 15
            or not all(isinstance(k, str) for k in keywords)
        ):
            raise ClientError('"sticker.keywords" is a list of up to 15 strings')
        fields["keywords"] = list(keywords)
    text = sticker.get("text")
    if text is not None:
        if kind != "MESSAGE" or not isinstance(text, str) or len(text) > 100:
            raise ClientError('"sticker.text" (≤ 100 characters) is only for MESSAGE stickers')
        fields["text"] = text
    return Inbound("sticker", fields)


def _location(body: dict[str, Any]) -> Inbound:
    place = body["location"]
    if not isinstance(place, dict):
        raise ClientError('"location" must be an object {"latitude", "longitude", "title"?, "address"?}')
    fields: dict[str, Any] = {}
    for key in ("title", "address"):
        if place.get(key) is not None:
            if not isinstance(place[key], str):
                raise ClientError(f'"location.{key}" must be a string')
            fields[key] = place[key]
    for key in ("latitude", "longitude"):
        value = place.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ClientError(f'"location.{key}" must be a number')
        fields[key] = value
    return Inbound("location", fields)


def _media(body: dict[str, Any], kind: str) -> list[Inbound]:
    if kind == "images":
        blobs = body["images"]
        if not isinstance(blobs, list) or not blobs:
            raise ClientError('"images" must be a non-empty list of base64 images')
        return [_one_image(_b64(b, "images[]"), body.get("mime_type")) for b in blobs]
    data = _b64(body[kind], kind)
    mime = body.get("mime_type")
    if mime is not None and not isinstance(mime, str):
        raise ClientError('"mime_type" must be a string')
    if kind == "image":
        return [_one_image(data, mime)]
    if kind == "file":
        name = body.get("fileName")
        if not isinstance(name, str) or not name:
            raise ClientError('a file needs "fileName"')
        return [Inbound("file", {"fileName": name, "fileSize": len(data)}, data, mime or file_type(name))]
    fields: dict[str, Any] = {}
    duration = _int(body, "duration")
    if duration is not None:
        fields["duration"] = duration
    preview = (
        _b64(body["preview"], "preview") if kind == "video" and body.get("preview") is not None else None
    )
    return [Inbound(kind, fields, data, mime or sniff(data) or CLIENT_TYPES[kind], preview)]


def _one_image(data: bytes, mime: Any) -> Inbound:
    if mime is not None and not isinstance(mime, str):
        raise ClientError('"mime_type" must be a string')
    return Inbound("image", {}, data, mime or sniff(data) or CLIENT_TYPES["image"])


def parse_content(state: SandboxState, body: dict[str, Any]) -> list[Inbound]:
    """Exactly one content key of ``body``, as the messages it sends."""
    present = [k for k in CONTENT_KEYS if k in body]
    if len(present) != 1:
        raise ClientError(f"give exactly one of {', '.join(CONTENT_KEYS)}")
    kind = present[0]
    if kind == "text":
        return [_text(state, body)]
    if kind == "sticker":
        return [_sticker(body)]
    if kind == "location":
        return [_location(body)]
    return _media(body, kind)


def client_sends(
    state: SandboxState, events: Events, chat: Chat, user: User, items: list[Inbound], quote: Any = None
) -> list[dict[str, Any]]:
    """Store the client's messages and queue one message event each; answers what was sent."""
    quoted: StoredMessage | None = None
    if quote is not None:
        if not isinstance(quote, str):
            raise ClientError('"quote" must be the id of a message in this chat')
        quoted = state.messages.get(quote)
        if quoted is None or quoted.chat_id != chat.chat_id:
            raise ClientError("the quoted message is not in this chat", 404)
        if items[0].type not in ("text", "sticker"):
            raise ClientError("only text and sticker messages can quote (quotedMessageId)")
    image_set = ids.image_set_id() if len(items) > 1 else None
    answers = []
    for index, item in enumerate(items, start=1):
        message_id = ids.message_id()
        quote_token = ids.quote_token() if item.type in QUOTE_TOKEN_TYPES else None
        content: dict[str, Any] = {"id": message_id, "type": item.type}
        if quote_token:
            content["quoteToken"] = quote_token
        content.update(item.fields)
        if item.type in ("image", "video", "audio"):
            content["contentProvider"] = {"type": "line"}
        if image_set is not None:
            content["imageSet"] = {"id": image_set, "index": index, "total": len(items)}
        if quoted is not None:
            content["quotedMessageId"] = quoted.id
        stored = StoredMessage(
            seq=state.next_seq(),
            id=message_id,
            chat_id=chat.chat_id,
            sender=user.user_id,
            type=item.type,
            content=content,
            timestamp=state.clock.ms(),
            quote_token=quote_token,
            quoted_id=quoted.id if quoted else None,
            data=item.data,
            mime_type=item.mime,
            preview=item.preview,
        )
        state.add_message(stored)
        event = events.emit(chat, "message", user.user_id, message=content)
        answer: dict[str, Any] = {"id": message_id, "webhookEventId": event["webhookEventId"]}
        answer["replyToken"] = event["replyToken"]
        if quote_token:
            answer["quoteToken"] = quote_token
        answers.append(answer)
    if chat.kind == "user":
        user.last_message_at = state.now()
    return answers
