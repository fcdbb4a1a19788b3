"""What every network connector offers the core, and the errors it may raise."""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from bridge.events import Delivery, DeliveryReceipt, RemoteEvent

#: Called by the core once an inbound event's message is in its room, before its bookkeeping is
#: committed: the chat's next event may be handled from then on (its send cannot overtake).
OnSent = Callable[[], None]


class InboundSink(Protocol):
    """The core's entry point for inbound events. It returns only once the event is committed on
    the Matrix side, so a connector acknowledges its network (offset, webhook answer) after it
    returns. ``on_sent`` (optional) lets a connector start the chat's next event earlier."""

    def __call__(self, event: RemoteEvent, *, on_sent: OnSent | None = None) -> Awaitable[None]: ...


class DeliveryError(Exception):
    """A send failed. ``permanent`` failures are never retried (blocked, chat gone)."""

    def __init__(self, reason: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


class MediaUnavailable(Exception):
    """Raised by a RemoteMedia's ``fetch`` when the network will never hand the file over (it
    expired, was deleted): the room gets a notice instead of the file. Any other exception is
    temporary and the event is retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connector(Protocol):
    #: Short network name used in ids and state keys, e.g. "telegram".
    network: str
    #: Shown to people, e.g. "Telegram".
    display_name: str

    async def start(self, sink: InboundSink) -> None:
        """Connect and begin handing inbound events to ``sink``."""

    async def stop(self) -> None:
        """Stop receiving; return once no inbound handling is in progress."""

    async def send(self, delivery: Delivery) -> DeliveryReceipt:
        """Send one delivery; raise DeliveryError on failure."""

    async def find_delivered(self, delivery: Delivery, after_remote_id: int, known: set[int]) -> DeliveryReceipt | None:
        """After a crash mid-send: the remote messages this delivery already became (ids above
        ``after_remote_id`` and not in ``known``, the ids the message map has), or None if it
        did not arrive or the network cannot tell."""
