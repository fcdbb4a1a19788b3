"""The emulated Telegram world of one bot: its identity, the private chats clients opened with it,
the files they sent, and the updates waiting for the bot.

Kept free of HTTP so the Bot API handlers and the client control API share one model, and the
rules ("a chat exists once the client has written", "chat id = user id") live in one place.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import formatting
from .updates import UpdateQueue

MAX_USER_ID = 2**52  # Telegram user ids fit in 52 bits
USERNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{4,31}")
RETAINED_MESSAGES_PER_CHAT = 10_000
MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024  # getFile refuses bigger files
CHAT_ACTION_SECONDS = 5.0
MAX_CAPTION_LENGTH = 1024  # how long a client shows "typing..." after sendChatAction


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
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
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
class PrivateChat:
    """The private chat between one client and the bot; its id is the client's user id."""

    client: ClientProfile
    blocked: bool = False
    next_message_id: int = 1
    messages: OrderedDict[int, dict[str, Any]] = field(default_factory=OrderedDict)
    from_bot: list[dict[str, Any]] = field(default_factory=list)
    from_client_count: int = 0
    action: ChatAction | None = None

    @property
    def id(self) -> int:
        return self.client.id

    def allocate_message_id(self) -> int:
        """Message ids are per chat and shared by both directions, as in a private chat."""
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id

    def remember(self, message: dict[str, Any]) -> None:
        self.messages[message["message_id"]] = message
        while len(self.messages) > RETAINED_MESSAGES_PER_CHAT:
            self.messages.popitem(last=False)


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    content: bytes

    def as_file(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.content),
            "file_path": self.file_path,
        }


class Notifier:
    """Lets control API callers wait for "the bot sent something" without polling."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return predicate()
            finally:
                self._waiters.discard(waiter)
        return True


def _random_id(length: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(length)).decode("ascii").rstrip("=")


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
        if first_update_id is None:
            first_update_id = 100_000_000 + secrets.randbelow(800_000_000)
        self.updates = UpdateQueue(first_update_id)
        self.chats: dict[int, PrivateChat] = {}
        self.files_by_id: dict[str, StoredFile] = {}
        self.files_by_path: dict[str, StoredFile] = {}
        self.webhook_url = ""
        self.outbox = Notifier()

    def now(self) -> int:
        return int(self.clock())

    # ------------------------------------------------------------------ client side

    def client_profile(self, user_id: int, fields: dict[str, Any]) -> ClientProfile:
        """Create or update the client's profile from a control request's optional fields."""
        if user_id <= 0 or user_id >= MAX_USER_ID:
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
        chat = self.chats.get(user_id)
        if chat is None:
            if not first_name:
                raise ClientError('"first_name" is required the first time a client writes')
            profile = ClientProfile(user_id, first_name)
        else:
            profile = chat.client
            if first_name:
                profile.first_name = first_name
        for name in ("last_name", "username", "language_code"):
            if name in fields:
                setattr(profile, name, fields[name] or None)
        return profile

    def _open_chat(self, profile: ClientProfile) -> PrivateChat:
        chat = self.chats.get(profile.id)
        if chat is None:
            chat = PrivateChat(profile)
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
            reply_to = existing.messages.get(reply_to_message_id) if existing else None
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
            message["reply_to_message"] = without_reply(reply_to)
        message.update(content)
        chat.remember(message)
        chat.from_client_count += 1
        self.updates.push("message", message)
        return message

    def client_text(self, text: Any) -> dict[str, Any]:
        """The text part of a client message, with the entities Telegram would detect."""
        if not isinstance(text, str):
            raise ClientError('"text" is required and must be a string')
        try:
            formatted = formatting.finalize(text, [])
        except formatting.TextEmpty:
            raise ClientError('"text" must not be empty') from None
        except formatting.TextTooLong:
            raise ClientError('"text" must be at most 4096 characters') from None
        content: dict[str, Any] = {"text": formatted.text}
        if formatted.entities:
            content["entities"] = formatted.entities
        return content

    def client_document(
        self, data: bytes, file_name: str, mime_type: str | None, caption: str | None
    ) -> dict[str, Any]:
        """The document part of a client message; the file is stored only once all is valid."""
        content: dict[str, Any] = {}
        if caption and caption.strip():
            if len(caption.strip()) > MAX_CAPTION_LENGTH:
                raise ClientError('"caption" must be at most 1024 characters')
            formatted = formatting.finalize(caption, [])
            content["caption"] = formatted.text
            if formatted.entities:
                content["caption_entities"] = formatted.entities
        stored = self.store_file(data, "documents", file_name)
        document: dict[str, Any] = {
            "file_name": file_name,
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(data),
        }
        if mime_type:
            document["mime_type"] = mime_type
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
        old, new = ("member", "kicked") if blocked else ("kicked", "member")
        new_member: dict[str, Any] = {"user": self.bot.as_user(), "status": new}
        if blocked:
            new_member["until_date"] = 0
        old_member: dict[str, Any] = {"user": self.bot.as_user(), "status": old}
        if not blocked:
            old_member["until_date"] = 0
        self.updates.push(
            "my_chat_member",
            {
                "chat": chat.client.as_chat(),
                "from": chat.client.as_user(),
                "date": self.now(),
                "old_chat_member": old_member,
                "new_chat_member": new_member,
            },
        )
        return True

    # ------------------------------------------------------------------ files

    def store_file(self, data: bytes, directory: str, file_name: str) -> StoredFile:
        suffix = ""
        if "." in file_name:
            suffix = "." + re.sub(r"[^A-Za-z0-9]", "", file_name.rsplit(".", 1)[1])[:10]
        index = len(self.files_by_id)
        stored = StoredFile(
            file_id="BQACAgIAAxkBAAI" + _random_id(48),
            file_unique_id="AgAD" + _random_id(9),
            file_path=f"{directory}/file_{index}{suffix if suffix != '.' else ''}",
            content=data,
        )
        self.files_by_id[stored.file_id] = stored
        self.files_by_path[stored.file_path] = stored
        return stored

    # ------------------------------------------------------------------ summary

    def summary(self) -> dict[str, Any]:
        return {
            "bot": self.bot.as_user(),
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
                    "messages_from_bot": len(chat.from_bot),
                }
                for chat in self.chats.values()
            ],
        }


def without_reply(message: dict[str, Any]) -> dict[str, Any]:
    """Telegram nests ``reply_to_message`` only one level deep."""
    return {key: value for key, value in message.items() if key != "reply_to_message"}
