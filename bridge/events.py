"""The network-neutral vocabulary between connectors and the core.

A connector translates its network's updates into :class:`RemoteEvent` at its edge and turns a
:class:`Delivery` into its network's send call; nothing else in the core knows a network's shapes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RemoteEventKind(enum.Enum):
    MESSAGE = "message"
    #: Something the client sent that the bridge cannot carry yet (a sticker, a poll...). The
    #: core says so in the room rather than dropping it without a trace.
    UNSUPPORTED = "unsupported"


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


@dataclass(frozen=True)
class RemoteEvent:
    kind: RemoteEventKind
    chat: ChatRef
    sender: RemoteUser
    #: The network's id of the message; with ``chat`` it identifies the message for dedupe.
    message_id: str
    timestamp_ms: int
    text: str = ""
    #: For UNSUPPORTED: what it was, in words ("a sticker").
    description: str = ""
    #: The chat's own title as the network shows it (used to name the portal).
    chat_title: str = ""


@dataclass(frozen=True)
class Delivery:
    """An employee's message on its way to a client."""

    chat: ChatRef
    room_id: str
    event_id: str
    #: Who is answering, as the client should see it (already rendered from the template).
    signature: str
    body: str


@dataclass(frozen=True)
class DeliveryReceipt:
    """What the network answered: the remote ids the delivery became."""

    message_ids: tuple[str, ...]
