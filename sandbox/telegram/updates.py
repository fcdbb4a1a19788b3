"""The bot's update queue and its single long poll, with the official getUpdates semantics.

Unconfirmed updates stay until a getUpdates call confirms them with a higher ``offset``.
Confirmed ones are kept in a bounded history instead of being dropped, so the control API can
"un-confirm" them and emulate a bot that crashed after handling updates but before confirming
them - the case the bridge's idempotency has to survive.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

# Every update type of Bot API 9.x; the default subscription is all of them except these three.
ALL_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
DEFAULT_UPDATE_TYPES = ALL_UPDATE_TYPES - {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}

PollOutcome = Literal["update", "timeout", "conflict", "webhook", "closed"]


@dataclass(frozen=True)
class Update:
    update_id: int
    kind: str
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"update_id": self.update_id, self.kind: self.payload}


class UpdateQueue:
    def __init__(self, first_update_id: int, history_limit: int = 10_000) -> None:
        self._next_id = first_update_id
        self._pending: list[Update] = []
        self._history: deque[Update] = deque(maxlen=history_limit)
        self.allowed: frozenset[str] = DEFAULT_UPDATE_TYPES
        self._waiter: asyncio.Future[PollOutcome] | None = None
        self._closed = False
        self._pending_event: asyncio.Event | None = None  # wakes the webhook deliverer

    # ------------------------------------------------------------------ producing

    def push(self, kind: str, payload: dict[str, Any]) -> Update | None:
        """Queue an update, unless the bot's current ``allowed_updates`` excludes its type.

        Like Telegram, filtering happens when the update is created: changing
        ``allowed_updates`` later does not touch updates already queued.
        """
        if kind not in self.allowed:
            return None
        update = Update(self._next_id, kind, payload)
        self._next_id += 1
        self._pending.append(update)
        self._wake("update")
        return update

    # ------------------------------------------------------------------ consuming

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def next_update_id(self) -> int:
        return self._next_id

    @property
    def history_count(self) -> int:
        return len(self._history)

    @property
    def polling(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def set_allowed(self, names: list[str]) -> None:
        """``[]`` means the default set; unknown names are ignored, as by the official server."""
        wanted = frozenset(name for name in names if name in ALL_UPDATE_TYPES)
        self.allowed = wanted or DEFAULT_UPDATE_TYPES

    def confirm_below(self, offset: int) -> None:
        """Confirm (and move to history) every pending update with ``update_id < offset``."""
        keep: list[Update] = []
        for update in self._pending:
            if update.update_id < offset:
                self._history.append(update)
            else:
                keep.append(update)
        self._pending = keep

    def keep_last(self, count: int) -> None:
        """Negative offset: keep the last ``count`` pending updates, forget the rest."""
        cut = max(0, len(self._pending) - count)
        self._history.extend(self._pending[:cut])
        self._pending = self._pending[cut:]

    def peek(self, limit: int) -> list[Update]:
        return self._pending[:limit]

    def drop_pending(self) -> int:
        dropped = len(self._pending)
        self._pending = []
        return dropped

    def redeliver(self, from_update_id: int) -> int:
        """Move confirmed updates with ``update_id >= from_update_id`` back to pending."""
        back = [update for update in self._history if update.update_id >= from_update_id]
        if not back:
            return 0
        self._history = deque(
            (update for update in self._history if update.update_id < from_update_id),
            maxlen=self._history.maxlen,
        )
        merged = {update.update_id: update for update in self._pending}
        merged.update({update.update_id: update for update in back})
        self._pending = [merged[key] for key in sorted(merged)]
        self._wake("update")
        return len(back)

    # ------------------------------------------------------------------ long poll

    def interrupt_poll(self, outcome: PollOutcome = "conflict") -> None:
        """A new getUpdates call (or setWebhook: ``"webhook"``) ends the one waiting, which then
        answers 409 Conflict."""
        self._wake(outcome)

    async def wait(self, timeout: float) -> PollOutcome:
        """Wait up to ``timeout`` seconds for an update; only one waiter exists at a time."""
        if self._closed:
            return "closed"
        self.interrupt_poll()
        waiter: asyncio.Future[PollOutcome] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return "timeout"
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def close(self) -> None:
        """End a pending long poll (it answers with what it has) and refuse to wait again."""
        self._closed = True
        self._wake("closed")

    def reopen(self) -> None:
        """Accept long polls again after :meth:`close` (a restarted sandbox keeps its queue)."""
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_pending(self) -> None:
        """Return once at least one update is pending (for webhook delivery)."""
        while not self._pending:
            if self._pending_event is None:
                self._pending_event = asyncio.Event()
            self._pending_event.clear()
            await self._pending_event.wait()

    def _wake(self, outcome: PollOutcome) -> None:
        if outcome == "update" and self._pending_event is not None:
            self._pending_event.set()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)
