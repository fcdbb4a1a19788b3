"""How a network describes itself to the core: one :class:`NetworkSpec` per package.

The core (config, logging, ghosts, the policy, the pipelines) loops over the registered specs
instead of naming networks, so a network is added by its own package and one line in
``bridge.networks``. A spec imports no network library: ``build`` does, when the network is
actually switched on, so checking a config never loads python-telegram-bot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from bridge.events import DeliveryKind

if TYPE_CHECKING:
    from bridge.events import ChatRef, Delivery
    from bridge.networks.base import Connector
    from policies.reader import ConfigReader

#: The upload limit of a network that states none (the Bot API's own, 50 MB).
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Capabilities:
    """What the network can do, read by the core before it hands a delivery over: a request the
    network cannot carry is explained in the room without a round trip, and the core never has
    to probe a connector for an attribute."""

    #: The largest file the network takes; a larger homeserver file is refused before download.
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    #: Pre-approved message templates (``DeliveryKind.TEMPLATE``); without, a template command
    #: is refused in the core.
    templates: bool = False
    #: How long the network shows "typing…" after one signal, so the core repeats it a little
    #: sooner while an employee types; None: typing is not shown to clients.
    typing_refresh_s: float | None = None
    #: Whether ``find_delivered`` can tell that a send interrupted by a crash arrived (the core
    #: then asks ``checkpoint`` before every message); without, such a send is repeated (a
    #: possible duplicate the operator is told about in the docs).
    finds_delivered: bool = False
    #: Seconds after sending during which the company may edit / delete its message; 0: never,
    #: None: no limit.
    edit_window_s: float | None = None
    delete_window_s: float | None = None
    #: How long the network holds what the bridge has not received, for the status room's
    #: recovery notices, e.g. "it keeps undelivered updates for 24 hours".
    keeps_undelivered: str = ""

    def refusal(self, delivery: Delivery, network_name: str, now: float) -> str | None:
        """Why the network cannot carry ``delivery`` (a sentence for the employee), or None.
        Asked before the send, so the employee learns it at once and no connector has to."""
        kind = delivery.kind
        if kind is DeliveryKind.TEMPLATE and not self.templates:
            return f"{network_name} has no message templates; write the message itself"
        if kind is DeliveryKind.EDIT:
            return _outside(self.edit_window_s, "edit", network_name, delivery, now)
        if kind is DeliveryKind.DELETE:
            return _outside(self.delete_window_s, "delete", network_name, delivery, now)
        return None


def _outside(
    window_s: float | None, verb: str, network_name: str, delivery: Delivery, now: float
) -> str | None:
    if window_s is None:
        return None
    if window_s == 0:
        sees = "the original" if verb == "edit" else "it"
        return f"{network_name} does not let a business {verb} a sent message; the client still sees {sees}"
    sent_ms = delivery.target_timestamp_ms
    if sent_ms and now - sent_ms / 1000 > window_s:
        hours = round(window_s / 3600)
        return (
            f"{network_name} lets a business {verb} its messages only within {hours} hours; "
            "the client still sees it"
        )
    return None


@dataclass(frozen=True)
class ConfigContext:
    """What a network's config parser may need from the rest of the file."""

    #: ``appservice.port``: a network's own listener must not take it.
    appservice_port: int | None
    #: The config file's folder: relative paths are relative to it.
    base: Path


#: When the client last wrote in a chat (ms), from the record: windows such as WhatsApp's 24
#: hours survive restarts.
LastInbound = Callable[["ChatRef"], Awaitable["int | None"]]


@dataclass(frozen=True)
class MappedIds:
    """The remote message ids the record holds in a chat, for a connector that settles a crash
    by finding what it sent after a checkpoint (see ``Connector.checkpoint``). The core treats
    remote ids as opaque text; what a number means is the connector's business."""

    #: The highest id that is a decimal number (0: none), computed by the database: it is asked
    #: before every send, and a busy chat maps thousands of messages.
    highest_numeric: Callable[["ChatRef"], Awaitable[int]]
    #: Every id mapped in the chat, as the network gave it.
    of_chat: Callable[["ChatRef"], Awaitable[set[str]]]


@dataclass(frozen=True)
class BuildContext:
    """What the core offers a connector it builds."""

    last_inbound: LastInbound
    mapped_ids: MappedIds


@dataclass(frozen=True)
class NetworkSpec:
    """One network, as the core sees it before anything is started."""

    #: Short name used in ids, ghost user ids, state keys and ``networks.<name>`` in the config.
    name: str
    #: Shown to people, e.g. "Telegram".
    display_name: str
    #: Reads ``networks.<name>`` with the shared reader (problems name their key path); returns
    #: the network's typed config, or None when the network is off. Called for every registered
    #: network, whether or not its section is present, so a network may be on by default.
    parse_config: Callable[[ConfigReader, ConfigContext], Any | None]
    #: The connector for a parsed config; imports the network's library.
    build: Callable[[Any, BuildContext], Connector]
    capabilities: Capabilities
    #: The secrets in a parsed config, for the log scrubber.
    secrets: Callable[[Any], tuple[str, ...]] = lambda config: ()
    #: Loggers of the network's library, kept at WARNING like the core's HTTP libraries.
    library_loggers: tuple[str, ...] = ()
    #: The library modules ``build`` imports and the extra that installs them, e.g.
    #: ``(("telegram",), "telegram")``: a switched-on network without them is a config problem
    #: naming the install command, not an ImportError at start.
    requires: tuple[tuple[str, ...], str] = ((), "")
    #: Whether a chat id names a group (several clients) rather than one client: the policy's
    #: group rules (a senior in the room) read it for every outbound decision, so it is a pure
    #: function of the opaque id, which only the network knows how to read.
    is_group_chat: Callable[[str], bool] = lambda chat_id: False

    @property
    def config_path(self) -> str:
        """Where its section lives in config.yaml."""
        return f"networks.{self.name}"
