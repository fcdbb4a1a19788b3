"""A network that exists only in the tests: clients are Python calls, sends are kept in a list.

It is registered from the test (``bridge.networks.register(SPEC)``) and then carried by the
unmodified core, which is the point: a network is its own package plus a registration.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Callable

from bridge.events import (
    ChatRef,
    Delivery,
    DeliveryReceipt,
    RemoteEvent,
    RemoteEventKind,
    RemoteUser,
    RichText,
)
from bridge.networks.base import InboundSink
from bridge.networks.spec import BuildContext, Capabilities, ConfigContext, NetworkSpec
from policies.reader import ConfigReader

NAME = "memory"
PREFIX = f"networks.{NAME}"

CAPABILITIES = Capabilities(
    max_upload_bytes=1024 * 1024,
    templates=False,
    typing_refresh_s=None,
    finds_delivered=False,
    edit_window_s=0,
    delete_window_s=0,
    keeps_undelivered="it keeps nothing",
)


@dataclass(frozen=True)
class MemoryConfig:
    #: The company account clients write to.
    account: str
    #: A secret, so the test can check the log scrubber learns it from the spec.
    token: str


def parse_memory(r: ConfigReader, context: ConfigContext) -> MemoryConfig | None:
    if not r.boolean(f"{PREFIX}.enabled", False):
        return None
    account = r.string(f"{PREFIX}.account")
    token = r.string(f"{PREFIX}.token")
    return MemoryConfig(account or "", token or "") if account and token else None


class MemoryConnector:
    network = NAME
    display_name = "Memory"
    capabilities = CAPABILITIES

    def __init__(self, config: MemoryConfig) -> None:
        self.config = config
        self.sent: list[Delivery] = []
        self._sink: InboundSink | None = None
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink

    async def stop(self) -> None:
        self._sink = None

    async def send(self, delivery: Delivery) -> DeliveryReceipt:
        async with self._changed:
            self.sent.append(delivery)
            self._changed.notify_all()
        return DeliveryReceipt((f"out-{next(self._ids)}",))

    async def checkpoint(self, chat: ChatRef) -> str:
        return ""

    async def find_delivered(self, delivery: Delivery, checkpoint: str) -> None:
        return None

    async def client_says(self, client_id: str, name: str, text: str) -> None:
        """A client writes to the company account; returns once the core committed it."""
        assert self._sink is not None, "the connector was not started"
        event = RemoteEvent(
            kind=RemoteEventKind.MESSAGE,
            chat=ChatRef(NAME, self.config.account, client_id),
            sender=RemoteUser(NAME, client_id, name),
            message_id=f"in-{next(self._ids)}",
            timestamp_ms=int(time.time() * 1000),
            text=RichText(text),
        )
        await self._sink(event)

    async def wait_for_send(self, matches: Callable[[Delivery], bool], timeout: float = 30) -> Delivery:
        """The first delivery handed to the network that ``matches``."""

        async def found() -> Delivery:
            async with self._changed:
                while True:
                    match = next((d for d in self.sent if matches(d)), None)
                    if match is not None:
                        return match
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(found(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no matching delivery within {timeout}s; sent: {self.sent}") from None


def _build(config: MemoryConfig, context: BuildContext) -> MemoryConnector:
    return MemoryConnector(config)


SPEC = NetworkSpec(
    name=NAME,
    display_name="Memory",
    parse_config=parse_memory,
    build=_build,
    capabilities=CAPABILITIES,
    secrets=lambda config: (config.token,),
)
