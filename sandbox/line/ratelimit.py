"""Per-endpoint rate limits, from the reference's "Rate limits" table (per channel; a different
HTTP method is a different endpoint; parameters and bodies do not matter):

- Display a loading animation: 100 requests per second
- Set / get webhook endpoint information: 1,000 requests per minute
- Test webhook endpoint: 60 requests per hour
- Other API endpoints: 2,000 requests per second

Over a limit LINE answers ``429 Too Many Requests`` with ``The API rate limit has been exceeded.
Try again later.`` The sandbox counts requests in a sliding window on the real clock; refused
requests do not count. ``rate_limits=False`` turns the limits off; ``overrides`` replaces a
limit (``{"POST /v2/bot/chat/loading/start": (3, 1.0)}``) so tests can reach one quickly.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

DEFAULT_LIMIT = (2000, 1.0)
LIMITS: dict[str, tuple[int, float]] = {
    "POST /v2/bot/chat/loading/start": (100, 1.0),
    "PUT /v2/bot/channel/webhook/endpoint": (1000, 60.0),
    "GET /v2/bot/channel/webhook/endpoint": (1000, 60.0),
    "POST /v2/bot/channel/webhook/test": (60, 3600.0),
}


class RateLimiter:
    def __init__(
        self,
        enabled: bool = True,
        overrides: dict[str, tuple[int, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.limits = {**LIMITS, **(overrides or {})}
        self.clock = clock
        self._windows: dict[str, deque[float]] = {}

    def limit(self, endpoint: str) -> tuple[int, float]:
        return self.limits.get(endpoint, self.limits.get("*", DEFAULT_LIMIT))

    def allow(self, endpoint: str) -> bool:
        """Count one request to ``endpoint`` ("GET /v2/bot/profile/{userId}"); False if over."""
        if not self.enabled:
            return True
        count, window = self.limit(endpoint)
        now = self.clock()
        events = self._windows.setdefault(endpoint, deque())
        while events and events[0] <= now - window:
            events.popleft()
        if len(events) >= count:
            return False
        events.append(now)
        return True
