"""Checks a ``POST /{phone_number_id}/messages`` body the way Cloud API does before accepting
it, and turns it into what the client's phone will show.

Only request-level problems are answered synchronously (HTTP 4xx); problems Meta discovers
while delivering (the 24-hour window, a media link that cannot be fetched) come later as a
``failed`` status webhook, which :mod:`.messaging` handles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import GraphError, cloud_error, invalid_parameter, missing_parameter
from .media import MEDIA_KINDS, MediaStore, check_sendable
from .templates import TemplateCatalog, TemplateSend

TEXT_MAX = 4096  # text['body'] (Meta's text message reference)
CAPTION_MAX = 1024  # media captions
OPAQUE_MAX = 512  # biz_opaque_callback_data
SUPPORTED_TYPES = ("text", *MEDIA_KINDS, "location", "contacts", "reaction", "template")
# Types Meta has that the sandbox does not emulate: refused with a clear message.
UNEMULATED_TYPES = ("interactive", "order", "system")
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")


@dataclass
class OutboundRequest:
    to_input: str
    wa_id: str
    type: str
    content: Any  # what the phone shows under ``type``
    context_id: str | None = None
    template: TemplateSend | None = None
    media_id: str | None = None
    link: str | None = None
    biz_opaque_callback_data: str | None = None

    @property
    def free_form(self) -> bool:
        return self.template is None


def normalize_recipient(to: Any) -> str:
    if not isinstance(to, str) or not to.strip():
        raise missing_parameter("to")
    digits = _PHONE_SEPARATORS.sub("", to.strip()).removeprefix("+")
    if not digits.isdigit() or not 5 <= len(digits) <= 15:
        raise cloud_error(131009, "The phone number is malformed: Please use the format: +1234567890.")
    return digits


def parse_send(body: Any, catalog: TemplateCatalog, media: MediaStore) -> OutboundRequest:
    if not isinstance(body, dict):
        raise invalid_parameter("Invalid parameter", "The request body must be a JSON object.")
    product = body.get("messaging_product")
    if product is None:
        raise missing_parameter("messaging_product")
    if product != "whatsapp":
        raise invalid_parameter("Param messaging_product must be one of {WHATSAPP}.")
    recipient_type = body.get("recipient_type", "individual")
    if recipient_type != "individual":
        # guess: Meta also accepts "group" (Groups API); the sandbox emulates 1:1 chats only
        raise invalid_parameter(
            "Param recipient_type must be one of {INDIVIDUAL}.",
            "The sandbox emulates individual (1:1) messaging only.",
        )
    to = body.get("to")
    wa_id = normalize_recipient(to)
    kind = body.get("type", "text")  # Meta defaults the type to text
    if kind in UNEMULATED_TYPES:
        raise invalid_parameter("Invalid parameter", f"Message type {kind!r} is not emulated by the sandbox.")
    if kind not in SUPPORTED_TYPES:
        raise invalid_parameter(f"Param type must be one of {{{', '.join(SUPPORTED_TYPES).upper()}}}.")
    request = OutboundRequest(to_input=to, wa_id=wa_id, type=kind, content=None)
    request.context_id = _context(body.get("context"))
    opaque = body.get("biz_opaque_callback_data")
    if opaque is not None:
        if not isinstance(opaque, str) or len(opaque) > OPAQUE_MAX:
            raise invalid_parameter(
                f"Param biz_opaque_callback_data must be a string of at most {OPAQUE_MAX} characters."
            )
        request.biz_opaque_callback_data = opaque
    spec = body.get(kind)
    if kind == "template":
        request.template = catalog.resolve(spec)
        request.content = request.template.view()
    elif spec is None:
        raise missing_parameter(kind)
    elif not isinstance(spec, (dict, list)):
        raise invalid_parameter(f"Param {kind} must be a JSON object.")
    elif kind == "text":
        request.content = _text(spec)
    elif kind in MEDIA_KINDS:
        _media(kind, spec, media, request)
    elif kind == "location":
        request.content = _location(spec)
    elif kind == "contacts":
        request.content = _contacts(spec)
    elif kind == "reaction":
        request.content = _reaction(spec)
    return request


def _context(context: Any) -> str | None:
    if context is None:
        return None
    if not isinstance(context, dict):
        raise invalid_parameter("Param context must be a JSON object.")
    message_id = context.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise missing_parameter("context['message_id']")
    return message_id


def _text(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise invalid_parameter("Param text must be a JSON object.")
    body = spec.get("body")
    if body is None or body == "":
        raise missing_parameter("text['body']")
    if not isinstance(body, str):
        raise invalid_parameter("Param text['body'] must be a string.")
    if len(body) > TEXT_MAX:
        # guess: wording of the length error (Meta documents the 4096 limit, not the message)
        raise invalid_parameter(f"Param text['body'] must be at most {TEXT_MAX} characters long.")
    preview = spec.get("preview_url", False)
    if not isinstance(preview, bool):
        raise invalid_parameter("Param text['preview_url'] must be a boolean.")
    return {"body": body, "preview_url": preview}


def _media(kind: str, spec: Any, media: MediaStore, request: OutboundRequest) -> None:
    if not isinstance(spec, dict):
        raise invalid_parameter(f"Param {kind} must be a JSON object.")
    media_id, link = spec.get("id"), spec.get("link")
    if (media_id is None) == (link is None):
        raise invalid_parameter(f"Param {kind} must contain exactly one of id or link.")
    content: dict[str, Any] = {}
    caption = spec.get("caption")
    if caption is not None:
        if kind in ("audio", "sticker"):
            # guess: Meta documents captions for image, video and document only
            raise invalid_parameter(f"Param {kind}['caption'] is not a valid parameter.")
        if not isinstance(caption, str):
            raise invalid_parameter(f"Param {kind}['caption'] must be a string.")
        if len(caption) > CAPTION_MAX:
            raise invalid_parameter(f"Param {kind}['caption'] must be at most {CAPTION_MAX} characters long.")
        content["caption"] = caption
    filename = spec.get("filename")
    if kind == "document" and filename is not None:
        if not isinstance(filename, str) or not filename.strip():
            raise invalid_parameter("Param document['filename'] must be a non-empty string.")
        content["filename"] = filename
    if kind == "audio" and "voice" in spec:
        if not isinstance(spec["voice"], bool):
            raise invalid_parameter("Param audio['voice'] must be a boolean.")
        content["voice"] = spec["voice"]
    if media_id is not None:
        if not isinstance(media_id, str) or not media_id:
            raise invalid_parameter(f"Param {kind}['id'] must be a string.")
        stored = media.get(media_id)
        if stored is None:
            # guess: Meta may instead accept the id and fail later with 131053
            raise cloud_error(131009, f"Media id {media_id} is not valid or has expired.")
        check_sendable(kind, stored)
        request.media_id = media_id
    else:
        if not isinstance(link, str) or urlsplit(link).scheme not in ("http", "https"):
            raise invalid_parameter(f"Param {kind}['link'] must be a valid http(s) URL.")
        request.link = link
        content["link"] = link
    request.content = content


def _number(spec: dict[str, Any], key: str, low: float, high: float) -> float:
    value = spec.get(key)
    if value is None:
        raise missing_parameter(f"location['{key}']")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise invalid_parameter(f"Param location['{key}'] must be a number.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise invalid_parameter(f"Param location['{key}'] must be a number in [{low}, {high}].")
    return float(value)


def _location(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise invalid_parameter("Param location must be a JSON object.")
    content: dict[str, Any] = {
        "latitude": _number(spec, "latitude", -90, 90),
        "longitude": _number(spec, "longitude", -180, 180),
    }
    for key in ("name", "address"):
        if spec.get(key) is not None:
            if not isinstance(spec[key], str):
                raise invalid_parameter(f"Param location['{key}'] must be a string.")
            content[key] = spec[key]
    return content


def _contacts(spec: Any) -> list[dict[str, Any]]:
    if not isinstance(spec, list) or not spec:
        raise invalid_parameter("Param contacts must be a non-empty array.")
    for index, contact in enumerate(spec):
        name = contact.get("name") if isinstance(contact, dict) else None
        formatted = name.get("formatted_name") if isinstance(name, dict) else None
        if not isinstance(formatted, str) or not formatted.strip():
            raise missing_parameter(f"contacts[{index}]['name']['formatted_name']")
        phones = contact.get("phones", [])
        if not isinstance(phones, list) or not all(isinstance(p, dict) for p in phones):
            raise invalid_parameter(f"Param contacts[{index}]['phones'] must be an array of objects.")
    return spec


def _reaction(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise invalid_parameter("Param reaction must be a JSON object.")
    message_id = spec.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise missing_parameter("reaction['message_id']")
    emoji = spec.get("emoji")
    if emoji is None:
        raise missing_parameter("reaction['emoji']")
    if not isinstance(emoji, str):
        raise invalid_parameter("Param reaction['emoji'] must be a string.")
    return {"message_id": message_id, "emoji": emoji}


def check_reaction_target(
    target_sender: str | None, target_type: str | None, message_id: str
) -> GraphError | None:
    """Businesses react to messages they received from the user (not to reactions)."""
    if target_sender == "client" and target_type != "reaction":
        return None
    # guess: Meta's error for a reaction to an unknown message is not documented
    return cloud_error(131009, f"Message {message_id} is not a message this business received.")
