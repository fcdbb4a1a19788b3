"""The emulated Telegram world of one bot: its identity, the chats it is in (private chats with
clients, groups, and the business chats of accounts connected to it), the files in them, and the
updates waiting for the bot.

Kept free of HTTP so the Bot API handlers and the client control API share one model, and the
rules ("a chat exists once the client has written", "chat id = user id") live in one place.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.changes import Changes

from . import formatting, media
from .reactions import CLIENT_MAX_REACTIONS, canonical_emoji
from .updates import UpdateQueue

MAX_USER_ID = 2**52  # Telegram user ids fit in 52 bits
USERNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{4,31}")
RETAINED_MESSAGES_PER_CHAT = 10_000
MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024  # getFile refuses bigger files
CHAT_ACTION_SECONDS = 5.0  # how long a client shows "typing..." after sendChatAction
MAX_CAPTION_LENGTH = 1024
DELETE_WINDOW = 48 * 3600  # "A message can only be deleted if it was sent less than 48 hours ago"
BUSINESS_REPLY_WINDOW = 24 * 3600  # business bots may write to chats active in the last 24 h
BUSINESS_EDIT_WINDOW = 48 * 3600  # others' business messages are editable for 48 hours
FILE_FIELDS = ("photo", "document", "video", "animation", "audio", "voice", "video_note", "sticker")

Sender = Literal["bot", "client", "owner", "member", "service"]


class ClientError(ValueError):
    """A control API request that cannot be honoured; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class BotIdentity:
    id: int
    first_name: str
    username: str
    can_read_all_group_messages: bool = False  # privacy mode on, BotFather's default
    can_connect_to_business: bool = True

    def as_user(self) -> dict[str, Any]:
        """The bot as it appears in ``from`` of its own messages."""
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    def get_me(self) -> dict[str, Any]:
        return {
            **self.as_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": self.can_read_all_group_messages,
            "supports_inline_queries": False,
            "can_connect_to_business": self.can_connect_to_business,
            "has_main_web_app": False,
        }


@dataclass
class ClientProfile:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None

    def as_user(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        if self.language_code:
            user["language_code"] = self.language_code
        return user

    def as_chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "first_name": self.first_name}
        if self.last_name:
            chat["last_name"] = self.last_name
        if self.username:
            chat["username"] = self.username
        chat["type"] = "private"
        return chat


@dataclass
class ChatAction:
    action: str
    date: int
    expires_at: float


@dataclass
class StoredMessage:
    """One message as the bot sees it, plus what only the sandbox tracks about it.

    ``data`` is the Bot API ``Message`` object, kept current: edits change it in place, so
    anything handed out (updates, results) must be a copy.
    """

    data: dict[str, Any]
    sender: Sender
    deleted: bool = False
    read_by_business: bool = False
    # reactions by actor user id -> list of ReactionType objects
    reactions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def message_id(self) -> int:
        return int(self.data["message_id"])

    @property
    def date(self) -> int:
        return int(self.data["date"])

    @property
    def by_bot(self) -> bool:
        return self.sender == "bot"

    def is_service(self) -> bool:
        return self.sender == "service" or not any(
            key in self.data for key in ("text", "location", "contact", *FILE_FIELDS)
        )


@dataclass(kw_only=True)
class Conversation:
    """What every chat kind shares: its message store and per-chat message id counter.

    Message ids are allocated per chat (Telegram allocates private-chat and basic-group ids from
    the bot's account-wide sequence, which is also unique within each chat; ``(chat_id,
    message_id)`` is the key either way).
    """

    next_message_id: int = 1
    messages: OrderedDict[int, StoredMessage] = field(default_factory=OrderedDict)
    file_ids: set[str] = field(default_factory=set)
    sent_by_bot: int = 0
    action: ChatAction | None = None

    @property
    def id(self) -> int:
        raise NotImplementedError

    def as_chat(self) -> dict[str, Any]:
        raise NotImplementedError

    def allocate_message_id(self) -> int:
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id

    def add(self, data: dict[str, Any], sender: Sender) -> StoredMessage:
        stored = StoredMessage(data, sender)
        self.messages[stored.message_id] = stored
        self.file_ids.update(file_ids_of(data))
        if sender == "bot":
            self.sent_by_bot += 1
        while len(self.messages) > RETAINED_MESSAGES_PER_CHAT:
            self.messages.popitem(last=False)
        return stored

    def find(self, message_id: int) -> StoredMessage | None:
        """A message that still exists (deleted ones are not found, as on Telegram)."""
        stored = self.messages.get(message_id)
        if stored is None or stored.deleted:
            return None
        return stored

    def after(self, message_id: int) -> Iterator[StoredMessage]:
        return (m for m in self.messages.values() if m.message_id > message_id)


@dataclass(kw_only=True)
class PrivateChat(Conversation):
    """The private chat between one client and the bot; its id is the client's user id."""

    client: ClientProfile
    blocked: bool = False
    from_client_count: int = 0
    read_up_to: int = 0  # the client has read the bot's messages up to this id

    @property
    def id(self) -> int:
        return self.client.id

    def as_chat(self) -> dict[str, Any]:
        return self.client.as_chat()

    @property
    def from_bot(self) -> list[dict[str, Any]]:
        return [m.data for m in self.messages.values() if m.by_bot]


@dataclass(kw_only=True)
class GroupChat(Conversation):
    """A basic group (``type: group``) or a supergroup the bot is in."""

    chat_id: int
    title: str
    type: Literal["group", "supergroup"]
    members: dict[int, ClientProfile] = field(default_factory=dict)
    creator_id: int = 0
    bot_status: Literal["member", "administrator", "left", "kicked"] = "member"
    migrated_to: int | None = None

    @property
    def id(self) -> int:
        return self.chat_id

    def as_chat(self) -> dict[str, Any]:
        return {"id": self.chat_id, "title": self.title, "type": self.type}

    @property
    def bot_present(self) -> bool:
        return self.bot_status in ("member", "administrator")


@dataclass(kw_only=True)
class BusinessChat(Conversation):
    """The private chat between a business account's owner and one of its clients.

    Its chat id is the client's user id, like the bot's own private chat with that client, so it
    is addressed together with a business connection id. Message ids come from the owner's
    account-wide counter: deleteBusinessMessages names messages without a chat.
    """

    connection: BusinessConnection = field(repr=False)
    client: ClientProfile
    last_incoming_date: int | None = None

    @property
    def id(self) -> int:
        return self.client.id

    def as_chat(self) -> dict[str, Any]:
        return self.client.as_chat()

    def allocate_message_id(self) -> int:
        message_id = self.connection.next_message_id
        self.connection.next_message_id += 1
        return message_id


BUSINESS_RIGHTS = (
    "can_reply",
    "can_read_messages",
    "can_delete_sent_messages",
    "can_delete_all_messages",
    "can_edit_name",
    "can_edit_bio",
    "can_edit_profile_photo",
    "can_edit_username",
    "can_change_gift_settings",
    "can_view_gifts_and_stars",
    "can_convert_gifts_to_stars",
    "can_transfer_and_upgrade_gifts",
    "can_transfer_stars",
    "can_manage_stories",
)


@dataclass
class BusinessConnection:
    id: str
    owner: ClientProfile
    date: int
    rights: dict[str, bool]
    is_enabled: bool = True
    chats: dict[int, BusinessChat] = field(default_factory=dict)
    next_message_id: int = 1

    def find_message(self, message_id: int) -> tuple[BusinessChat, StoredMessage] | None:
        for chat in self.chats.values():
            stored = chat.find(message_id)
            if stored is not None:
                return chat, stored
        return None

    def as_json(self) -> dict[str, Any]:
        """The Bot API 9+ ``BusinessConnection``: ``rights`` replaced the old ``can_reply``."""
        rights = {name: True for name in BUSINESS_RIGHTS if self.rights.get(name)}
        return {
            "id": self.id,
            "user": self.owner.as_user(),
            "user_chat_id": self.owner.id,
            "date": self.date,
            "rights": rights,
            "is_enabled": self.is_enabled,
        }

    def can(self, right: str) -> bool:
        return bool(self.rights.get(right))


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes
    kind: str = "document"
    mime_type: str | None = None
    # The Bot API object sending this file_id again reproduces (a PhotoSize list for photos).
    media: Any = None

    def as_file(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.content),
            "file_path": self.file_path,
        }


def random_id(length: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(length)).decode("ascii").rstrip("=")


def file_ids_of(message: dict[str, Any]) -> Iterator[str]:
    for name in FILE_FIELDS:
        value = message.get(name)
        if isinstance(value, list):
            yield from (size["file_id"] for size in value)
        elif isinstance(value, dict):
            yield value["file_id"]


class SandboxState:
    def __init__(
        self,
        bot: BotIdentity,
        *,
        first_update_id: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bot = bot
        self.clock = clock
        self.clock_offset = 0.0
        if first_update_id is None:
            first_update_id = 100_000_000 + secrets.randbelow(800_000_000)
        self.updates = UpdateQueue(first_update_id)
        self.chats: dict[int, PrivateChat] = {}
        self.groups: dict[int, GroupChat] = {}
        self.business: dict[str, BusinessConnection] = {}
        self.files_by_id: dict[str, StoredFile] = {}
        self.files_by_path: dict[str, StoredFile] = {}
        self.webhook_url = ""
        #: Lets control API callers wait for "the bot sent something" without polling.
        self.outbox = Changes()

    # ------------------------------------------------------------------ time and updates

    def now(self) -> int:
        """The sandbox's notion of now; ``POST /sandbox/clock`` moves it for 24/48 h windows."""
        return int(self.clock() + self.clock_offset)

    def advance_clock(self, seconds: float) -> int:
        if seconds < 0:
            raise ClientError('"advance_seconds" must not be negative')
        self.clock_offset += seconds
        return self.now()

    def push_update(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue a snapshot: stored messages change on later edits, a queued update must not."""
        self.updates.push(kind, copy.deepcopy(payload))

    # ------------------------------------------------------------------ client side

    def client_profile(self, user_id: int, fields: dict[str, Any]) -> ClientProfile:
        """Create or update the client's profile from a control request's optional fields."""
        existing = self.chats.get(user_id)
        return self.profile_from(user_id, fields, existing.client if existing else None)

    def known_profile(self, user_id: int) -> ClientProfile | None:
        """Any profile the sandbox has for this user: private chats, groups, business chats."""
        chat = self.chats.get(user_id)
        if chat is not None:
            return chat.client
        for group in self.groups.values():
            if user_id in group.members:
                return group.members[user_id]
        for connection in self.business.values():
            if connection.owner.id == user_id:
                return connection.owner
            if user_id in connection.chats:
                return connection.chats[user_id].client
        return None

    @staticmethod
    def profile_from(user_id: int, fields: dict[str, Any], existing: ClientProfile | None) -> ClientProfile:
        """Validate profile fields and apply them to ``existing`` (or a new profile)."""
        if not isinstance(user_id, int) or user_id <= 0 or user_id >= MAX_USER_ID:
            raise ClientError("telegram_user_id must be a positive integer below 2**52")
        for name in ("first_name", "last_name", "username", "language_code"):
            value = fields.get(name)
            if value is not None and not isinstance(value, str):
                raise ClientError(f'"{name}" must be a string')
        username = fields.get("username")
        if username and not USERNAME_RE.fullmatch(username):
            raise ClientError('"username" must be 5-32 characters: letters, digits, underscores')
        first_name = fields.get("first_name")
        if first_name is not None and not first_name.strip():
            raise ClientError('"first_name" must not be empty')
        if existing is None:
            if not first_name:
                raise ClientError('"first_name" is required the first time a client writes')
            profile = ClientProfile(user_id, first_name)
        else:
            profile = existing
            if first_name:
                profile.first_name = first_name
        for name in ("last_name", "username", "language_code"):
            if name in fields:
                setattr(profile, name, fields[name] or None)
        return profile

    def _open_chat(self, profile: ClientProfile) -> PrivateChat:
        chat = self.chats.get(profile.id)
        if chat is None:
            chat = PrivateChat(client=profile)
            self.chats[profile.id] = chat
        return chat

    def client_sends(
        self,
        user_id: int,
        fields: dict[str, Any],
        *,
        content: dict[str, Any],
        reply_to_message_id: int | None = None,
    ) -> dict[str, Any]:
        """Record a message from the client and queue the ``message`` update for the bot.

        A client writing to a bot it blocked unblocks it first, as Telegram's "Restart" does.
        """
        reply_to = None
        if reply_to_message_id is not None:
            existing = self.chats.get(user_id)
            reply_to = existing.find(reply_to_message_id) if existing else None
            if reply_to is None:
                raise ClientError("reply_to_message_id is not a message of this chat")
        profile = self.client_profile(user_id, fields)
        chat = self._open_chat(profile)
        if chat.blocked:
            self.set_blocked(user_id, False)
        message: dict[str, Any] = {
            "message_id": chat.allocate_message_id(),
            "from": profile.as_user(),
            "chat": profile.as_chat(),
            "date": self.now(),
        }
        if reply_to is not None:
            message["reply_to_message"] = without_reply(reply_to.data)
        message.update(content)
        chat.add(message, "client")
        chat.from_client_count += 1
        self.push_update("message", message)
        return message

    def client_text(self, text: Any, entities: Any = None) -> dict[str, Any]:
        """The text part of a client message, with its entities and those Telegram detects."""
        if not isinstance(text, str):
            raise ClientError('"text" is required and must be a string')
        checked = client_entities(text, entities, "entities")
        try:
            formatted = formatting.finalize(text, checked)
        except formatting.TextEmpty:
            raise ClientError('"text" must not be empty') from None
        except formatting.TextTooLong:
            raise ClientError('"text" must be at most 4096 characters') from None
        content: dict[str, Any] = {"text": formatted.text}
        if formatted.entities:
            content["entities"] = formatted.entities
        return content

    def client_caption(self, caption: Any, entities: Any = None) -> dict[str, Any]:
        """``caption``/``caption_entities`` of a client's media message (empty: none)."""
        if caption is None:
            if entities:
                raise ClientError('"caption_entities" needs a "caption"')
            return {}
        if not isinstance(caption, str):
            raise ClientError('"caption" must be a string')
        checked = client_entities(caption, entities, "caption_entities")
        try:
            formatted = formatting.finalize(caption, checked, MAX_CAPTION_LENGTH)
        except formatting.TextEmpty:
            return {}
        except formatting.TextTooLong:
            raise ClientError('"caption" must be at most 1024 characters') from None
        content: dict[str, Any] = {"caption": formatted.text}
        if formatted.entities:
            content["caption_entities"] = formatted.entities
        return content

    def client_document(
        self, data: bytes, file_name: str, mime_type: str | None, caption: str | None
    ) -> dict[str, Any]:
        """The document part of a client message; the file is stored only once all is valid."""
        content = self.client_caption(caption)
        mime = mime_type or media.guess_mime(file_name)
        stored = self.store_file(data, "document", file_name, mime)
        document: dict[str, Any] = {
            "file_name": file_name,
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(data),
        }
        if mime_type:
            document["mime_type"] = mime_type
        stored.media = document
        return {"document": document, **content}

    def set_blocked(self, user_id: int, blocked: bool) -> bool:
        """Block or unblock the bot; the bot gets ``my_chat_member`` like on Telegram.

        Returns False when nothing changed.
        """
        chat = self.chats.get(user_id)
        if chat is None:
            raise ClientError("this client has not written to the bot yet", status=404)
        if chat.blocked == blocked:
            return False
        chat.blocked = blocked
        # ChatMemberBanned carries until_date (0: forever); ChatMemberMember has none here.
        kicked = self.bot_member("kicked")
        member = self.bot_member("member")
        old, new = (member, kicked) if blocked else (kicked, member)
        self.push_update(
            "my_chat_member",
            {
                "chat": chat.client.as_chat(),
                "from": chat.client.as_user(),
                "date": self.now(),
                "old_chat_member": old,
                "new_chat_member": new,
            },
        )
        return True

    # ------------------------------------------------------------------ what people do

    def user_edits(self, stored: StoredMessage, values: dict[str, Any]) -> dict[str, Any]:
        """A person edits their own message: ``text`` or ``caption`` (+ ``entities``).

        Returns the edited message (a snapshot) with ``edit_date`` set; the caller picks the
        update type (``edited_message`` or ``edited_business_message``).
        """
        if stored.deleted:
            raise ClientError("that message was deleted", status=404)
        data = stored.data
        if values.get("text") is not None:
            if "text" not in data:
                raise ClientError("that message has no text to edit; edit its caption")
            changes = self.client_text(values["text"], values.get("entities"))
            changes.setdefault("entities", None)
        elif "caption" in values:
            if not any(kind in data for kind in media.CAPTIONED_KINDS):
                raise ClientError("that message cannot have a caption")
            raw_entities = values.get("caption_entities", values.get("entities"))
            changes = self.client_caption(values["caption"] or None, raw_entities)
            changes.setdefault("caption", None)
            changes.setdefault("caption_entities", None)
        else:
            raise ClientError('send "text" (text messages) or "caption" (media messages)')
        if all(data.get(key) == value for key, value in changes.items()):
            raise ClientError("the edit changes nothing (Telegram would not send it)")
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        data["edit_date"] = self.now()
        self.outbox.notify()
        return copy.deepcopy(data)

    def user_reacts(
        self, stored: StoredMessage, user_id: int, raw: Any
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """A person sets their reactions (emoji list; [] removes). Returns (old, new), or None
        when nothing changed (then Telegram sends no update)."""
        if stored.deleted:
            raise ClientError("that message was deleted", status=404)
        if not isinstance(raw, list):
            raise ClientError('"emoji" must be a list of reaction emoji (may be empty)')
        if len(raw) > CLIENT_MAX_REACTIONS:
            raise ClientError(f"at most {CLIENT_MAX_REACTIONS} reactions per person (Premium)")
        new: list[dict[str, Any]] = []
        for item in raw:
            emoji = canonical_emoji(item)
            if emoji is None:
                raise ClientError(f"{item!r} is not one of Telegram's reaction emoji")
            reaction = {"type": "emoji", "emoji": emoji}
            if reaction not in new:
                new.append(reaction)
        old = stored.reactions.get(user_id, [])
        if old == new:
            return None
        if new:
            stored.reactions[user_id] = new
        else:
            stored.reactions.pop(user_id, None)
        self.outbox.notify()
        return old, new

    def reaction_update(
        self,
        chat: Conversation,
        stored: StoredMessage,
        user: ClientProfile,
        old: list[dict[str, Any]],
        new: list[dict[str, Any]],
    ) -> None:
        """``message_reaction`` - queued only if the bot's allowed_updates lists it."""
        self.push_update(
            "message_reaction",
            {
                "chat": chat.as_chat(),
                "message_id": stored.message_id,
                "user": user.as_user(),
                "date": self.now(),
                "old_reaction": old,
                "new_reaction": new,
            },
        )

    def bot_member(self, status: str) -> dict[str, Any]:
        """The bot as a ``ChatMember`` of the given status."""
        member: dict[str, Any] = {"user": self.bot.as_user(), "status": status}
        if status == "administrator":
            member.update(ADMINISTRATOR_RIGHTS)
        elif status == "kicked":
            member["until_date"] = 0  # ChatMemberBanned: 0 means banned forever
        return member

    # ------------------------------------------------------------------ files

    def store_file(
        self,
        data: bytes,
        kind: str,
        file_name: str | None = None,
        mime_type: str | None = None,
        *,
        unique_salt: str = "",
    ) -> StoredFile:
        """Store file content under a new file_id.

        ``file_unique_id`` is derived from the content, so the same file sent twice keeps one
        unique id, as Telegram promises ("supposed to be the same over time and for different
        bots").
        """
        spec = media.FILE_KINDS[kind]
        index = len(self.files_by_id)
        digest = hashlib.sha256(kind.encode() + unique_salt.encode() + data).digest()
        unique_prefix = "AQAD" if kind == "photo" else "AgAD"
        stored = StoredFile(
            file_id=spec.file_id_prefix + random_id(48),
            file_unique_id=unique_prefix + base64.urlsafe_b64encode(digest[:9]).decode("ascii"),
            file_path=f"{spec.directory}/file_{index}{media.extension_of(file_name, spec)}",
            content=data,
            kind=kind,
            mime_type=mime_type,
        )
        self.files_by_id[stored.file_id] = stored
        self.files_by_path[stored.file_path] = stored
        return stored

    def build_media(self, kind: str, data: bytes, details: dict[str, Any]) -> dict[str, Any]:
        """The ``Message`` fields for a freshly uploaded file of ``kind``.

        ``details`` holds what the sender said about it (file_name, mime_type, width, height,
        duration, length, performer, title, emoji); raises media.MediaError like sendX would.
        Files are stored only once everything is valid.
        """
        file_name = details.get("file_name")
        mime_type = details.get("mime_type") or media.guess_mime(file_name)
        spec = media.FILE_KINDS[kind]
        if kind == "animation" and mime_type == "image/gif":
            # Telegram converts GIF animations to silent MPEG-4 videos.
            mime_type = "video/mp4"
            file_name = f"{file_name}.mp4" if file_name else None
        if kind == "photo":
            sizes = media.photo_sizes(data)
            photo: list[dict[str, Any]] = []
            for size in sizes:
                stored = self.store_file(
                    size.content,
                    "photo",
                    "photo.jpg",
                    "image/jpeg",
                    unique_salt=f"{size.width}x{size.height}",
                )
                photo.append(
                    {
                        "file_id": stored.file_id,
                        "file_unique_id": stored.file_unique_id,
                        "file_size": len(size.content),
                        "width": size.width,
                        "height": size.height,
                    }
                )
            for size_json in photo:
                self.files_by_id[size_json["file_id"]].media = photo
            return {"photo": photo}
        shape: dict[str, Any] = {}
        if kind == "sticker":
            shape = media.sticker_shape(data, file_name, mime_type)
        stored = self.store_file(data, kind, file_name, mime_type or spec.default_mime)
        obj: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        number = _details_int
        if kind in ("video", "animation"):
            obj["width"] = number(details, "width")
            obj["height"] = number(details, "height")
            obj["duration"] = number(details, "duration")
        elif kind == "audio":
            obj["duration"] = number(details, "duration")
            for name in ("performer", "title"):
                if details.get(name):
                    obj[name] = details[name]
        elif kind == "voice":
            obj["duration"] = number(details, "duration")
        elif kind == "video_note":
            obj["length"] = number(details, "length") or number(details, "width")
            obj["duration"] = number(details, "duration")
        elif kind == "sticker":
            obj["type"] = "regular"
            obj.update(shape)
            if details.get("emoji"):
                obj["emoji"] = details["emoji"]
        if file_name and kind in ("document", "video", "animation", "audio"):
            obj["file_name"] = file_name
        effective_mime = mime_type or spec.default_mime
        if effective_mime and kind in ("document", "video", "animation", "audio", "voice"):
            obj["mime_type"] = effective_mime
        obj["file_size"] = len(data)
        stored.media = obj
        content: dict[str, Any] = {kind: obj}
        if kind == "animation":
            # "For backward compatibility, when this field is set, the document field will also
            # be set" - with the same file.
            document = {
                key: obj[key]
                for key in ("file_id", "file_unique_id", "file_name", "mime_type", "file_size")
                if key in obj
            }
            content = {"animation": obj, "document": document}
        return content

    def reuse_media(self, kind: str, file_id: str) -> dict[str, Any]:
        """The ``Message`` fields for sending an existing file_id as ``kind`` again."""
        stored = self.files_by_id.get(file_id)
        if stored is None or stored.media is None:
            raise media.MediaError("wrong file identifier/HTTP URL specified")
        if stored.kind != kind:
            raise media.MediaError(
                f"can't use file of type {media.TYPE_NAMES[stored.kind]} as {media.TYPE_NAMES[kind]}"
            )
        obj = copy.deepcopy(stored.media)
        if kind == "animation":
            document = {
                key: obj[key]
                for key in ("file_id", "file_unique_id", "file_name", "mime_type", "file_size")
                if key in obj
            }
            return {"animation": obj, "document": document}
        return {kind: obj}

    # ------------------------------------------------------------------ summary

    def summary(self) -> dict[str, Any]:
        return {
            "bot": self.bot.as_user(),
            "now": self.now(),
            "pending_update_count": self.updates.pending_count,
            "next_update_id": self.updates.next_update_id,
            "confirmed_retained": self.updates.history_count,
            "allowed_updates": sorted(self.updates.allowed),
            "long_poll_active": self.updates.polling,
            "webhook_url": self.webhook_url,
            "files": len(self.files_by_id),
            "chats": [
                {
                    **chat.client.as_chat(),
                    "blocked": chat.blocked,
                    "messages_from_client": chat.from_client_count,
                    "messages_from_bot": chat.sent_by_bot,
                }
                for chat in self.chats.values()
            ],
            "groups": [
                {
                    **group.as_chat(),
                    "bot_status": group.bot_status,
                    "members": sorted(group.members),
                    "migrated_to_chat_id": group.migrated_to,
                }
                for group in self.groups.values()
            ],
            "business_connections": [
                {**connection.as_json(), "chats": sorted(connection.chats)}
                for connection in self.business.values()
            ],
        }


# The rights a group's administrator bot is shown with (ChatMemberAdministrator's required
# fields, all granted except promoting others and staying anonymous).
ADMINISTRATOR_RIGHTS: dict[str, bool] = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": True,
    "can_restrict_members": True,
    "can_promote_members": False,
    "can_change_info": True,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
    "can_pin_messages": True,
}


def _details_int(details: dict[str, Any], name: str) -> int:
    value = details.get(name)
    if value is None or value == "":
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise media.MediaError(f'parameter "{name}" must be an integer') from None
    return max(0, number)


def client_entities(text: str, raw: Any, name: str) -> list[dict[str, Any]]:
    """Validate entities a client attached: known types, UTF-16 offsets inside the text."""
    if raw is None:
        return []
    try:
        entities = formatting.normalize_entities(raw)
    except formatting.EntityParseError as exc:
        raise ClientError(f'"{name}": {exc}') from None
    size = formatting.utf16_len(text)
    for index, entity in enumerate(entities):
        if entity["length"] == 0 or entity["offset"] + entity["length"] > size:
            raise ClientError(
                f'"{name}": entity {index} must cover 1 or more UTF-16 code units inside the text'
            )
    return entities


def without_reply(message: dict[str, Any]) -> dict[str, Any]:
    """Telegram nests ``reply_to_message`` only one level deep."""
    return copy.deepcopy({k: v for k, v in message.items() if k != "reply_to_message"})
