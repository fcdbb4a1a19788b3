"""What the LINE Platform knows: the bot, its users and their friendship, chats and their
messages, reply and quote tokens, retry keys and the monthly quota.

Friendship follows LINE's documented rules, because push, profile and loading answers depend on
it (reference: "Conditions for sending push message", "Get profile"):

- ``none``: never added the account. Can still message it ("Users can also send a message to
  your LINE Official Account which they haven't added as a friend"); then, for 7 days, pushes
  reach them and their profile can be read.
- ``friend``: added it (follow event ``isUnblocked: false``) or unblocked it (``true``).
- ``blocked``: blocked it (unfollow event). Pushes answer 200 but are not delivered nor counted;
  the profile answers 404.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import ids
from sandbox.changes import Changes

from .clock import SandboxClock

PUSH_WINDOW = 7 * 24 * 3600.0  # "within 7 days in the one-to-one chat"
UNSEND_WINDOW = 24 * 3600.0  # "Users can unsend a sent message within 24 hours of sending it."


class ClientError(Exception):
    """A refused control-API call: ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BotIdentity:
    user_id: str
    basic_id: str
    display_name: str
    picture_url: str | None
    chat_mode: str  # "chat" (chat on) or "bot" (chat off)

    @property
    def mark_as_read_mode(self) -> str:
        # "If the chat is set to "Off", auto is returned. If the chat is set to "On", manual is returned."
        return "manual" if self.chat_mode == "chat" else "auto"


@dataclass
class User:
    user_id: str
    alias: str | None
    display_name: str
    picture_url: str | None = None
    status_message: str | None = None
    language: str | None = None
    relation: str = "none"  # "none" | "friend" | "blocked"
    last_message_at: float | None = None  # last message in the one-to-one chat
    screen_open: bool = True  # is the chat with the account on screen (loading animations show)

    def profile(self) -> dict[str, Any]:
        """``GET /v2/bot/profile/{userId}``: optional fields are left out when unset."""
        body: dict[str, Any] = {"displayName": self.display_name, "userId": self.user_id}
        if self.language:
            body["language"] = self.language
        if self.picture_url:
            body["pictureUrl"] = self.picture_url
        if self.status_message:
            body["statusMessage"] = self.status_message
        return body

    def member_profile(self) -> dict[str, Any]:
        body: dict[str, Any] = {"displayName": self.display_name, "userId": self.user_id}
        if self.picture_url:
            body["pictureUrl"] = self.picture_url
        return body


@dataclass
class MediaFetch:
    """How one URL of a message the account sent fared when the client fetched it."""

    role: str  # "original" or "preview"
    url: str
    state: str = "pending"  # "pending" | "fetched" | "failed"
    status: int | None = None
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    problem: str | None = None  # why the client cannot show it (None when it can)
    data: bytes | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "status": self.status,
            "contentType": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "problem": self.problem,
        }


@dataclass
class StoredMessage:
    seq: int
    id: str
    chat_id: str
    sender: str  # "account" or the user id of the client who sent it
    type: str
    content: dict[str, Any]  # the webhook message object (client) or the sent message object (account)
    timestamp: int  # ms
    quote_token: str | None = None
    via: str | None = None  # "push" | "reply" (account messages)
    delivered: bool = True
    notification_disabled: bool = False
    quoted_id: str | None = None  # the message a quote token or a client quote pointed at
    request_id: str | None = None
    media: list[MediaFetch] = field(default_factory=list)
    data: bytes | None = None  # content of client media (Get content)
    mime_type: str | None = None
    preview: bytes | None = None
    content_deleted: bool = False
    unsent: bool = False

    @property
    def from_account(self) -> bool:
        return self.sender == "account"

    @property
    def media_pending(self) -> bool:
        return any(m.state == "pending" for m in self.media)


@dataclass
class Loading:
    seconds: int
    requested_at: float
    shown: bool
    reason: str | None = None


@dataclass
class Chat:
    chat_id: str
    kind: str  # "user" | "group" | "room"
    name: str | None = None
    picture_url: str | None = None
    members: list[str] = field(default_factory=list)
    bot_member: bool = True
    pending_join: bool = False  # rooms: the join event waits for the room's next event
    messages: list[StoredMessage] = field(default_factory=list)
    loading: Loading | None = None
    loading_log: list[dict[str, Any]] = field(default_factory=list)

    def source(self, user_id: str | None = None) -> dict[str, Any]:
        """The webhook ``source`` object of an event in this chat."""
        if self.kind == "user":
            return {"type": "user", "userId": self.chat_id}
        key = "groupId" if self.kind == "group" else "roomId"
        source: dict[str, Any] = {"type": self.kind, key: self.chat_id}
        if user_id is not None:
            source["userId"] = user_id
        return source

    def after(self, marker: str | None) -> list[StoredMessage]:
        """Messages after ``marker`` (a message id or a seq number); all when None."""
        if not marker:
            return list(self.messages)
        if marker.isdigit() and len(marker) < 12:
            seq = int(marker)
        else:
            found = next((m for m in self.messages if m.id == marker), None)
            if found is None:
                raise ClientError(f"no message {marker!r} in this chat", 404)
            seq = found.seq
        return [m for m in self.messages if m.seq > seq]


@dataclass
class ReplyToken:
    token: str
    chat_id: str
    event_time: float
    webhook_event_id: str
    sent_at: float | None = None  # when the webhook carrying it was last sent
    redelivered: bool = False
    used: bool = False


@dataclass
class AcceptedRetry:
    accepted_at: float
    request_id: str
    sent_messages: list[dict[str, str]]


class SandboxState:
    def __init__(self, bot: BotIdentity, clock: SandboxClock, quota: int | None) -> None:
        self.bot = bot
        self.clock = clock
        self.changes = Changes()
        self.users: dict[str, User] = {}
        self.chats: dict[str, Chat] = {}
        self.messages: dict[str, StoredMessage] = {}
        self.quote_tokens: dict[str, StoredMessage] = {}
        self.reply_tokens: dict[str, ReplyToken] = {}
        self.retry_keys: dict[str, AcceptedRetry] = {}
        self.quota_limit = quota
        self.usage = 0
        self._seq = 0

    def now(self) -> float:
        return self.clock.now()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # ------------------------------------------------------------------ users

    def resolve_user(self, key: str) -> str:
        user_id = ids.user_id_for(key)
        if user_id is None:
            raise ClientError(
                f"{key!r} is neither a LINE user id (U + 32 hex digits) nor an alias ([A-Za-z0-9_.-]{{1,64}})"
            )
        if user_id == self.bot.user_id:
            raise ClientError("that is the bot's own user id")
        return user_id

    def user(self, key: str, profile: dict[str, Any] | None = None) -> User:
        """The user ``key`` names, created (and its profile updated) from ``profile`` fields."""
        user_id = self.resolve_user(key)
        user = self.users.get(user_id)
        fields = profile or {}
        if user is None:
            alias = None if ids.USER_ID.fullmatch(key) else key
            user = User(user_id, alias, display_name=alias or "LINE user")
            self.users[user_id] = user
        for name, attr in (
            ("displayName", "display_name"),
            ("pictureUrl", "picture_url"),
            ("statusMessage", "status_message"),
            ("language", "language"),
        ):
            if name in fields:
                value = fields[name]
                if value is not None and not isinstance(value, str):
                    raise ClientError(f'"{name}" must be a string')
                if name == "displayName" and not value:
                    raise ClientError('"displayName" must not be empty')
                setattr(user, attr, value)
        return user

    def existing_user(self, key: str) -> User:
        user = self.users.get(self.resolve_user(key))
        if user is None:
            raise ClientError(f"no user {key!r} yet (follow or send a message first)", 404)
        return user

    def can_push(self, user: User) -> bool:
        """Whether a push reaches ``user`` (else LINE answers 200 and drops it)."""
        if user.relation == "friend":
            return True
        if user.relation == "blocked" or user.last_message_at is None:
            return False
        return self.now() - user.last_message_at <= PUSH_WINDOW

    def profile_visible(self, user: User) -> bool:
        """Friends, and non-friends who sent a message (never users who blocked the account)."""
        return user.relation == "friend" or (user.relation == "none" and user.last_message_at is not None)

    # ------------------------------------------------------------------ chats

    def user_chat(self, user: User) -> Chat:
        chat = self.chats.get(user.user_id)
        if chat is None:
            chat = self.chats[user.user_id] = Chat(user.user_id, "user", members=[user.user_id])
        return chat

    def group(self, chat_id: str) -> Chat:
        chat = self.chats.get(chat_id)
        if chat is None or chat.kind == "user":
            raise ClientError(f"no group or room {chat_id!r}", 404)
        return chat

    def add_message(self, message: StoredMessage) -> StoredMessage:
        self.chats[message.chat_id].messages.append(message)
        self.messages[message.id] = message
        if message.quote_token:
            self.quote_tokens[message.quote_token] = message
        self.changes.notify()
        return message

    # ------------------------------------------------------------------ quota

    def quota(self) -> dict[str, Any]:
        if self.quota_limit is None:
            return {"type": "none"}
        return {"type": "limited", "value": self.quota_limit}

    def summary(self) -> dict[str, Any]:
        return {
            "now": self.now(),
            "clock_offset_seconds": self.clock.offset,
            "bot": {"userId": self.bot.user_id, "basicId": self.bot.basic_id},
            "quota": self.quota(),
            "totalUsage": self.usage,
            "users": [
                {
                    "userId": u.user_id,
                    "alias": u.alias,
                    "displayName": u.display_name,
                    "relation": u.relation,
                    "canPush": self.can_push(u),
                }
                for u in self.users.values()
            ],
            "chats": [
                {
                    "chatId": c.chat_id,
                    "kind": c.kind,
                    "members": list(c.members),
                    "botMember": c.bot_member,
                    "messages": len(c.messages),
                }
                for c in self.chats.values()
            ],
            "retryKeys": len(self.retry_keys),
        }
