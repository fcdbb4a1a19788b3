"""Telegram's limits, kept proactively: about 1 message/s per chat with short bursts, 20 per
minute in a group, about 30 messages/s overall. Waiting here is cheaper than a 429 and its
retry_after, and keeps one busy chat from starving the others."""

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

    def wait_time(self, now: float) -> float:
        if self.tokens < 0:
            self.tokens, self.stamp = self.capacity, now
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


class SendLimiter:
    def __init__(self, *, per_chat: float = 1.0, chat_burst: float = 3, group_per_minute: float = 20, overall: float = 30) -> None:
        self.per_chat, self.chat_burst = per_chat, chat_burst
        self.group_rate = group_per_minute / 60
        self.overall = Bucket(overall, overall)
        self.chats: dict[int, Bucket] = {}
        self._lock = asyncio.Lock()

    def _bucket(self, chat_id: int) -> Bucket:
        bucket = self.chats.get(chat_id)
        if bucket is None:
            bucket = Bucket(self.group_rate, 3) if chat_id < 0 else Bucket(self.per_chat, self.chat_burst)
            self.chats[chat_id] = bucket
        return bucket

    async def acquire(self, chat_id: int) -> None:
        """Wait until both the chat's and the overall budget allow one more message."""
        chat = self._bucket(chat_id)
        while True:
            async with self._lock:
                now = time.monotonic()
                wait = max(chat.wait_time(now), self.overall.wait_time(now))
                if wait <= 0:
                    chat.take()
                    self.overall.take()
                    return
            await asyncio.sleep(wait)
