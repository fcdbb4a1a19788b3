"""Long polls of the sandboxes' control APIs wait on a condition ("a newer message exists")
instead of sleeping: :class:`Changes` wakes them whenever sandbox state changes. Shared by the
three sandboxes (sandbox code only; no connector uses it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


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
