"""The sandbox's clock.

Conversation-time rules — reply token validity (one minute after the webhook), the 20-minute cap
on redelivered reply tokens, the 24-hour retry key window, the 24-hour unsend window, the 7-day
push window for non-friends, loading animations — read :class:`SandboxClock`, which tests move
forward (``POST /control/clock``) instead of waiting. Rate limits and webhook retry intervals use
the real monotonic clock: they are about how fast things happen, not about conversation time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SandboxClock:
    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self.offset = 0.0

    def now(self) -> float:
        """Seconds since the epoch, shifted by :meth:`advance`."""
        return self._wall() + self.offset

    def ms(self) -> int:
        """Milliseconds since the epoch, as LINE's webhook ``timestamp`` carries them."""
        return int(self.now() * 1000)

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the sandbox clock never goes back")
        self.offset += seconds
        return self.now()
