"""Cloud API webhook payloads -> the core's RemoteEvents.

Everything network-shaped stops here. Field names and types follow Meta's webhook reference;
anything unexpected in one message becomes an UNSUPPORTED event (said in the room) rather than
an exception that would make Meta redeliver the whole payload for ever.
"""

from __future__ import annotations

import logging
import mimetypes
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from bridge.events import (
    ChatRef,
    MediaKind,
    RemoteContact,
    RemoteEvent,
    RemoteEventKind,
    RemoteLocation,
    RemoteMedia,
    RemoteUser,
    RichText,
)
from bridge.networks.whatsapp.formatting import whatsapp_to_matrix

log = logging.getLogger("houseline.whatsapp")

NETWORK = "whatsapp"

_MEDIA_KINDS = {
    "image": MediaKind.IMAGE,
    "video": MediaKind.VIDEO,
    "audio": MediaKind.AUDIO,
    "document": MediaKind.FILE,
    "sticker": MediaKind.STICKER,
}
_UNSUPPORTED_WORDS = {
    "order": "an order from the catalogue",
    "system": "a system message (e.g. a changed number)",
    "request_welcome": "a request for a welcome message",
    "unsupported": "a message type WhatsApp does not pass on to businesses (e.g. a poll or a view-once photo)",
}
#: What a failed status's code means for the employee reading the notice.
_FAILURES = {
    131047: (
        "the client last wrote more than 24 hours ago, and WhatsApp then accepts only approved "
        "message templates from a business (send one with the bot's template command)"
    ),
    131026: "WhatsApp could not deliver it to this number (it may not use WhatsApp, or has not accepted the terms)",
    131049: "WhatsApp held it back to keep the client's experience good (too many business messages)",
    131050: "the client has stopped marketing messages from this business",
    131053: "the file could not be uploaded to WhatsApp",
    131031: "this WhatsApp Business number is locked",
}

#: Downloads a media id's bytes for the number the payload came to.
Fetch = Callable[[str, str], Awaitable[bytes]]


def failure_reason(errors: Any) -> str:
    """A failed status's errors, in words for the room."""
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return "WhatsApp reported it as failed, without a reason"
    err = errors[0]
    code = err.get("code")
    if code in _FAILURES:
        return _FAILURES[code]
    details = (
        (err.get("error_data") or {}).get("details") if isinstance(err.get("error_data"), dict) else None
    )
    return (
        f"WhatsApp reported error {code}: {details or err.get('title') or err.get('message') or 'no details'}"
    )


@dataclass
class Translated:
    events: list[RemoteEvent]
    #: (account, chat) -> the client's newest message id and time, for the 24-hour window and
    #: the typing indicator (which names a message to mark read).
    inbound: dict[tuple[str, str], tuple[str, int]]
    #: (account, chat) whose window a failed status says is closed.
    closed: set[tuple[str, str]]


class Translator:
    def __init__(self, accounts: set[str], fetch: Fetch) -> None:
        self.accounts = accounts
        self.fetch = fetch

    def payload(self, payload: dict[str, Any]) -> Translated:
        out = Translated([], {}, set())
        for entry in payload.get("entry") or []:
            if not isinstance(entry, dict):
                continue
            for change in entry.get("changes") or []:
                if (
                    not isinstance(change, dict)
                    or change.get("field") != "messages"
                    or not isinstance(change.get("value"), dict)
                ):
                    continue
                self._value(change["value"], out)
        return out

    def _value(self, value: dict[str, Any], out: Translated) -> None:
        metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
        account = str(metadata.get("phone_number_id") or "")
        if account not in self.accounts:
            log.warning("event=whatsapp_unknown_number phone_number_id=%r action=ignored", account[:32])
            return
        names: dict[str, str] = {}
        for contact in value.get("contacts") or []:
            if isinstance(contact, dict) and isinstance(contact.get("wa_id"), str):
                profile = contact.get("profile") if isinstance(contact.get("profile"), dict) else {}
                names[contact["wa_id"]] = str(profile.get("name") or "")
        for message in value.get("messages") or []:
            if (
                isinstance(message, dict)
                and isinstance(message.get("from"), str)
                and isinstance(message.get("id"), str)
            ):
                event = self._message(account, message, names)
                out.events.append(event)
                key = (account, message["from"])
                if event.kind in (
                    RemoteEventKind.MESSAGE,
                    RemoteEventKind.REACTION,
                    RemoteEventKind.UNSUPPORTED,
                ):
                    previous = out.inbound.get(key)
                    if previous is None or previous[1] <= event.timestamp_ms:
                        out.inbound[key] = (message["id"], event.timestamp_ms)
        for status in value.get("statuses") or []:
            if isinstance(status, dict):
                event = self._status(account, status)
                if event is not None:
                    out.events.append(event)
                    if event.kind is RemoteEventKind.DELIVERY_FAILED and "24 hours" in event.description:
                        out.closed.add((account, event.chat.chat_id))

    # messages

    def _message(self, account: str, m: dict[str, Any], names: dict[str, str]) -> RemoteEvent:
        wa_id = m["from"]
        name = names.get(wa_id) or f"+{wa_id}"
        base = RemoteEvent(
            kind=RemoteEventKind.MESSAGE,
            chat=ChatRef(NETWORK, account, wa_id),
            sender=RemoteUser(NETWORK, wa_id, name),
            message_id=m["id"],
            timestamp_ms=_ms(m.get("timestamp")),
            reply_to=_context_id(m),
        )
        kind = m.get("type")
        try:
            return self._content(base, kind, m)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            log.warning(
                "event=whatsapp_message_malformed id=%s type=%r error=%s",
                m["id"],
                str(kind)[:30],
                type(e).__name__,
            )
            return _unsupported(base, f"a {kind} message the bridge could not read")

    def _content(self, base: RemoteEvent, kind: Any, m: dict[str, Any]) -> RemoteEvent:
        if kind == "text":
            return replace(base, text=whatsapp_to_matrix(str(m["text"]["body"])))
        if kind in _MEDIA_KINDS:
            body = m[kind]
            return replace(base, media=self._media(base.chat.account, kind, body), text=_caption(body))
        if kind == "location":
            loc = m["location"]
            label = ", ".join(str(loc[k]) for k in ("name", "address") if loc.get(k))
            return replace(
                base,
                location=RemoteLocation(float(loc["latitude"]), float(loc["longitude"])),
                text=RichText(label) if label else None,
            )
        if kind == "contacts":
            contacts = m["contacts"]
            first = contacts[0]
            phones = first.get("phones") or []
            phone = str(phones[0].get("phone") or phones[0].get("wa_id") or "") if phones else ""
            others = len(contacts) - 1
            return replace(
                base,
                contact=RemoteContact(phone, str((first.get("name") or {}).get("formatted_name") or phone)),
                text=RichText(f"(and {others} more contact{'s' if others > 1 else ''}, not shown)")
                if others
                else None,
            )
        if kind == "reaction":
            reaction = m["reaction"]
            emoji = reaction.get("emoji") or ""
            return replace(
                base,
                kind=RemoteEventKind.REACTION,
                target_id=str(reaction["message_id"]),
                reactions=(emoji,) if emoji else (),
                reply_to=None,
            )
        if kind == "edit":
            edit = m["edit"]
            new = edit.get("message") or {}
            new_kind = new.get("type")
            if new_kind == "text":
                text = whatsapp_to_matrix(str(new["text"]["body"]))
            elif new_kind in _MEDIA_KINDS:
                text = _caption(new.get(new_kind) or {}) or RichText("")
            else:
                text = RichText("")
            return replace(
                base,
                kind=RemoteEventKind.EDIT,
                target_id=str(edit["original_message_id"]),
                text=text,
                reply_to=None,
            )
        if kind == "revoke":
            return replace(
                base,
                kind=RemoteEventKind.DELETE,
                target_id=str(m["revoke"]["original_message_id"]),
                reply_to=None,
            )
        if kind == "button":
            return replace(
                base, text=RichText(str(m["button"].get("text") or m["button"].get("payload") or ""))
            )
        if kind == "interactive":
            reply = m["interactive"].get("button_reply") or m["interactive"].get("list_reply") or {}
            return replace(base, text=RichText(str(reply.get("title") or reply.get("id") or "")))
        return _unsupported(base, _UNSUPPORTED_WORDS.get(str(kind), f"a message of type {str(kind)[:30]!r}"))

    def _media(self, account: str, kind: str, body: dict[str, Any]) -> RemoteMedia:
        media_id = str(body["id"])
        mimetype = str(body.get("mime_type") or "application/octet-stream").split(";")[0].strip()
        media_kind = _MEDIA_KINDS[kind]
        if kind == "audio" and body.get("voice"):
            media_kind = MediaKind.VOICE
        ext = mimetypes.guess_extension(mimetype) or ""
        file_name = str(body.get("filename") or f"{kind}-{media_id}{ext}")

        async def fetch() -> bytes:
            return await self.fetch(account, media_id)

        return RemoteMedia(kind=media_kind, file_name=file_name, mimetype=mimetype, fetch=fetch)

    # statuses

    def _status(self, account: str, s: dict[str, Any]) -> RemoteEvent | None:
        status, wamid, recipient = s.get("status"), s.get("id"), s.get("recipient_id")
        if not isinstance(wamid, str) or not isinstance(recipient, str):
            return None
        if status not in ("read", "failed"):
            # sent / delivered: nothing for the room; the record has the message already.
            log.debug("event=whatsapp_status status=%s id=%s", status, wamid)
            return None
        kind = RemoteEventKind.READ if status == "read" else RemoteEventKind.DELIVERY_FAILED
        return RemoteEvent(
            kind=kind,
            chat=ChatRef(NETWORK, account, recipient),
            sender=RemoteUser(NETWORK, recipient, f"+{recipient}"),
            message_id=f"{wamid}.{status}",
            timestamp_ms=_ms(s.get("timestamp")),
            target_id=wamid,
            description=failure_reason(s.get("errors")) if status == "failed" else "",
        )


def _unsupported(base: RemoteEvent, description: str) -> RemoteEvent:
    return replace(base, kind=RemoteEventKind.UNSUPPORTED, description=description)


def _caption(body: dict[str, Any]) -> RichText | None:
    caption = body.get("caption")
    return whatsapp_to_matrix(str(caption)) if caption else None


def _context_id(m: dict[str, Any]) -> str | None:
    context = m.get("context")
    if isinstance(context, dict) and isinstance(context.get("id"), str):
        return context["id"]
    return None


def _ms(timestamp: Any) -> int:
    try:
        return int(timestamp) * 1000
    except (TypeError, ValueError):
        return int(time.time() * 1000)
