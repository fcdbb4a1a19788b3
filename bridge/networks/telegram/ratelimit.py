"""Telegram's limits, kept proactively: about 1 message/s per chat with short bursts, 20 per
minute in a group, about 30 messages/s overall. Waiting here is cheaper than a 429 and its
retry_after, and keeps one busy chat from starving the others.

Telegram's bucket for a chat and ours run on different clocks: ours starts (and restarts, each
time it is full again) when a call goes out, Telegram's when that call arrives. Paced exactly at
the limit on our clock, a later call that travels a millisecond faster than that first one
arrives a millisecond early, and Telegram answers 429 with a whole second of retry_after, a
second the chat then loses. So when a message is taken from a full chat bucket, the bucket counts
it from when its answer came back, the latest Telegram can have counted it (``settle``): our clock
then runs behind Telegram's by that one round trip, never ahead, and later calls need no margin of
their own. A refused call costs Telegram's budget nothing and is given back here too
(``refused``). The overall budget keeps counting when calls go out: it is shared by concurrent
calls to many chats and rarely spent to the last token."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class Bucket:
    rate: float  # tokens per second
    capacity: float
    tokens: float = -1.0
    stamp: float = 0.0
    #: The last token was taken from a full bucket: its answer sets the bucket's clock.
    from_full: bool = False

    def wait_time(self, now: float) -> float:
        if self.tokens < 0:
            self.tokens, self.stamp = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.from_full = self.tokens >= self.capacity
        self.tokens -= 1

    def settle(self, seconds: float) -> None:
        """The call that took the last token was answered ``seconds`` after the take: when the
        bucket was full then, count that token (and so the bucket's clock) from the answer."""
        if self.from_full:
            self.tokens -= seconds * self.rate
            self.from_full = False

    def give_back(self) -> None:
        self.tokens = min(self.capacity, self.tokens + 1)
        self.from_full = False


class SendLimiter:
    def __init__(
        self,
        *,
        per_chat: float = 1.0,
        chat_burst: float = 3,
        group_per_minute: float = 20,
        overall: float = 30,
    ) -> None:
        self.per_chat, self.chat_burst = per_chat, chat_burst
        self.group_rate = group_per_minute / 60
        self.overall = Bucket(overall, overall)
        self.chats: dict[int, Bucket] = {}
        self._lock = asyncio.Lock()
        #: False: no proactive pacing (a Bot API server without Telegram's limits, e.g. the
        #: sandbox in the bench's throughput runs); 429s are still honoured.
        self.enabled = True

    def _bucket(self, chat_id: int) -> Bucket:
        bucket = self.chats.get(chat_id)
        if bucket is None:
            bucket = Bucket(self.group_rate, 3) if chat_id < 0 else Bucket(self.per_chat, self.chat_burst)
            self.chats[chat_id] = bucket
        return bucket

    async def acquire(self, chat_id: int) -> float:
        """Wait until both the chat's and the overall budget allow one more message; returns
        when (time.monotonic) the budget was taken, for :meth:`settle`."""
        if not self.enabled:
            return time.monotonic()
        chat = self._bucket(chat_id)
        while True:
            async with self._lock:
                now = time.monotonic()
                wait = max(chat.wait_time(now), self.overall.wait_time(now))
                if wait <= 0:
                    chat.take()
                    self.overall.take()
                    return now
            await asyncio.sleep(wait)

    def settle(self, chat_id: int, taken_at: float) -> None:
        """The call whose budget was taken at ``taken_at`` was answered (see the module docstring)."""
        chat = self.chats.get(chat_id)
        if chat is not None:
            chat.settle(max(0.0, time.monotonic() - taken_at))

    def refused(self, chat_id: int) -> None:
        """Telegram refused the call (429): it counted nothing, so neither does the bridge."""
        chat = self.chats.get(chat_id)
        if chat is not None:
            chat.give_back()
        self.overall.give_back()
