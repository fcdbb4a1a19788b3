"""What a client's phone can send, read from control-API requests (JSON, or multipart with a
``file`` part) and shaped as the object Meta's inbound-message webhook carries under ``type``:

- ``text`` -> ``{"body"}``
- ``location`` -> ``{"latitude", "longitude", "name"?, "address"?, "url"?}``
- ``contacts`` -> ``[{"name": {"formatted_name", ...}, "phones": [{"phone", "wa_id"?, "type"?}], ...}]``
- ``reaction`` -> ``{"message_id", "emoji"}`` (``emoji`` omitted when the reaction is removed)
- a file -> ``image``/``video``/``audio``/``document``/``sticker``:
  ``{"caption"?, "filename"?, "mime_type", "sha256", "id", "voice"?, "animated"?}``
- ``unsupported`` -> ``type: "unsupported"`` with ``errors: [{"code": 131051, ...}]``
"""

from __future__ import annotations

import json
import mimetypes
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from .media import MB, MediaStore, base_mime, is_animated_webp
from .state import ClientError

MAX_CONTROL_JSON = 1024 * 1024
# Cloud API handles media up to 100 MB; a user's larger file reaches the business as an error.
MAX_CLIENT_FILE = 100 * MB
CLIENT_TEXT_MAX = 65536
FILE_KINDS = ("image", "video", "audio", "voice", "document", "sticker")
CAPTION_KINDS = ("image", "video", "document")
CONTENT_KEYS = ("text", "location", "contacts", "reaction", "unsupported")
DEFAULT_MIME = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "voice": "audio/ogg; codecs=opus",
    "document": "application/octet-stream",
    "sticker": "image/webp",
}
# The error Meta puts on an inbound message of a type the Cloud API does not support
# (the "unsupported" example of the messages webhook reference).
UNSUPPORTED_ERRORS = [
    {
        "code": 131051,
        "title": "Message type unknown",
        "message": "Message type unknown",
        "error_data": {"details": "Message type is currently not supported."},
    }
]


@dataclass
class UploadedFile:
    data: bytes
    filename: str | None
    content_type: str | None


@dataclass
class ControlBody:
    values: dict[str, Any] = field(default_factory=dict)
    file: UploadedFile | None = None


async def read_body(request: web.Request) -> ControlBody:
    """JSON object, or multipart/form-data (string fields plus an optional ``file`` part)."""
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request)
    return ControlBody(values=await read_json(request))


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_CONTROL_JSON:
        raise ClientError("the JSON body is too large", 413)
    raw = await request.content.read(MAX_CONTROL_JSON + 1)
    if len(raw) > MAX_CONTROL_JSON:
        raise ClientError("the JSON body is too large", 413)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ClientError("body must be valid JSON in UTF-8") from None
    if not isinstance(body, dict):
        raise ClientError("body must be a JSON object")
    return body


async def _read_multipart(request: web.Request) -> ControlBody:
    body = ControlBody()
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise ClientError("nested multipart bodies are not supported")
        if part.name == "file":
            data = bytearray()
            while chunk := await part.read_chunk(1024 * 1024):
                data.extend(chunk)
                if len(data) > MAX_CLIENT_FILE:
                    raise ClientError("files are limited to 100 MB (the Cloud API maximum)", 413)
            body.file = UploadedFile(bytes(data), part.filename, part.headers.get("Content-Type"))
        elif part.name:
            value = await part.read(decode=True)
            if len(value) > MAX_CONTROL_JSON:
                raise ClientError(f"field {part.name!r} is too large", 413)
            body.values[part.name] = value.decode("utf-8", "replace")
    return body


@dataclass
class InboundContent:
    kind: str  # webhook ``type``
    content: Any
    errors: list[dict[str, Any]] | None = None


def parse_content(body: ControlBody, media: MediaStore, phone_number_id: str) -> InboundContent:
    """Exactly one of the content keys, or a file."""
    present = [key for key in CONTENT_KEYS if body.values.get(key) is not None]
    if body.file is not None:
        if present:
            raise ClientError(f"send a file or {present[0]!r}, not both")
        return _file(body, media, phone_number_id)
    if len(present) != 1:
        raise ClientError(f"exactly one of {list(CONTENT_KEYS)} (or a multipart file) is required")
    key = present[0]
    value = body.values[key]
    if key == "text":
        if not isinstance(value, str) or not value.strip():
            raise ClientError('"text" must be a non-empty string')
        if len(value) > CLIENT_TEXT_MAX:
            raise ClientError(f'"text" is limited to {CLIENT_TEXT_MAX} characters')
        return InboundContent("text", {"body": value})
    if key == "location":
        return InboundContent("location", _location(_json_field(value, key)))
    if key == "contacts":
        return InboundContent("contacts", _contacts(_json_field(value, key)))
    if key == "reaction":
        return InboundContent("reaction", _reaction(_json_field(value, key)))
    return InboundContent("unsupported", None, [dict(e) for e in UNSUPPORTED_ERRORS])


def _json_field(value: Any, key: str) -> Any:
    """Multipart fields are strings; JSON-valued ones are decoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ClientError(f'"{key}" must be JSON') from None
    return value


def _location(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ClientError('"location" must be an object')
    location: dict[str, Any] = {}
    for key, low, high in (("latitude", -90, 90), ("longitude", -180, 180)):
        number = value.get(key)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not low <= number <= high:
            raise ClientError(f'"location.{key}" must be a number in [{low}, {high}]')
        location[key] = number
    for key in ("name", "address", "url"):
        if value.get(key) is not None:
            if not isinstance(value[key], str):
                raise ClientError(f'"location.{key}" must be a string')
            location[key] = value[key]
    return location


def _contacts(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ClientError('"contacts" must be a non-empty list')
    contacts = []
    for index, contact in enumerate(value):
        name = contact.get("name") if isinstance(contact, dict) else None
        if not isinstance(name, dict) or not isinstance(name.get("formatted_name"), str):
            raise ClientError(f'"contacts[{index}].name.formatted_name" is required')
        phones = contact.get("phones", [])
        if not isinstance(phones, list) or not all(
            isinstance(p, dict) and isinstance(p.get("phone"), str) for p in phones
        ):
            raise ClientError(f'"contacts[{index}].phones" must be a list of {{"phone", ...}}')
        contacts.append(contact)
    return contacts


def _reaction(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("message_id"), str):
        raise ClientError('"reaction" must be {"message_id", "emoji"}')
    emoji = value.get("emoji")
    if emoji is not None and not isinstance(emoji, str):
        raise ClientError('"reaction.emoji" must be a string ("" or absent removes it)')
    reaction: dict[str, Any] = {"message_id": value["message_id"]}
    if emoji:
        reaction["emoji"] = emoji  # Meta omits the field when a reaction is removed
    return reaction


def _flag(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes")


def _file(body: ControlBody, media: MediaStore, phone_number_id: str) -> InboundContent:
    assert body.file is not None
    values = body.values
    kind = values.get("kind") or "document"
    if kind not in FILE_KINDS:
        raise ClientError(f'"kind" must be one of {list(FILE_KINDS)}')
    if not body.file.data:
        raise ClientError("the file is empty")
    file_name = values.get("file_name") or body.file.filename
    mime_type = (
        values.get("mime_type")
        or (mimetypes.guess_type(file_name)[0] if file_name and kind != "voice" else None)
        or DEFAULT_MIME[kind]
    )
    caption = values.get("caption")
    if caption is not None and caption != "" and kind not in CAPTION_KINDS:
        raise ClientError(f"a {kind} cannot have a caption")
    if kind == "sticker" and base_mime(mime_type) != "image/webp":
        raise ClientError("stickers are image/webp")
    stored = media.add_inbound(
        phone_number_id, body.file.data, mime_type, file_name if kind == "document" else None
    )
    content: dict[str, Any] = {}
    if caption:
        content["caption"] = caption
    if kind == "document" and file_name:
        content["filename"] = file_name
    content.update({"mime_type": mime_type, "sha256": stored.sha256_b64, "id": stored.id})
    webhook_type = "audio" if kind == "voice" else kind
    if webhook_type == "audio":
        content["voice"] = kind == "voice"
    if kind == "sticker":
        animated = _flag(values.get("animated"))
        content["animated"] = is_animated_webp(body.file.data) if animated is None else animated
    return InboundContent(webhook_type, content)
