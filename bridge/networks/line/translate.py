"""LINE webhook events -> the core's RemoteEvents.

Everything LINE-shaped stops here. Field names follow the Messaging API reference (webhook
event objects); the payload is read as plain JSON rather than through line-bot-sdk's models so
that an event type or field LINE adds tomorrow degrades to "ignored" or "unsupported" instead
of failing the whole webhook (which LINE would then deliver again, and again).

What LINE gives besides the event itself, and the core has no place for, travels next to it in
:class:`Inbound`: the reply token (answers within a minute go out free), the quote token (a
reply quotes the message only with it) and the mark-as-read token. The connector keeps them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Protocol

from bridge.events import (
    ChatRef,
    MediaKind,
    RemoteEvent,
    RemoteEventKind,
    RemoteLocation,
    RemoteMedia,
    RemoteUser,
    RichText,
)

log = logging.getLogger("houseline.line")

NETWORK = "line"
#: Ids as LINE issues them (``U``/``C``/``R`` + 32 hex digits, numeric message ids, ULID
#: webhook event ids); anything else in a signed payload is kept only if it is this tame.
_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
#: A user id LINE's profile endpoints accept; other ids are never sent to them.
USER_ID = re.compile(r"U[0-9a-f]{32}")
#: The invitation code a client brings back in the text an oaMessage link pre-fills
#: (``InviteLinks``): "HL-" and 24 letters or digits, anywhere in the first message.
INVITE_MARK = "HL-"
INVITE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
INVITE_LENGTH = 24
_INVITE_RE = re.compile(rf"(?<![A-Za-z0-9]){INVITE_MARK}([A-Za-z0-9]{{{INVITE_LENGTH}}})(?![A-Za-z0-9])")
#: What a client sent that the bridge does not carry, in words for the room.
_UNSUPPORTED = {
    "postback": "a tap on one of the account's buttons or menu items",
}
#: Events that concern nobody's conversation (beacons, account links, memberships, modules...).
_IGNORED = (
    "videoPlayComplete",
    "beacon",
    "accountLink",
    "membership",
    "module",
    "activated",
    "deactivated",
    "botSuspended",
    "botResumed",
    "delivery",
)


@dataclass(frozen=True)
class Source:
    """Where an event happened: a one-to-one chat (``user``), a group or a multi-person chat
    (``room``). ``chat_id`` names the portal; ``user_id`` who acted (LINE leaves it out for
    members on LINE's desktop apps and in some group events)."""

    kind: str
    chat_id: str
    user_id: str | None

    @property
    def is_group(self) -> bool:
        return self.kind != "user"


@dataclass(frozen=True)
class Profile:
    name: str
    language: str | None = None
    #: The pictureUrl (the ghost's avatar); None: none known.
    picture: str | None = None


class Directory(Protocol):
    """Names for people and groups (the connector asks LINE's profile endpoints, cached)."""

    async def member(self, source: Source, user_id: str) -> Profile: ...

    async def title(self, source: Source) -> str: ...


@dataclass(frozen=True)
class ContentRef:
    """Where a client's file is: LINE's content endpoint for ``message_id``, or the
    ``external_url`` a LIFF app sent it from."""

    message_id: str
    kind: str
    external_url: str = ""


#: Downloads a client's file (raises MediaUnavailable when LINE no longer has it).
FetchContent = Callable[[ContentRef], Awaitable[bytes]]


@dataclass(frozen=True)
class Inbound:
    """One RemoteEvent and what LINE sent along with it for later answers."""

    event: RemoteEvent
    #: Identifies the webhook event across redeliveries (dedupe before the core is asked).
    webhook_event_id: str
    redelivery: bool
    #: Usable once, within a minute; "" for redeliveries and events in standby mode.
    reply_token: str = ""
    #: Lets a reply quote this message (text, image, video and sticker messages).
    quote_token: str = ""
    #: Marks this message (and those before it) as read.
    read_token: str = ""


class _Malformed(Exception):
    """An event whose shape the bridge cannot use at all (no chat to put it in)."""


class Translator:
    def __init__(self, account: str, directory: Directory, fetch: FetchContent) -> None:
        #: The bot's user id (the webhook's ``destination``): the company account of every chat.
        self.account = account
        self.directory = directory
        self.fetch = fetch

    async def payload(self, payload: dict[str, Any]) -> list[Inbound]:
        """Every event the bridge carries, in the order LINE sent them; a malformed event is
        logged and skipped, never an exception (LINE would redeliver the whole body)."""
        events = payload.get("events")
        out: list[Inbound] = []
        for raw in events if isinstance(events, list) else []:
            if not isinstance(raw, dict):
                continue
            try:
                out += await self.event(raw)
            except (_Malformed, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
                log.warning(
                    "event=line_event_malformed type=%r error=%s",
                    str(raw.get("type"))[:30],
                    # Ours for a malformed shape; otherwise only the type (never the client's text).
                    e.args[0] if isinstance(e, _Malformed) else type(e).__name__,
                )
        return out

    async def event(self, raw: dict[str, Any]) -> list[Inbound]:
        kind = raw.get("type")
        if kind in _IGNORED or not isinstance(kind, str):
            log.debug("event=line_event_ignored type=%r", str(kind)[:30])
            return []
        source = _source(raw.get("source"))
        context = _Context(raw, source, self)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            return await handler(context)
        if kind in _UNSUPPORTED:
            return [await context.unsupported(_UNSUPPORTED[kind])]
        log.info("event=line_event_ignored type=%r reason=unknown_type", kind[:30])
        return []


class _Context:
    """One raw event with what every kind reads from it."""

    def __init__(self, raw: dict[str, Any], source: Source, translator: Translator) -> None:
        self.raw = raw
        self.source = source
        self.t = translator
        self.webhook_event_id = _webhook_event_id(raw)
        self.timestamp_ms = _ms(raw.get("timestamp"))
        context = raw.get("deliveryContext")
        self.redelivery = isinstance(context, dict) and context.get("isRedelivery") is True
        token = raw.get("replyToken")
        # In standby another channel answers the chat; a redelivered event's token is too old.
        usable = raw.get("mode", "active") == "active" and not self.redelivery
        self.reply_token = token if usable and isinstance(token, str) and 0 < len(token) <= 200 else ""

    @property
    def chat(self) -> ChatRef:
        return ChatRef(NETWORK, self.t.account, self.source.chat_id)

    async def sender(self, user_id: str | None = None) -> RemoteUser:
        user_id = user_id or self.source.user_id
        if not user_id:
            return self.anonymous()
        profile = await self.t.directory.member(self.source, user_id)
        return RemoteUser(NETWORK, user_id, profile.name, language=profile.language, picture=profile.picture)

    def anonymous(self) -> RemoteUser:
        """Whoever LINE does not name (a join, a member on LINE's desktop app): one ghost per
        group stands for them."""
        return RemoteUser(NETWORK, self.source.chat_id, "Someone in the group")

    async def base(self, kind: RemoteEventKind, message_id: str, **fields: Any) -> RemoteEvent:
        return RemoteEvent(
            kind=kind,
            chat=self.chat,
            sender=fields.pop("sender", None) or await self.sender(),
            message_id=message_id,
            timestamp_ms=self.timestamp_ms,
            is_group=self.source.is_group,
            chat_title=await self.t.directory.title(self.source) if self.source.is_group else "",
            **fields,
        )

    def inbound(self, event: RemoteEvent, **tokens: str) -> Inbound:
        return Inbound(event, self.webhook_event_id, self.redelivery, reply_token=self.reply_token, **tokens)

    async def unsupported(self, description: str) -> Inbound:
        event = await self.base(RemoteEventKind.UNSUPPORTED, self.webhook_event_id, description=description)
        return self.inbound(event)


# event kinds


async def _message(c: _Context) -> list[Inbound]:
    message = c.raw.get("message")
    if not isinstance(message, dict) or not _is_id(message.get("id")):
        raise _Malformed("message without an id")
    base = await c.base(
        RemoteEventKind.MESSAGE, message["id"], reply_to=_id_or_none(message.get("quotedMessageId"))
    )
    kind = message.get("type")
    try:
        event = _content(c, base, kind, message)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        log.warning(
            "event=line_message_malformed id=%s type=%r error=%s",
            message["id"],
            str(kind)[:30],
            type(e).__name__,
        )
        event = replace(
            base,
            kind=RemoteEventKind.UNSUPPORTED,
            description=f"a LINE {str(kind)[:30]} message the bridge could not read",
        )
    return [
        c.inbound(
            event,
            quote_token=_token(message.get("quoteToken")),
            read_token=_token(message.get("markAsReadToken")),
        )
    ]


def _content(c: _Context, base: RemoteEvent, kind: Any, m: dict[str, Any]) -> RemoteEvent:
    if kind == "text":
        text = _text(m["text"])
        code = invite_code(text) if c.source.kind == "user" else ""
        return replace(base, text=RichText(text), invite_code=code)
    if kind in ("image", "video", "audio", "file"):
        return replace(base, media=_media(c, kind, m))
    if kind == "location":
        label = ", ".join(str(m[k]) for k in ("title", "address") if isinstance(m.get(k), str) and m[k])
        location = RemoteLocation(_number(m["latitude"]), _number(m["longitude"]))
        return replace(base, location=location, text=RichText(label) if label else None)
    if kind == "sticker":
        return replace(
            base,
            media=_sticker(m),
            text=RichText(m["text"]) if isinstance(m.get("text"), str) and m["text"] else None,
        )
    return replace(
        base, kind=RemoteEventKind.UNSUPPORTED, description=f"a LINE message of type {str(kind)[:30]!r}"
    )


async def _unsend(c: _Context) -> list[Inbound]:
    unsend = c.raw.get("unsend")
    target = unsend.get("messageId") if isinstance(unsend, dict) else None
    if not _is_id(target):
        raise _Malformed("unsend without a message id")
    event = await c.base(RemoteEventKind.DELETE, c.webhook_event_id, target_id=target)
    return [c.inbound(event)]


async def _follow(c: _Context) -> list[Inbound]:
    return await _status(c, blocked=False, personal=True)


async def _unfollow(c: _Context) -> list[Inbound]:
    return await _status(c, blocked=True, personal=True)


async def _join(c: _Context) -> list[Inbound]:
    return await _status(c, blocked=False, personal=False)


async def _leave(c: _Context) -> list[Inbound]:
    return await _status(c, blocked=True, personal=False)


async def _status(c: _Context, *, blocked: bool, personal: bool) -> list[Inbound]:
    """follow/unfollow: the client (un)blocked the account; join/leave: the account was added
    to or removed from a group or multi-person chat. LINE names nobody for join and leave."""
    if personal != (c.source.kind == "user"):
        raise _Malformed(f"{c.raw.get('type')} in a {c.source.kind} chat")
    sender = await c.sender() if personal else c.anonymous()
    event = await c.base(RemoteEventKind.CHAT_STATUS, c.webhook_event_id, sender=sender, blocked=blocked)
    return [c.inbound(event)]


async def _member_joined(c: _Context) -> list[Inbound]:
    return await _members(c, "joined", joined=True)


async def _member_left(c: _Context) -> list[Inbound]:
    return await _members(c, "left", joined=False)


async def _members(c: _Context, key: str, *, joined: bool) -> list[Inbound]:
    """One MEMBERSHIP event per member (each gets a ghost); their ids differ per member so the
    core's message map tells them apart."""
    if not c.source.is_group:
        raise _Malformed(f"{c.raw.get('type')} outside a group")
    detail = c.raw.get(key)
    members = detail.get("members") if isinstance(detail, dict) else None
    out = []
    for member in members if isinstance(members, list) else []:
        user_id = member.get("userId") if isinstance(member, dict) else None
        if not _is_id(user_id):
            continue
        event = await c.base(
            RemoteEventKind.MEMBERSHIP,
            f"{c.webhook_event_id}.{user_id}",
            sender=await c.sender(user_id),
            joined=joined,
        )
        out.append(c.inbound(event))
    return out


async def _edited(c: _Context) -> list[Inbound]:
    """messageEdited (group chats only, for now): the text's new state. LINE may deliver several
    out of order; the connector drops one older than an edit it already passed on."""
    message = c.raw.get("message")
    if not isinstance(message, dict) or not _is_id(message.get("id")) or message.get("type") != "text":
        raise _Malformed("an edit without a text message")
    event = await c.base(
        RemoteEventKind.EDIT,
        c.webhook_event_id,
        target_id=message["id"],
        text=RichText(_text(message["text"])),
    )
    return [c.inbound(event)]


_HANDLERS: dict[str, Callable[[_Context], Awaitable[list[Inbound]]]] = {
    "message": _message,
    "unsend": _unsend,
    "follow": _follow,
    "unfollow": _unfollow,
    "join": _join,
    "leave": _leave,
    "memberJoined": _member_joined,
    "memberLeft": _member_left,
    "messageEdited": _edited,
}


# pieces

_MEDIA = {
    # LINE converts clients' pictures to JPEG and voice messages to M4A (AAC in MP4).
    "image": (MediaKind.IMAGE, "image/jpeg"),
    "video": (MediaKind.VIDEO, "video/mp4"),
    "audio": (MediaKind.VOICE, "audio/mp4"),
}


def _media(c: _Context, kind: str, m: dict[str, Any]) -> RemoteMedia:
    message_id = m["id"]
    provider = m.get("contentProvider") if isinstance(m.get("contentProvider"), dict) else {}
    external = provider.get("originalContentUrl") if provider.get("type") == "external" else ""
    ref = ContentRef(message_id, kind, external if isinstance(external, str) else "")
    fetch = c.t.fetch

    async def download() -> bytes:
        return await fetch(ref)

    if kind == "file":
        name = _file_name(m.get("fileName"), f"file-{message_id}")
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        size = (
            m.get("fileSize")
            if isinstance(m.get("fileSize"), int) and not isinstance(m.get("fileSize"), bool)
            else None
        )
        return RemoteMedia(MediaKind.FILE, name, mimetype, size=size, fetch=download)
    media_kind, mimetype = _MEDIA[kind]
    duration = m.get("duration")
    duration_ms = (
        duration if isinstance(duration, int) and not isinstance(duration, bool) and duration >= 0 else None
    )
    extension = mimetypes.guess_extension(mimetype) or ""
    if kind == "audio":
        extension = ".m4a"
    return RemoteMedia(
        media_kind, f"{kind}-{message_id}{extension}", mimetype, duration_ms=duration_ms, fetch=download
    )


def _sticker(m: dict[str, Any]) -> RemoteMedia:
    """LINE hands bots a sticker's ids and keywords, not its picture (the Messaging API has no
    sticker image endpoint and documents no image address), so the room is told what it was."""
    package, sticker = str(m["packageId"])[:20], str(m["stickerId"])[:20]
    keywords = [k for k in m.get("keywords") or [] if isinstance(k, str) and k][:15]
    said = f"; LINE describes it as: {', '.join(k[:40] for k in keywords)}" if keywords else ""
    return RemoteMedia(
        MediaKind.STICKER,
        f"LINE sticker {package}/{sticker}",
        "image/png",
        fetch=None,
        unavailable_reason=f"LINE gives bots no picture of a sticker, only its number{said}",
    )


def invite_code(text: str) -> str:
    """The invitation code in a client's text (see ``INVITE_MARK``), or ""."""
    found = _INVITE_RE.search(text)
    return found.group(1) if found else ""


def _source(raw: Any) -> Source:
    if not isinstance(raw, dict):
        raise _Malformed("no source")
    kind = raw.get("type")
    user_id = raw.get("userId") if _is_id(raw.get("userId")) else None
    key = (
        {"user": "userId", "group": "groupId", "room": "roomId"}.get(kind) if isinstance(kind, str) else None
    )
    chat_id = raw.get(key) if key else None
    if not _is_id(chat_id):
        raise _Malformed(f"source of type {str(kind)[:20]!r} without its id")
    return Source(str(kind), chat_id, user_id)


def _webhook_event_id(raw: dict[str, Any]) -> str:
    """LINE's ULID; a payload without one (never LINE's) gets a digest of the event, so the
    same event delivered again still dedupes."""
    value = raw.get("webhookEventId")
    if _is_id(value):
        return value
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    return f"h{digest[:32]}"


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _id_or_none(value: Any) -> str | None:
    return value if _is_id(value) else None


def _token(value: Any) -> str:
    return value if isinstance(value, str) and 0 < len(value) <= 500 else ""


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("text is not a string")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("not a number")
    return float(value)


def _file_name(value: Any, default: str) -> str:
    """The client's file name, without a path or control characters."""
    if not isinstance(value, str):
        return default
    name = "".join(ch for ch in value.replace("\\", "/").rsplit("/", 1)[-1] if ch.isprintable())[:200]
    return name.strip() or default


def _ms(timestamp: Any) -> int:
    if isinstance(timestamp, int) and not isinstance(timestamp, bool) and 0 < timestamp < 10**14:
        return timestamp
    return int(time.time() * 1000)
