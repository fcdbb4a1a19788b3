"""What happened, for the systems outside: one place every pipeline reports its events to.

The bridge's parts say what happened (a conversation created, a message bridged or denied, an
assignment, a reminder step) by calling :meth:`Notifier.emit`; sinks registered at start-up (the
outgoing webhooks' durable queue, the metrics) take it from there. An event has an id of its
own, made once, so every receiver can deduplicate redeliveries.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

log = logging.getLogger("houseline.notify")


@dataclass(frozen=True)
class HouseEvent:
    #: One of bridge.integrations_config.WEBHOOK_EVENTS.
    type: str
    #: The portal it concerns ("" for none); receivers get events of one portal in order.
    room_id: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    at_ms: int = field(default_factory=lambda: int(time.time() * 1000))


Sink = Callable[[HouseEvent], Awaitable[None]]


class Notifier:
    def __init__(self) -> None:
        self.sinks: list[Sink] = []

    async def emit(self, type: str, room_id: str, **data: Any) -> HouseEvent:
        event = HouseEvent(type, room_id, data)
        for sink in self.sinks:
            # A failing sink must not undo what already happened; its own queue retries.
            try:
                await sink(event)
            except Exception:
                log.exception("event=notify_sink_failed type=%s room=%s", type, room_id)
        return event
