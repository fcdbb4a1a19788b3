"""The sandbox's clock.

Time-based rules (the 24-hour customer service window, media URL and media id expiry, the
15-minute edit and 2-day revoke windows) read :class:`SandboxClock`, which tests move forward
with ``POST /control/clock`` instead of waiting. Rate limits use the real monotonic clock: they
are about how fast the bridge calls, not about conversation time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SandboxClock:
    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self.offset = 0.0

    def now(self) -> int:
        """Seconds since the epoch, as Meta's string timestamps carry them."""
        return int(self._wall() + self.offset)

    def advance(self, seconds: float) -> int:
        if seconds < 0:
            raise ValueError("the sandbox clock never goes back")
        self.offset += seconds
        return self.now()
