"""One RFC 5322 message per chat message, the shape archivers (Global Relay, Smarsh) ingest.

Archives index mail, so every Matrix message event becomes an email: the sender in From, the
rest of the room in To, threading headers for replies and edits, media as attachments, and
X-Houseline-* headers that carry what email cannot express (the Matrix ids, the remote message
id, whether the message was an edit, deleted by the client, or refused by the policy). Every
version of an edited message is its own email, and a client deletion is an email of its own
that points at the message, which stays: the archive must show what was said and when it was
taken back. Output is deterministic (fixed MIME boundaries) so re-exporting the same events
reproduces the same bytes and the same manifest hashes.
"""

from __future__ import annotations

import hashlib
import html
import mimetypes
import re
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Sequence

from bridge.record.html import sanitise
from bridge.record.model import (
    MESSAGE_TYPES,
    ExportEvent,
    ExportRoom,
    MediaFile,
    Reading,
    caption_of,
    deleted_id,
    deletion_ts,
    html_of,
    is_media,
    read_room,
    redaction_note,
    room_dir,
    text_of,
    utc,
    utc_text,
)

CLIENT_DOMAIN = "houseline.invalid"
SUBJECT_CHARS = 60

_LOCAL_DROP = re.compile(r"[^A-Za-z0-9._+=-]+")
_DOMAIN_DROP = re.compile(r"[^a-z0-9.-]+")
_MSGID_DROP = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_SPACE = re.compile(r"\s+")


def write_eml(rooms: Sequence[ExportRoom], out: Path) -> None:
    for room in rooms:
        folder = out / "eml" / room_dir(room)
        reading, identities = read_room(room), client_identities(room)
        events = [e for e in room.events if e.type in MESSAGE_TYPES]
        if events:
            folder.mkdir(parents=True, exist_ok=True)
        for n, event in enumerate(events, start=1):
            (folder / f"{n:06d}.eml").write_bytes(build_message(room, reading, event, identities).as_bytes())


def build_message(
    room: ExportRoom, reading: Reading, event: ExportEvent, identities: dict[str, str]
) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    _addressing(msg, room, event, identities)
    _threading(msg, room, reading, event)
    _houseline_headers(msg, room, reading, event)
    text, markup = _bodies(room, reading, event)
    msg["Subject"] = _one_line(f"{room.name}: {_subject_text(room, event)}")
    msg.set_content(text, charset="utf-8")
    if markup is not None:
        msg.add_alternative(markup, subtype="html", charset="utf-8")
    media = room.media_of(event)
    if media is not None and not event.is_redacted:
        maintype, subtype = _mimetype(media).split("/", 1)
        msg.add_attachment(media.data, maintype=maintype, subtype=subtype, filename=media.file_name or "file")
    _fix_boundaries(msg, event)
    return msg


def render_event(
    room: ExportRoom, event: ExportEvent, identities: dict[str, str] | None = None
) -> EmailMessage:
    """One event as its own email, for the archive journal: the journal renders each message
    when it is due, with a window of the room around it in ``room.events`` rather than the
    whole history, through the same ``build_message`` as the export (same headers, bodies,
    Message-ID and MIME boundaries). ``identities`` adds client addresses the window may not
    show (the export finds them anywhere in the room); a redaction, which the export shows as a
    note on the redacted message, becomes a message of its own."""
    found = {**(identities or {}), **client_identities(room)}
    if event.type == "m.room.redaction":
        return build_redaction(room, event, found)
    return build_message(room, read_room(room), event, found)


def build_redaction(room: ExportRoom, event: ExportEvent, identities: dict[str, str]) -> EmailMessage:
    """'Alice redacted $x': its own Message-ID and In-Reply-To the redacted event's, so an
    archive threads it under the message and never takes it for a new version of it."""
    target = event.event.get("redacts") or event.content.get("redacts")
    target = target if isinstance(target, str) else ""
    msg = EmailMessage(policy=policy.SMTP)
    _addressing(msg, room, event, identities)
    if target:
        msg["In-Reply-To"] = message_id(target, room)
        msg["References"] = message_id(target, room)
    for name, value in (
        ("X-Houseline-Room", room.room_id),
        ("X-Houseline-Portal", room.name),
        ("X-Houseline-Event-Id", event.event_id),
        ("X-Houseline-Sender", event.sender),
        ("X-Houseline-Timestamp", str(event.ts)),
        ("X-Houseline-Network", room.network),
        ("X-Houseline-Kind", "redaction"),
        ("X-Houseline-Redacts", target),
    ):
        msg[name] = _one_line(value)
    reason = str(event.content.get("reason") or "")
    original = next((e for e in room.events if e.event_id == target), None)
    what = (
        f" ({original.type or 'an event'} by {room.name_of(original.sender)}, {utc_text(original.ts)})"
        if original is not None
        else ""
    )
    text = f"[{room.name_of(event.sender)} ({event.sender}) redacted {target or 'an event'}{what} at {utc_text(event.ts)}{': ' + reason if reason else ''}.]"
    msg["Subject"] = _one_line(f"{room.name}: [redaction]")
    msg.set_content(text + "\n", charset="utf-8")
    return msg


# --------------------------------------------------------------------------------------------
# Headers


def client_identities(room: ExportRoom) -> dict[str, str]:
    """Client ghost -> '<network>-<remote sender id>', from the first of their events that
    carries one, so a client has the same address in From and in every To."""
    found: dict[str, str] = {}
    for event in room.events:
        remote = event.remote
        if (
            event.sender in room.clients
            and event.sender not in found
            and isinstance(remote, dict)
            and remote.get("sender_id")
        ):
            found[event.sender] = f"{remote.get('network') or room.network}-{remote['sender_id']}"
    return found


def address(room: ExportRoom, user_id: str, identities: dict[str, str]) -> str:
    """'"Dana Client (Telegram)" <telegram-12345@houseline.invalid>' for a client ghost whose
    remote id is known, '"Alice" <alice@company.test.matrix.invalid>' for Matrix users."""
    name = _one_line(room.name_of(user_id))
    if user_id in identities:
        local, domain = identities[user_id], CLIENT_DOMAIN
    else:
        localpart, _, server = user_id.lstrip("@").partition(":")
        local, domain = localpart, f"{_domain(server)}.matrix.invalid"
    return str(Address(display_name=name, username=_local(local), domain=domain))


def message_id(event_id: str, room: ExportRoom) -> str:
    """'<$eventid@room-server>', reduced to characters a msg-id may hold."""
    return f"<{_MSGID_DROP.sub('_', event_id) or 'unknown'}@{_domain(room.server)}>"


def _addressing(msg: EmailMessage, room: ExportRoom, event: ExportEvent, identities: dict[str, str]) -> None:
    msg["From"] = address(room, event.sender, identities)
    others = [address(room, user, identities) for user in room.participants if user != event.sender]
    msg["To"] = ", ".join(others) if others else "undisclosed-recipients:;"
    msg["Date"] = format_datetime(utc(event.ts))
    msg["Message-ID"] = message_id(event.event_id, room)


def _threading(msg: EmailMessage, room: ExportRoom, reading: Reading, event: ExportEvent) -> None:
    """Edits point at the original; replies and bot annotations at the message they answer."""
    parent = event.relates_to if reading.kind(event) == "edit" else (deleted_id(event) or event.reply_to)
    if parent:
        msg["In-Reply-To"] = message_id(parent, room)
        msg["References"] = message_id(parent, room)


def _houseline_headers(msg: EmailMessage, room: ExportRoom, reading: Reading, event: ExportEvent) -> None:
    remote = event.remote if isinstance(event.remote, dict) else {}
    kind = reading.kind(event)
    headers: list[tuple[str, str]] = [
        ("X-Houseline-Room", room.room_id),
        ("X-Houseline-Portal", room.name),
        ("X-Houseline-Event-Id", event.event_id),
        ("X-Houseline-Sender", event.sender),
        ("X-Houseline-Timestamp", str(event.ts)),
        ("X-Houseline-Network", room.network),
        ("X-Houseline-Kind", kind),
    ]
    if remote.get("message_id") is not None:
        headers.append(("X-Houseline-Remote-Message-Id", str(remote["message_id"])))
    if kind == "edit":
        headers.append(("X-Houseline-Edit-Of", event.relates_to))
    if edits := reading.edits.get(event.event_id):
        headers.append(("X-Houseline-Edits", str(len(edits))))
    if (notice := reading.deletions.get(event.event_id)) is not None:
        headers.append(("X-Houseline-Client-Deleted-At", utc_text(deletion_ts(notice))))
    if kind == "client-deleted":
        headers.append(("X-Houseline-Deleted-Event-Id", deleted_id(event)))
        headers.append(("X-Houseline-Client-Deleted-At", utc_text(deletion_ts(event))))
    if (denial := reading.denials.get(event.event_id)) is not None:
        headers.append(("X-Houseline-Denied-Rule", denial.rule))
    if reactions := _reaction_list(room, reading, event):
        headers.append(("X-Houseline-Reactions", "; ".join(reactions)))
    for name, value in headers:
        msg[name] = _one_line(value)


# --------------------------------------------------------------------------------------------
# Bodies


def _bodies(room: ExportRoom, reading: Reading, event: ExportEvent) -> tuple[str, str | None]:
    """The text/plain body and, when the message was formatted, a sanitised text/html one."""
    before, text, after = _before(room, reading, event), _main_text(room, event), _after(room, reading, event)
    plain = "\n\n".join(part for part in (*before, text, *after) if part) + "\n"
    markup = html_of(event) if not event.is_redacted else None
    if markup is None:
        return plain, None
    paragraphs = (
        "".join(f"<p>{_escape(p)}</p>" for p in before)
        + f"<div>{sanitise(markup)}</div>"
        + "".join(f"<p>{_escape(p)}</p>" for p in after)
    )
    return (
        plain,
        f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{paragraphs}</body></html>\n',
    )


def _main_text(room: ExportRoom, event: ExportEvent) -> str:
    if event.is_redacted:
        return redaction_note(room, event)
    if is_media(event):
        return caption_of(event)
    return text_of(event)


def _before(room: ExportRoom, reading: Reading, event: ExportEvent) -> list[str]:
    """Context a reader needs first: what this edit or reply refers to."""
    kind = reading.kind(event)
    if kind == "edit":
        original = reading.by_id.get(event.relates_to)
        when = f" sent {utc_text(original.ts)}" if original is not None else " (not in this export)"
        return [
            f"[Edited version of the message{when}, made {utc_text(event.ts)}. The earlier versions stay in the record.]"
        ]
    if kind == "client-deleted" or not event.reply_to:
        return []
    target = reading.by_id.get(event.reply_to)
    if target is None:
        return [f"[In reply to {event.reply_to}, not in this export]"]
    quoted = _quote(_main_text(room, target) or str(target.content.get("filename", "")), 200)
    return [f"[In reply to {room.name_of(target.sender)}, {utc_text(target.ts)}:]\n{quoted}"]


def _after(room: ExportRoom, reading: Reading, event: ExportEvent) -> list[str]:
    """What happened to the message: attachments, edits, deletion, refusal, reactions."""
    notes: list[str] = []
    if is_media(event) and not event.is_redacted:
        notes.append(_attachment_note(room.media_of(event), event))
    if edits := reading.edits.get(event.event_id):
        notes.append(
            f"[Edited {len(edits)} time(s), last at {utc_text(edits[-1].ts)}; every version is its own message in this export.]"
        )
    if (notice := reading.deletions.get(event.event_id)) is not None:
        notes.append(
            f"[Deleted by the client at {utc_text(deletion_ts(notice))}; kept here as part of the record.]"
        )
    if reading.kind(event) == "client-deleted":
        notes.append(_deletion_note(room, reading, event))
    if (denial := reading.denials.get(event.event_id)) is not None:
        label = "HELD, not sent to the client when written" if denial.held else "NOT SENT to the client"
        notes.append(f"[{label} — rule {denial.rule}: {denial.notice.content.get('body', '')!s}]")
    if reactions := _reaction_list(room, reading, event):
        notes.append("Reactions: " + "; ".join(reactions))
    return notes


def _deletion_note(room: ExportRoom, reading: Reading, notice: ExportEvent) -> str:
    original = reading.by_id.get(deleted_id(notice))
    head = f"[The client deleted the message {deleted_id(notice)} at {utc_text(deletion_ts(notice))}."
    if original is None:
        return head + " That message is not in this export.]"
    content = _main_text(room, original) or str(original.content.get("filename", ""))
    return f"{head} It was sent by {room.name_of(original.sender)} at {utc_text(original.ts)} and read:]\n{_quote(content, 2000)}"


def _attachment_note(media: MediaFile | None, event: ExportEvent) -> str:
    if media is None:
        name = event.content.get("filename") or event.content.get("body") or "file"
        return f"[File not included in this export: {name}]"
    return f"[Attached: {media.file_name} ({_mimetype(media)}, {len(media.data)} bytes)]"


def _reaction_list(room: ExportRoom, reading: Reading, event: ExportEvent) -> list[str]:
    return [
        f"{r.relation.get('key', '')!s} {room.name_of(r.sender)} ({utc_text(r.ts)})"
        for r in reading.reactions.get(event.event_id, ())
    ]


def _subject_text(room: ExportRoom, event: ExportEvent) -> str:
    if event.is_redacted:
        return "[redacted]"
    media = room.media_of(event)
    text = _one_line(_main_text(room, event)) or (
        media.file_name if media else str(event.content.get("filename", ""))
    )
    return text[:SUBJECT_CHARS]


# --------------------------------------------------------------------------------------------
# Small helpers


def _mimetype(media: MediaFile) -> str:
    """The file's own type when it is well formed, else a guess from its name."""
    if re.fullmatch(r"[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+", media.mimetype or ""):
        return media.mimetype.lower()
    return mimetypes.guess_type(media.file_name)[0] or "application/octet-stream"


def _fix_boundaries(msg: EmailMessage, event: ExportEvent) -> None:
    """Derive MIME boundaries from the event id: identical exports, identical bytes."""
    seed = hashlib.sha256(event.event_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    for n, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"houseline-{seed}-{n}")


def _quote(text: str, limit: int) -> str:
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return "\n".join(f"> {line}" for line in short.split("\n"))


def _one_line(text: str) -> str:
    """Header values may not contain line breaks (that would inject headers)."""
    return _SPACE.sub(" ", text).strip()


def _local(text: str) -> str:
    local = _LOCAL_DROP.sub("_", text)
    local = re.sub(r"\.{2,}", "_", local).strip(".")
    return local or "unknown"


def _domain(server: str) -> str:
    domain = _DOMAIN_DROP.sub("-", server.lower())
    domain = re.sub(r"\.{2,}", ".", domain).strip(".-")
    return domain or "unknown"


def _escape(text: str) -> str:
    return html.escape(text, quote=False).replace("\n", "<br>")
