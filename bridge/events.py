"""The network-neutral vocabulary between connectors and the core.

A connector translates its network's updates into :class:`RemoteEvent` at its edge and turns a
:class:`Delivery` into its network's calls; nothing else in the core knows a network's shapes.
Text crosses this boundary already rendered for Matrix (:class:`RichText`) because formatting
rules are per network, while the core decides everything about rooms, replies and the record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Awaitable, Callable


class RemoteEventKind(enum.Enum):
    MESSAGE = "message"
    EDIT = "edit"
    #: The client deleted a message. The record keeps it; the room gets an annotation.
    DELETE = "delete"
    #: The client's complete set of reactions on one message changed.
    REACTION = "reaction"
    #: Something the client sent that the bridge cannot carry yet (a poll, a game...). The core
    #: says so in the room rather than dropping it without a trace.
    UNSUPPORTED = "unsupported"
    #: A company account (e.g. a Telegram Business account) was connected, changed or removed.
    ACCOUNT = "account"
    #: The client blocked or unblocked the company; in a group: the company was added or removed.
    CHAT_STATUS = "chat_status"
    #: Someone joined (``joined``) or left a group chat.
    MEMBERSHIP = "membership"
    #: The network gave the chat a new id (``new_chat_id``); the portal stays the same room.
    MIGRATE = "migrate"
    #: The client read the company's messages up to ``target_id`` (where the network says so).
    READ = "read"
    #: The network reports, after accepting it, that the company's message ``target_id`` did
    #: not reach the client; ``description`` says why, in words for the room.
    DELIVERY_FAILED = "delivery_failed"


class MediaKind(enum.Enum):
    IMAGE = "image"
    FILE = "file"
    VIDEO = "video"
    AUDIO = "audio"
    VOICE = "voice"
    STICKER = "sticker"
    ANIMATION = "animation"
    VIDEO_NOTE = "video_note"


@dataclass(frozen=True)
class ChatRef:
    """Which conversation, on which company account, on which network."""

    network: str
    account: str
    chat_id: str


@dataclass(frozen=True)
class RemoteUser:
    network: str
    id: str
    display_name: str
    username: str | None = None
    #: Language or region code the network reports for the user (picks the disclaimer).
    language: str | None = None
    #: The user's profile picture as a reference only their connector reads (LINE: the
    #: pictureUrl), different whenever the picture changes; None: not known, the ghost's avatar
    #: stays as it is. Fetched through the connector's ``PictureSource``.
    picture: str | None = None


@dataclass(frozen=True)
class RichText:
    """Plain text plus its Matrix HTML rendering (None when it has no formatting)."""

    body: str
    html: str | None = None


@dataclass(frozen=True)
class RemoteMedia:
    kind: MediaKind
    file_name: str
    mimetype: str
    size: int | None = None
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    #: Downloads the file from the network; None when the network will not hand it over.
    fetch: Callable[[], Awaitable[bytes]] | None = field(default=None, compare=False, repr=False)
    #: Why ``fetch`` is None, in words for the room (e.g. over the download limit).
    unavailable_reason: str = ""


@dataclass(frozen=True)
class RemoteLocation:
    latitude: float
    longitude: float


@dataclass(frozen=True)
class RemoteContact:
    phone_number: str
    name: str


@dataclass(frozen=True)
class RemoteAccount:
    """A company-owned account on a network that clients write to (owner, and what it may do)."""

    network: str
    id: str
    owner: RemoteUser
    enabled: bool
    can_reply: bool


@dataclass(frozen=True)
class RemoteEvent:
    kind: RemoteEventKind
    chat: ChatRef
    sender: RemoteUser
    #: The network's id of this event; with ``chat`` it identifies it for dedupe. Edits,
    #: deletions and reactions get ids of their own, distinct from the message they act on.
    message_id: str
    timestamp_ms: int
    text: RichText | None = None
    media: RemoteMedia | None = None
    location: RemoteLocation | None = None
    contact: RemoteContact | None = None
    #: The message this one replies to (network id).
    reply_to: str | None = None
    #: For EDIT, DELETE and REACTION: the message acted upon (network id).
    target_id: str | None = None
    #: For REACTION: the sender's reactions on the target after the change.
    reactions: tuple[str, ...] = ()
    #: For UNSUPPORTED: what it was, in words ("a poll"); for MIGRATE: what happened to the
    #: chat, completing "This … group …" ("was upgraded to a supergroup").
    description: str = ""
    #: The chat's own title as the network shows it (used to name the portal).
    chat_title: str = ""
    #: The company account itself sent this (its owner typed it in the network's own app): it
    #: belongs in the record as the company's message, not the client's.
    from_account: bool = False
    #: For ACCOUNT: the account's new state.
    account: RemoteAccount | None = None
    #: For CHAT_STATUS: whether the client now blocks the company (or the group removed it).
    blocked: bool = False
    #: The chat is a group with several clients rather than a one-to-one conversation.
    is_group: bool = False
    #: For MEMBERSHIP: joined (True) or left (False).
    joined: bool = False
    #: For MIGRATE: the chat's new id.
    new_chat_id: str = ""
    #: For MESSAGE: the one-time invitation code the client arrived with (a Telegram deep
    #: link's start payload), exactly as the network delivered it; the core claims it and
    #: assigns the conversation to the employee who made the link.
    invite_code: str = ""


class DeliveryKind(enum.Enum):
    MESSAGE = "message"
    EDIT = "edit"
    DELETE = "delete"
    REACTION = "reaction"
    TYPING = "typing"
    #: An employee read the conversation up to ``targets[0]``.
    READ = "read"
    #: A message template the network approved beforehand (``template``), the only kind some
    #: business networks accept once a conversation has been quiet for a while.
    TEMPLATE = "template"


@dataclass(frozen=True)
class OutboundMedia:
    kind: MediaKind
    data: bytes = field(repr=False)
    file_name: str
    mimetype: str
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None


@dataclass(frozen=True)
class Delivery:
    """Something an employee did in a portal, on its way to the client."""

    kind: DeliveryKind
    chat: ChatRef
    room_id: str
    event_id: str
    #: Who is answering, as the client should see it (already rendered from the template).
    signature: str = ""
    #: The text (or caption) with the employee's formatting, Matrix-side.
    text: RichText | None = None
    media: OutboundMedia | None = None
    location: RemoteLocation | None = None
    #: MESSAGE: the remote message this replies to. EDIT/DELETE/REACTION: the remote messages
    #: acted upon (an employee's long message may have become several).
    reply_to: str | None = None
    targets: tuple[str, ...] = ()
    #: EDIT: whether the target carries media (its caption is edited, not its text).
    target_has_media: bool = False
    #: REACTION: the emoji now set ("" removes the bot's reaction).
    reaction: str = ""
    #: DELETE: when the original was sent, for the network's deletion window.
    target_timestamp_ms: int | None = None
    #: TEMPLATE: its name, parameters in order, and language code ("" for the network's default).
    template: str = ""
    template_params: tuple[str, ...] = ()
    template_language: str = ""


@dataclass(frozen=True)
class DeliveryReceipt:
    """What the network answered: the remote ids the delivery became, and anything to say."""

    message_ids: tuple[str, ...] = ()
    #: Something the employee should know although the delivery went through (e.g. a caption
    #: that had to be sent as a separate message).
    note: str = ""
