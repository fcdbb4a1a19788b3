"""What every network connector offers the core, and the errors it may raise."""

from __future__ import annotations

import abc
from typing import Awaitable, Callable, Protocol

from bridge.events import ChatRef, Delivery, DeliveryReceipt, RemoteEvent
from bridge.networks.spec import Capabilities

# Raised by a PictureSource; defined with the ghosts (puppets may not import the core).
from puppets.ghosts import PictureUnavailable as PictureUnavailable

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
    #: What the network can do (its spec's): the core checks these before handing a delivery over.
    capabilities: Capabilities

    async def start(self, sink: InboundSink) -> None:
        """Connect and begin handing inbound events to ``sink``."""

    async def stop(self) -> None:
        """Stop receiving; return once no inbound handling is in progress."""

    async def send(self, delivery: Delivery) -> DeliveryReceipt:
        """Send one delivery; raise DeliveryError on failure."""

    async def checkpoint(self, chat: ChatRef) -> str:
        """Where the chat stands just before a send, in a form only this connector reads back:
        after a crash, ``find_delivered`` gets it to look for what was delivered since. The core
        stores it as it is, asks only when ``capabilities.finds_delivered``, and never
        interprets it (nor any remote id)."""

    async def find_delivered(self, delivery: Delivery, checkpoint: str) -> DeliveryReceipt | None:
        """After a crash mid-send: the remote messages this delivery already became since
        ``checkpoint`` (what ``checkpoint`` returned before the send), or None if it did not
        arrive or the network cannot tell. Asked only for messages, and only when
        ``capabilities.finds_delivered``."""


class OutreachError(Exception):
    """An outreach cannot start as asked (a malformed number, an unknown company account or
    template); ``reason`` is a sentence for the employee who asked, ``rule`` the policy rule
    when the policy refused it."""

    def __init__(self, reason: str, rule: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rule = rule


class TemplateOutreach(abc.ABC):
    """A network where the company may write first, with a message template the network
    approved beforehand (WhatsApp). The core creates the portal and sends the template through
    the outbox like any employee message."""

    @abc.abstractmethod
    def outreach_chat(self, address: str, from_account: str | None) -> tuple[ChatRef, str]:
        """The conversation for a client ``address`` as an employee typed it (a phone number in
        any usual spelling) on the company account ``from_account`` (None: the only or first
        one), and a display name for the client; raises OutreachError naming what is wrong."""

    @abc.abstractmethod
    async def check_template(self, chat: ChatRef, name: str, language: str, params: tuple[str, ...]) -> None:
        """Raises OutreachError unless the account can send template ``name`` in ``language``
        ("" for the default) with these parameters: the employee is told before anything is
        created or queued."""


class InviteLinks(abc.ABC):
    """A network where a company account cannot write first (a Telegram bot): the employee
    hands the client a link carrying a one-time code, and the client's first message brings
    the code back (``RemoteEvent.invite_code``)."""

    #: Codes the network can carry in a link: the core makes them of this alphabet and length.
    invite_code_alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    invite_code_length: int = 32

    @abc.abstractmethod
    def invite_account(self) -> str:
        """The company account (``ChatRef.account``) whose conversations the links open."""

    @abc.abstractmethod
    def invite_link(self, code: str) -> str:
        """The link a client opens, e.g. ``https://t.me/<bot username>?start=<code>``."""


#: Told by a connector each time it tried to receive for one of its company accounts:
#: ``(network, account, ok, detail)``; ``ok`` False carries what went wrong. Called often (every
#: poll round), from the connector's own task: it must be cheap and must not raise.
CaptureListener = Callable[[str, str, bool, str], None]


class ReportsCapture(abc.ABC):
    """A connector that says whether it is still receiving: a poll round that came back, a
    webhook that arrived, or a failure. Capture health (bridge.health) turns these into the
    status room's notices and the ``houseline_capture_up`` metric; a silent gap in the record
    is the worst failure a recording bridge can have, so it must be noticed from outside."""

    @abc.abstractmethod
    def set_capture_listener(self, listener: CaptureListener) -> None:
        """Called once, before ``start``."""

    @abc.abstractmethod
    def capture_accounts(self) -> tuple[str, ...]:
        """The company accounts whose receiving this connector reports (valid after ``start``)."""

    def capture_label(self, account: str) -> str:
        """The account as the status room names it, e.g. "WhatsApp number +1 555 0100 (1001)"
        ("": the core's generic label)."""
        return ""

    async def probe_capture(self) -> None:
        """Asked now and then (every few minutes): a connector whose receiving cannot be seen
        from its own traffic checks with the network (e.g. Telegram's webhook info) and reports
        through the listener. Default: nothing to ask."""

    async def account_quality(self) -> dict[str, str]:
        """The network's quality rating per account where it keeps one (WhatsApp: GREEN,
        YELLOW, RED), asked with ``probe_capture``; an account it cannot tell is left out."""
        return {}


class PictureSource(abc.ABC):
    """A network whose users have profile pictures: ``RemoteUser.picture`` names one, and the
    core gives the client's ghost that picture as its avatar whenever the reference changes, so
    employees recognise who writes. The reference is opaque to the core."""

    @abc.abstractmethod
    async def fetch_picture(self, ref: str) -> tuple[bytes, str]:
        """The picture ``ref`` names: its bytes and mimetype. Raises PictureUnavailable (or any
        exception) when it cannot be had; the core then keeps the avatar and tries again later.
        The core bounds the call with a timeout of its own: a picture never holds up a message."""
