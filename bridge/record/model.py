"""What an export is made of, and what the events of a portal mean.

The exporters receive everything already fetched (events exactly as the homeserver returned
them, media bytes), so producing a record needs no network and can be tested by hand. This
module also reads Houseline's conventions once — edits, reactions, client deletions, denied
attempts, redactions — so that every format tells the same story about the same room, and it
decides where things go in an export directory, because the formats link to each other's files.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

#: Same key as ``bridge.matrix_content.REMOTE_KEY``; repeated so this package imports nothing
#: from the bridge's runtime (which pulls in mautrix).
REMOTE_KEY = "net.houseline.remote"
CLIENT_DELETED_KEY = "net.houseline.client_deleted"

#: Events that are chat messages of their own (one EML each, one entry in the transcript).
MESSAGE_TYPES = frozenset({"m.room.message", "m.sticker"})

#: The policy bot names the deciding rule as "(rule sharing.card_numbers)" in its notices.
_RULE = re.compile(r"\(rule ((?:sharing|join)\.[^\s)]+)\)")
#: Wording of a hold (policy_bot.refuse): the message may still be released later.
_HELD = "Nothing was sent to the client yet"


# --------------------------------------------------------------------------------------------
# The input


@dataclass(frozen=True)
class ExportEvent:
    """One Matrix event, unchanged; the properties only read it, tolerating missing fields,
    because redacted events and old room versions lack parts of the usual shape."""

    event: dict[str, Any]

    @property
    def event_id(self) -> str:
        return _str(self.event.get("event_id"))

    @property
    def type(self) -> str:
        return _str(self.event.get("type"))

    @property
    def sender(self) -> str:
        return _str(self.event.get("sender"))

    @property
    def ts(self) -> int:
        ts = self.event.get("origin_server_ts")
        return int(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else 0

    @property
    def content(self) -> dict[str, Any]:
        return _dict(self.event.get("content"))

    @property
    def relation(self) -> dict[str, Any]:
        return _dict(self.content.get("m.relates_to"))

    @property
    def rel_type(self) -> str:
        return _str(self.relation.get("rel_type"))

    @property
    def relates_to(self) -> str:
        """The event an edit or reaction is about ("" when none)."""
        return _str(self.relation.get("event_id"))

    @property
    def reply_to(self) -> str:
        return _str(_dict(self.relation.get("m.in_reply_to")).get("event_id"))

    @property
    def remote(self) -> Any:
        return self.content.get(REMOTE_KEY)

    @property
    def msgtype(self) -> str:
        return _str(self.content.get("msgtype"))

    @property
    def state_key(self) -> str | None:
        key = self.event.get("state_key")
        return key if isinstance(key, str) else None

    @property
    def redacted_because(self) -> dict[str, Any] | None:
        because = _dict(self.event.get("unsigned")).get("redacted_because")
        return because if isinstance(because, dict) else None

    @property
    def is_redacted(self) -> bool:
        return self.redacted_because is not None


@dataclass(frozen=True)
class MediaFile:
    mxc: str
    file_name: str
    mimetype: str
    data: bytes


@dataclass(frozen=True)
class ExportRoom:
    room_id: str
    name: str
    network: str
    account: str
    chat_id: str
    participants: dict[str, str]
    clients: frozenset[str]
    bot: str
    events: tuple[ExportEvent, ...]
    media: dict[str, MediaFile]

    def name_of(self, user_id: str) -> str:
        """Display name for people, the raw id for anyone the room no longer lists."""
        return self.participants.get(user_id) or user_id or "unknown sender"

    @property
    def server(self) -> str:
        """The room's homeserver name, which scopes its Message-IDs."""
        return self.room_id.partition(":")[2] or "unknown"

    def media_of(self, event: ExportEvent) -> MediaFile | None:
        url = event.content.get("url")
        return self.media.get(url) if isinstance(url, str) else None


# --------------------------------------------------------------------------------------------
# Reading the conventions


@dataclass(frozen=True)
class Denial:
    """The bot's answer to an employee message that did not go out."""

    rule: str
    notice: ExportEvent
    held: bool


@dataclass(frozen=True)
class Reading:
    """What happened to each message later in the room, indexed by the message's event id."""

    by_id: Mapping[str, ExportEvent]
    edits: Mapping[str, tuple[ExportEvent, ...]]
    reactions: Mapping[str, tuple[ExportEvent, ...]]
    deletions: Mapping[str, ExportEvent]
    denials: Mapping[str, Denial]
    #: annotation event id -> the event id of the message it is shown on
    attached: Mapping[str, str]
    bot: str

    def target(self, event: ExportEvent) -> ExportEvent | None:
        """The message an annotation (edit, reaction, deletion/denial notice) is shown on, or
        None when it stands alone (not an annotation, or its target is not in the export)."""
        return self.by_id.get(self.attached.get(event.event_id, ""))

    def kind(self, event: ExportEvent) -> str:
        """The X-Houseline-Kind of a message event: message, edit, client-deleted, denied,
        held, notice or redacted."""
        if event.is_redacted:
            return "redacted"
        if _is_edit(event):
            return "edit"
        if event.sender == self.bot and deleted_id(event):
            return "client-deleted"
        denial = self.denials.get(event.event_id)
        if denial is not None:
            return "held" if denial.held else "denied"
        return "notice" if event.msgtype == "m.notice" else "message"


def read_room(room: ExportRoom) -> Reading:
    """Index edits, reactions, deletions and denials by the message they concern."""
    by_id = {e.event_id: e for e in room.events if e.event_id}
    edits: dict[str, list[ExportEvent]] = {}
    reactions: dict[str, list[ExportEvent]] = {}
    deletions: dict[str, ExportEvent] = {}
    denials: dict[str, Denial] = {}
    attached: dict[str, str] = {}
    for event in room.events:
        target = _annotated(room, by_id, event)
        if target is None:
            continue
        if event.type == "m.reaction":
            reactions.setdefault(target, []).append(event)
        elif _is_edit(event):
            edits.setdefault(target, []).append(event)
        elif deleted_id(event):
            deletions.setdefault(target, event)
        elif (denial := _denial(room, by_id, event)) is not None:
            denials.setdefault(target, denial)
        attached[event.event_id] = target
    return Reading(
        by_id=by_id,
        edits={k: tuple(v) for k, v in edits.items()},
        reactions={k: tuple(v) for k, v in reactions.items()},
        deletions=deletions,
        denials=denials,
        attached=attached,
        bot=room.bot,
    )


def _annotated(room: ExportRoom, by_id: Mapping[str, ExportEvent], event: ExportEvent) -> str | None:
    """The id of the message this event annotates, when that message is in the export."""
    if event.is_redacted or not event.event_id:
        return None
    if event.type == "m.reaction" and event.rel_type == "m.annotation":
        target = event.relates_to
    elif _is_edit(event):
        target = event.relates_to if _same_sender(by_id.get(event.relates_to), event) else ""
    elif event.sender == room.bot and deleted_id(event):
        target = deleted_id(event)
    elif _denial(room, by_id, event) is not None:
        target = event.reply_to
    else:
        return None
    return target if target in by_id and target != event.event_id else None


def _is_edit(event: ExportEvent) -> bool:
    return event.type in MESSAGE_TYPES and event.rel_type == "m.replace" and bool(event.relates_to)


def _same_sender(original: ExportEvent | None, edit: ExportEvent) -> bool:
    """Matrix ignores edits by anyone but the author; so does the record's threading."""
    return original is not None and original.sender == edit.sender


def deleted_id(event: ExportEvent) -> str:
    """The message a client-deletion notice is about ("" for any other event)."""
    return _str(_dict(event.content.get(CLIENT_DELETED_KEY)).get("event_id"))


def _denial(room: ExportRoom, by_id: Mapping[str, ExportEvent], event: ExportEvent) -> Denial | None:
    """A bot notice answering an employee's message with a sharing/join rule is a denial."""
    if event.sender != room.bot or event.msgtype != "m.notice":
        return None
    original = by_id.get(event.reply_to)
    if original is None or original.sender == room.bot or original.sender in room.clients:
        return None
    body = _str(event.content.get("body"))
    match = _RULE.search(body)
    if match is None:
        return None
    return Denial(rule=match.group(1), notice=event, held=_HELD in body)


def deletion_ts(notice: ExportEvent) -> int:
    """When the client deleted the message (the network's time, not the notice's)."""
    ts = _dict(notice.content.get(CLIENT_DELETED_KEY)).get("ts")
    return int(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else notice.ts


# --------------------------------------------------------------------------------------------
# Text of a message


def text_of(event: ExportEvent) -> str:
    """The plain text a reader sees: an edit's new text, a message's body without the legacy
    reply fallback (the formats show replies themselves)."""
    content = event.content
    if _is_edit(event):
        new = _dict(content.get("m.new_content"))
        if isinstance(new.get("body"), str):
            return new["body"]
        body = _str(content.get("body"))
        return body.removeprefix("* ")
    body = _str(content.get("body"))
    return strip_reply_fallback(body) if event.reply_to else body


def html_of(event: ExportEvent) -> str | None:
    """The formatted body (unsanitised!) of a message or of an edit's new content."""
    content = event.content
    if _is_edit(event):
        content = _dict(content.get("m.new_content"))
    if content.get("format") == "org.matrix.custom.html" and isinstance(content.get("formatted_body"), str):
        return content["formatted_body"]
    return None


def caption_of(event: ExportEvent) -> str:
    """A media event's caption: its body when that differs from the file name."""
    body = _str(event.content.get("body"))
    return "" if body == _str(event.content.get("filename")) else strip_reply_fallback(body)


def is_media(event: ExportEvent) -> bool:
    return event.msgtype in {"m.image", "m.file", "m.video", "m.audio"} or event.type == "m.sticker"


def strip_reply_fallback(body: str) -> str:
    """Drop the "> <@user> quoted" lines older clients put before a reply's own text."""
    if not body.startswith("> "):
        return body
    lines = body.split("\n")
    while lines and lines[0].startswith(">"):
        lines.pop(0)
    if lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


def redaction_note(room: ExportRoom, event: ExportEvent) -> str:
    """'[redacted at 2024-05-01 10:00 UTC by Alice (@alice:x): reason]' from unsigned."""
    because = ExportEvent(event.redacted_because or {})
    who = because.sender
    by = f"{room.name_of(who)} ({who})" if who and room.name_of(who) != who else (who or "unknown")
    reason = _str(because.content.get("reason"))
    when = utc_text(because.ts) if because.ts else "an unknown time"
    return f"[redacted at {when} by {by}{': ' + reason if reason else ''}]"


# --------------------------------------------------------------------------------------------
# Time


def utc(ts_ms: int) -> datetime:
    """Homeserver timestamps as aware UTC datetimes; nonsense values become the epoch rather
    than aborting a regulator's export."""
    try:
        return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return datetime.fromtimestamp(0, tz=timezone.utc)


def utc_text(ts_ms: int) -> str:
    return utc(ts_ms).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_iso(ts_ms: int) -> str:
    return utc(ts_ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Where things go in an export directory

_UNSAFE_IN_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_SLUG_DROP = re.compile(r"[^a-z0-9]+")
_EVENT_ID_DROP = re.compile(r"[^A-Za-z0-9_-]+")
FILE_NAME_LIMIT = 100


def room_dir(room: ExportRoom) -> str:
    """'dana-client-telegram-1a2b3c4d': readable, ASCII, and unique per room id."""
    ascii_name = unicodedata.normalize("NFKD", room.name).encode("ascii", "ignore").decode()
    slug = _SLUG_DROP.sub("-", ascii_name.lower()).strip("-")[:40].strip("-") or "room"
    return f"{slug}-{hashlib.sha256(room.room_id.encode()).hexdigest()[:8]}"


def safe_file_name(name: str, limit: int = FILE_NAME_LIMIT) -> str:
    """A file name that stays inside its folder on every filesystem: no separators, no control
    characters, no leading dots (hidden files, '..'), at most ``limit`` characters with the
    extension kept."""
    name = unicodedata.normalize("NFC", name).replace("/", "_").replace("\\", "_")
    name = _UNSAFE_IN_NAME.sub("_", name).strip().lstrip(".").strip().rstrip(". ")
    if len(name) > limit:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and stem and len(ext) <= 12 else ""
        name = name[: limit - len(ext) - 1].rstrip(". ") + "." + ext if ext else name[:limit]
    return name or "file"


def media_paths(room: ExportRoom) -> dict[str, str]:
    """Event id -> 'media/<room-dir>/<event-id-safe>-<file name>' for every event whose file
    is in the export; unique even on case-insensitive filesystems."""
    folder = f"media/{room_dir(room)}"
    paths: dict[str, str] = {}
    taken: set[str] = set()
    for event in room.events:
        media = room.media_of(event)
        if media is None or not event.event_id or event.event_id in paths:
            continue
        stem = _EVENT_ID_DROP.sub("_", event.event_id.lstrip("$"))[:48] or "event"
        name = f"{stem}-{safe_file_name(media.file_name)}"
        candidate, n = name, 1
        while candidate.casefold() in taken:
            n += 1
            candidate = f"{stem}-{n}-{safe_file_name(media.file_name)}"
        taken.add(candidate.casefold())
        paths[event.event_id] = f"{folder}/{candidate}"
    return paths


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
