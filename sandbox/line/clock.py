"""The sandbox's clock and its change notifier.

Conversation-time rules — reply token validity (one minute after the webhook), the 20-minute cap
on redelivered reply tokens, the 24-hour retry key window, the 24-hour unsend window, the 7-day
push window for non-friends, loading animations — read :class:`SandboxClock`, which tests move
forward (``POST /control/clock``) instead of waiting. Rate limits and webhook retry intervals use
the real monotonic clock: they are about how fast things happen, not about conversation time.

:class:`Changes` lets control-API long polls wait on a condition instead of sleeping.
"""

from __future__ import annotations

import asyncio
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


class Changes:
    """Wake every waiter whenever sandbox state changes; waiters re-check their predicate."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()
        self.closed = False

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def close(self) -> None:
        self.closed = True
        self.notify()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (True) or ``timeout`` seconds pass (its last value)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed:
                return predicate()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return predicate()
            finally:
                self._waiters.discard(waiter)
        return True
