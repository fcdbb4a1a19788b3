"""Send rate limits shaped like Telegram's: about one message per second per chat with short
bursts, at most twenty messages per minute to the same group, and about thirty per second across
all chats.

Telegram does not publish exact numbers; these token buckets reproduce the documented order of
magnitude so that the bridge's handling of ``429 Too Many Requests`` gets exercised.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """A bucket that holds up to ``capacity`` tokens and regains ``rate`` tokens a second."""

    capacity: float
    rate: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0.0 when one is available now)."""
        self._refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


@dataclass
class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds ("20 messages per minute")."""

    limit: int
    window: float
    events: deque[float] = field(default_factory=deque)

    def wait_time(self, now: float) -> float:
        while self.events and self.events[0] <= now - self.window:
            self.events.popleft()
        if len(self.events) < self.limit:
            return 0.0
        return self.events[0] + self.window - now

    def take(self, now: float) -> None:
        self.events.append(now)


@dataclass
class SendRateLimiter:
    """Per-chat and global buckets; a send needs a token from both or it gets ``retry_after``."""

    enabled: bool = True
    per_chat_capacity: float = 3.0
    per_chat_rate: float = 1.0
    global_capacity: float = 30.0
    global_rate: float = 30.0
    group_limit: int = 20  # "not able to send more than 20 messages per minute to the same group"
    group_window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _chats: dict[Hashable, TokenBucket] = field(default_factory=dict, repr=False)
    _groups: dict[Hashable, SlidingWindow] = field(default_factory=dict, repr=False)
    _global: TokenBucket | None = field(default=None, repr=False)

    def acquire(self, chat_key: Hashable, *, group: bool = False) -> int | None:
        """Take a token for one send to ``chat_key`` (a group chat also needs a per-minute one).

        Returns None when the send may proceed, else the whole number of seconds (at least 1)
        the caller has to wait, which is what Telegram puts in ``retry_after``. Nothing is taken
        from any bucket when the send is refused, so a refused call costs nothing.
        """
        if not self.enabled:
            return None
        now = self.clock()
        if self._global is None:
            self._global = TokenBucket(self.global_capacity, self.global_rate, updated=now)
        chat = self._chats.get(chat_key)
        if chat is None:
            chat = TokenBucket(self.per_chat_capacity, self.per_chat_rate, updated=now)
            self._chats[chat_key] = chat
        limits: list[TokenBucket | SlidingWindow] = [self._global, chat]
        if group:
            window = self._groups.get(chat_key)
            if window is None:
                window = SlidingWindow(self.group_limit, self.group_window)
                self._groups[chat_key] = window
            limits.append(window)
        wait = max(limit.wait_time(now) for limit in limits)
        if wait > 0:
            return max(1, math.ceil(wait))
        for limit in limits:
            limit.take(now)
        return None
