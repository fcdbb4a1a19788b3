"""What a person types or attaches on their phone, read from a control API request: a text with
entities, a location, a contact, or a file (``multipart/form-data`` with a ``file`` part and a
``kind``) - turned into the ``Message`` fields the bot will receive.

Shared by the private-chat, group and business control endpoints, so a client's photo looks the
same to the bot wherever it was sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import media
from .errors import ApiError
from .params import Params, UploadedFile, loads_utf8, read_limited, read_multipart
from .state import ClientError, SandboxState

MAX_CONTROL_BODY = 1024 * 1024
MAX_CLIENT_UPLOAD = 50 * 1000 * 1000 + 1024 * 1024  # a 50 MB file plus the form around it

_INT_FIELDS = ("width", "height", "duration", "length", "reply_to_message_id")


@dataclass
class ClientBody:
    """A control request body: JSON values, or form fields plus the uploaded ``file`` part."""

    values: dict[str, Any]
    upload: UploadedFile | None = None

    def get_int(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise ClientError(f'"{name}" must be an integer')
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ClientError(f'"{name}" must be an integer')

    def get_json(self, name: str) -> Any:
        """A structured field: already structured in JSON bodies, a JSON string in forms."""
        value = self.values.get(name)
        if isinstance(value, str) and self.upload is not None:
            try:
                return loads_utf8(value.encode("utf-8"))
            except ValueError:
                raise ClientError(f'"{name}" must be JSON') from None
        return value


async def read_body(request: web.Request, limit: int = MAX_CONTROL_BODY) -> ClientBody:
    """JSON object or ``multipart/form-data``; an empty body is an empty object."""
    if request.content_type == "multipart/form-data":
        declared = request.content_length
        if declared is not None and declared > MAX_CLIENT_UPLOAD:
            raise ClientError("the upload is larger than Telegram's 50 MB limit", status=413)
        params = Params()
        try:
            await read_multipart(request, params)
        except ApiError as exc:
            status = 413 if exc.error_code == 413 else 400
            raise ClientError(exc.description, status=status) from None
        upload = params.files.get("file")
        extra = sorted(name for name in params.files if name != "file")
        if extra:
            raise ClientError(f"unexpected file parts: {', '.join(extra)}; send one part named file")
        return ClientBody(params.values, upload)
    raw = await read_limited(request, limit)
    if not raw.strip():
        return ClientBody({})
    try:
        body = loads_utf8(raw)
    except ValueError:
        raise ClientError("body must be valid JSON in UTF-8") from None
    if not isinstance(body, dict):
        raise ClientError("body must be a JSON object")
    return ClientBody(body)


def reply_to_id(body: ClientBody) -> int | None:
    return body.get_int("reply_to_message_id")


def message_content(state: SandboxState, body: ClientBody) -> dict[str, Any]:
    """The ``Message`` fields for what the client sends: exactly one of a text, a location, a
    contact or a file. Files are stored last, once everything else was accepted."""
    values = body.values
    present = [name for name in ("text", "location", "contact") if values.get(name) is not None]
    if body.upload is not None:
        present.append("file")
    if len(present) != 1:
        raise ClientError(
            'send exactly one of "text", "location", "contact" or a multipart "file" part'
            + (f" (got {', '.join(present)})" if present else "")
        )
    kind = present[0]
    if kind != "file" and (values.get("caption") is not None or values.get("kind")):
        raise ClientError('"caption" and "kind" go with a multipart "file" part')
    if kind == "text":
        return state.client_text(values["text"], body.get_json("entities"))
    if kind == "location":
        return {"location": _location(values["location"])}
    if kind == "contact":
        return {"contact": _contact(values["contact"])}
    return _file_content(state, body)


def _file_content(state: SandboxState, body: ClientBody) -> dict[str, Any]:
    upload = body.upload
    assert upload is not None
    values = body.values
    file_kind = values.get("kind") or "document"
    if file_kind not in media.FILE_KINDS:
        raise ClientError(f'"kind" must be one of {", ".join(media.FILE_KINDS)}')
    if not upload.content:
        raise ClientError("the file must not be empty")
    caption = state.client_caption(values.get("caption"), body.get_json("caption_entities"))
    if caption and file_kind not in media.CAPTIONED_KINDS:
        raise ClientError(f"a {file_kind} cannot have a caption")
    for name in _INT_FIELDS:
        number = body.get_int(name)
        if number is not None and number < 0:
            raise ClientError(f'"{name}" must not be negative')
    file_name = values.get("file_name") or upload.filename
    if file_name is not None and (not isinstance(file_name, str) or "/" in file_name):
        raise ClientError('"file_name" must be a plain file name')
    declared = (upload.content_type or "").split(";", 1)[0].strip() or None
    if declared == "application/octet-stream":
        declared = None
    details: dict[str, Any] = {
        "file_name": file_name,
        "mime_type": values.get("mime_type") or media.guess_mime(file_name) or declared,
    }
    for name in ("width", "height", "duration", "length", "performer", "title", "emoji"):
        if values.get(name) not in (None, ""):
            details[name] = values[name]
    try:
        content = state.build_media(file_kind, upload.content, details)
    except media.MediaError as exc:
        raise ClientError(f"Telegram would refuse this {file_kind}: {exc}") from None
    return {**content, **caption}


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ClientError(f'"{name}" must be a number')
    return float(value)


def _location(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ClientError('"location" must be an object with latitude and longitude')
    latitude = _number(raw.get("latitude"), "location.latitude")
    longitude = _number(raw.get("longitude"), "location.longitude")
    if not -90 <= latitude <= 90 or not -180 <= longitude <= 180:
        raise ClientError('"location" must have latitude in [-90, 90], longitude in [-180, 180]')
    location: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    if raw.get("horizontal_accuracy") is not None:
        accuracy = _number(raw["horizontal_accuracy"], "location.horizontal_accuracy")
        if not 0 <= accuracy <= 1500:
            raise ClientError('"location.horizontal_accuracy" must be 0-1500 meters')
        location["horizontal_accuracy"] = accuracy
    return location


def _contact(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ClientError('"contact" must be an object with phone_number and first_name')
    contact: dict[str, Any] = {}
    for name in ("phone_number", "first_name", "last_name", "vcard"):
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ClientError(f'"contact.{name}" must be a string')
        if value.strip():
            contact[name] = value.strip()
    if "phone_number" not in contact or "first_name" not in contact:
        raise ClientError('"contact" needs phone_number and first_name')
    user_id = raw.get("user_id")
    if user_id is not None:
        if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
            raise ClientError('"contact.user_id" must be a positive integer')
        contact["user_id"] = user_id
    order = ("phone_number", "first_name", "last_name", "user_id", "vcard")
    return {key: contact[key] for key in order if key in contact}
