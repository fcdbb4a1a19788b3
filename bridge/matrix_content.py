"""Matrix event contents for what clients send, built as plain dicts so every field is explicit.

Only the shapes live here; the inbound pipeline decides which to send and as whom.
"""

from __future__ import annotations

from typing import Any

from bridge.events import MediaKind, RemoteContact, RemoteLocation, RemoteMedia, RichText

#: Where the remote ids travel inside the Matrix event, for exports and reconciliation.
REMOTE_KEY = "net.houseline.remote"
#: An approved template to send (name, language, params): on the events an outreach queues.
TEMPLATE_KEY = "net.houseline.template"

_MSGTYPES = {
    MediaKind.IMAGE: "m.image",
    MediaKind.STICKER: "m.image",
    MediaKind.FILE: "m.file",
    MediaKind.VIDEO: "m.video",
    MediaKind.ANIMATION: "m.video",
    MediaKind.VIDEO_NOTE: "m.video",
    MediaKind.AUDIO: "m.audio",
    MediaKind.VOICE: "m.audio",
}

MEDIA_WORDS = {
    MediaKind.IMAGE: "a photo",
    MediaKind.STICKER: "a sticker",
    MediaKind.FILE: "a file",
    MediaKind.VIDEO: "a video",
    MediaKind.ANIMATION: "an animation",
    MediaKind.VIDEO_NOTE: "a video message",
    MediaKind.AUDIO: "an audio file",
    MediaKind.VOICE: "a voice message",
}


def text_content(text: RichText, msgtype: str = "m.text") -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": msgtype, "body": text.body}
    if text.html:
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = text.html
    return content


def media_content(media: RemoteMedia, mxc: str, caption: RichText | None) -> dict[str, Any]:
    """A media event with the caption as its body (Matrix media captions) and the file name."""
    content: dict[str, Any] = {
        "msgtype": _MSGTYPES[media.kind],
        "body": caption.body if caption and caption.body else media.file_name,
        "filename": media.file_name,
        "url": mxc,
    }
    if caption and caption.html:
        content["format"] = "org.matrix.custom.html"
        content["formatted_body"] = caption.html
    info: dict[str, Any] = {"mimetype": media.mimetype}
    if media.size is not None:
        info["size"] = media.size
    if media.width is not None and media.height is not None:
        info["w"], info["h"] = media.width, media.height
    if media.duration_ms is not None:
        info["duration"] = media.duration_ms
    content["info"] = info
    if media.kind is MediaKind.VOICE:
        content["org.matrix.msc3245.voice"] = {}
        if media.duration_ms is not None:
            content["org.matrix.msc1767.audio"] = {"duration": media.duration_ms}
    if media.kind is MediaKind.STICKER:
        content["net.houseline.sticker"] = True
    return content


def location_content(location: RemoteLocation) -> dict[str, Any]:
    lat, lon = location.latitude, location.longitude
    return {
        "msgtype": "m.location",
        "body": f"Location: {lat:.6f}, {lon:.6f}",
        "geo_uri": f"geo:{lat:.6f},{lon:.6f}",
    }


def contact_content(contact: RemoteContact) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": f"Shared contact: {contact.name}, {contact.phone_number}"}


def edit_content(original_event_id: str, new: dict[str, Any]) -> dict[str, Any]:
    """An m.replace edit: the original stays in the room, clients show the new text."""
    content: dict[str, Any] = {"msgtype": new["msgtype"], "body": f"* {new['body']}", "m.new_content": new}
    if "formatted_body" in new:
        content["format"] = new["format"]
        content["formatted_body"] = f"* {new['formatted_body']}"
    content["m.relates_to"] = {"rel_type": "m.replace", "event_id": original_event_id}
    return content


def reply_to(content: dict[str, Any], event_id: str) -> dict[str, Any]:
    content["m.relates_to"] = {"m.in_reply_to": {"event_id": event_id}}
    return content


def notice(body: str, *, in_reply_to: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.notice", "body": body}
    return reply_to(content, in_reply_to) if in_reply_to else content


def split_command(text: str) -> list[str]:
    """A command's words, shell-style so a parameter may be "quoted with spaces"; an unbalanced
    quote falls back to plain words rather than failing the command."""
    import shlex

    try:
        return shlex.split(text)
    except ValueError:
        return text.split()
