"""What the sandbox remembers: the business phone numbers, the clients (WhatsApp users), and
one chat per (business number, client) holding both directions of the conversation.

Messages are kept the way the two sides see them: a client's message holds the object its
webhook carried (so edits and views reuse it), a business message holds what the client's phone
shows. Both carry the bookkeeping the control API exposes (reactions, read marks, edits,
revocation, delivery status).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.changes import Changes

from .clock import SandboxClock

SERVICE_WINDOW_SECONDS = 24 * 3600  # Meta's customer service window
EDIT_WINDOW_SECONDS = 15 * 60  # users edit within 15 minutes (edit webhook reference)
REVOKE_WINDOW_SECONDS = 2 * 24 * 3600  # users revoke within two days (revoke webhook reference)
TYPING_INDICATOR_SECONDS = 25  # the indicator disappears after 25 s or at the next message

WA_ID_RE = re.compile(r"\d{5,15}")

Sender = Literal["client", "business"]


class ClientError(Exception):
    """A refused control-API request: ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SandboxNumber:
    """A business phone number registered on the WhatsApp Business Account."""

    phone_number_id: str
    display_phone_number: str
    verified_name: str

    @property
    def digits(self) -> str:
        """The display number as webhooks carry it in ``metadata`` and ``context.from``:
        digits only (Meta's examples show ``"15550783881"``)."""
        return re.sub(r"\D", "", self.display_phone_number)

    def describe(self, quality_rating: str = "GREEN") -> dict[str, Any]:
        return {
            "verified_name": self.verified_name,
            "display_phone_number": self.display_phone_number,
            "id": self.phone_number_id,
            "quality_rating": quality_rating,
            "code_verification_status": "VERIFIED",
            "platform_type": "CLOUD_API",
            "throughput": {"level": "STANDARD"},
        }


@dataclass
class Client:
    """A WhatsApp user: ``wa_id`` (digits) and the profile name webhooks carry."""

    wa_id: str
    name: str


@dataclass
class StoredMessage:
    id: str
    seq: int
    sender: Sender
    type: str
    timestamp: int
    content: dict[str, Any] | list[Any]  # the object under ``type``
    context_id: str | None = None
    context_from: str | None = None
    reactions: dict[str, str] = field(default_factory=dict)  # "business"/"client" -> emoji
    # business messages: accepted -> sent/delivered/read, or failed
    status: str = "received"
    errors: list[dict[str, Any]] = field(default_factory=list)
    read_by_business: bool = False
    revoked: bool = False
    edits: list[dict[str, Any]] = field(default_factory=list)
    media_id: str | None = None
    free_form: bool = True
    biz_opaque_callback_data: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # errors of unsupported inbound types

    @property
    def visible(self) -> bool:
        """Business messages appear on the phone (and in views) once processed."""
        return self.sender == "client" or self.status != "accepted"


@dataclass
class Chat:
    number: SandboxNumber
    client: Client
    messages: list[StoredMessage] = field(default_factory=list)
    by_id: dict[str, StoredMessage] = field(default_factory=dict)
    last_client_message_at: int | None = None
    typing_until: int | None = None
    conversation_id: str | None = None
    conversation_expires: int = 0

    def add(self, message: StoredMessage) -> StoredMessage:
        self.messages.append(message)
        self.by_id[message.id] = message
        return message

    @property
    def next_seq(self) -> int:
        return len(self.messages) + 1

    def window_open(self, now: int) -> bool:
        """Free-form messages are allowed within 24 hours of the client's last message."""
        return (
            self.last_client_message_at is not None
            and now - self.last_client_message_at < SERVICE_WINDOW_SECONDS
        )

    def after(self, marker: str | None) -> list[StoredMessage]:
        """Messages after ``marker``: a wamid of this chat, or a ``seq`` number."""
        if not marker:
            return list(self.messages)
        if marker.isdigit():
            return self.messages[int(marker) :]
        found = self.by_id.get(marker)
        if found is None:
            raise ClientError(f"after={marker!r} is neither a message id of this chat nor a seq")
        return self.messages[found.seq :]


class SandboxState:
    def __init__(self, numbers: list[SandboxNumber], waba_id: str, clock: SandboxClock | None = None) -> None:
        if not numbers:
            raise ValueError("the sandbox needs at least one SandboxNumber")
        self.numbers: dict[str, SandboxNumber] = {}
        for number in numbers:
            if number.phone_number_id in self.numbers:
                raise ValueError(f"duplicate phone_number_id {number.phone_number_id}")
            self.numbers[number.phone_number_id] = number
        self.waba_id = waba_id
        self.clock = clock or SandboxClock()
        self.clients: dict[str, Client] = {}
        self.chats: dict[tuple[str, str], Chat] = {}
        self.changes = Changes()
        #: phone_number_id -> the quality rating Graph reports (GREEN unless a test lowers it).
        self.quality: dict[str, str] = {}

    def describe_number(self, number: SandboxNumber) -> dict[str, Any]:
        return number.describe(self.quality.get(number.phone_number_id, "GREEN"))

    def now(self) -> int:
        return self.clock.now()

    # ------------------------------------------------------------------ lookups

    def number_for(self, to: str | None) -> SandboxNumber:
        """The business number a control request addresses (``to`` may be omitted when the
        sandbox has exactly one)."""
        if to in (None, ""):
            if len(self.numbers) == 1:
                return next(iter(self.numbers.values()))
            raise ClientError('"to" (a phone_number_id) is required: the sandbox has several numbers')
        number = self.numbers.get(str(to))
        if number is None:
            raise ClientError(f"no business number with phone_number_id {to!r}", 404)
        return number

    def check_name(self, wa_id: str, name: Any) -> None:
        """Refuse a client request whose profile name is missing (first time) or malformed."""
        check_wa_id(wa_id)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ClientError('"name" must be a non-empty string')
        client = self.clients.get(wa_id)
        if name is None and (client is None or not client.name):
            raise ClientError('"name" (the profile name) is required the first time a client writes')

    def client_named(self, wa_id: str, name: Any) -> Client:
        """The client ``wa_id``, created (``name`` required) or renamed."""
        self.check_name(wa_id, name)
        client = self.clients.get(wa_id)
        if client is None:
            client = self.clients[wa_id] = Client(wa_id, "")
        if name is not None:
            client.name = name.strip()
        return client

    def chat(self, number: SandboxNumber, client: Client) -> Chat:
        key = (number.phone_number_id, client.wa_id)
        chat = self.chats.get(key)
        if chat is None:
            chat = self.chats[key] = Chat(number, client)
        return chat

    def existing_chat(self, number: SandboxNumber, wa_id: str) -> Chat:
        check_wa_id(wa_id)
        chat = self.chats.get((number.phone_number_id, wa_id))
        if chat is None:
            raise ClientError("this client has no chat with that business number yet", 404)
        return chat

    def summary(self) -> dict[str, Any]:
        return {
            "now": self.now(),
            "clock_offset_seconds": self.clock.offset,
            "waba_id": self.waba_id,
            "numbers": [self.describe_number(n) for n in self.numbers.values()],
            "clients": {c.wa_id: c.name for c in self.clients.values()},
            "chats": [
                {
                    "phone_number_id": number_id,
                    "wa_id": wa_id,
                    "messages": len(chat.messages),
                    "window_open": chat.window_open(self.now()),
                }
                for (number_id, wa_id), chat in self.chats.items()
            ],
        }


def check_wa_id(wa_id: str) -> None:
    if not WA_ID_RE.fullmatch(wa_id):
        raise ClientError("a wa_id is 5 to 15 digits (the phone number without '+')")
