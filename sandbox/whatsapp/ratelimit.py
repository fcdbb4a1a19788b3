"""Sending limits, enforced only with ``throughput_limits=True``:

- **Throughput** (Meta's "Throughput" page): each business number sends up to 80 messages per
  second by default; beyond that the API answers error 130429 until the rate is back within it.
- **Pair rate** (Meta's pair rate limit, error 131056): about one message every 6 seconds from
  one business number to the same user, with some burst allowance.

Both run on the real monotonic clock: they are about how fast the bridge calls.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import GraphError, pair_rate_exceeded, throughput_exceeded

DEFAULT_MPS = 80
PAIR_INTERVAL = 6.0
# guess: Meta documents the 1-per-6-seconds pair rate and that short bursts are allowed, but
# not the burst size; 45 is the figure commonly reported by Solution Partners.
PAIR_BURST = 45


@dataclass
class _Bucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity

    def take(self, now: float) -> bool:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ThroughputLimiter:
    def __init__(
        self,
        enabled: bool,
        mps: int = DEFAULT_MPS,
        pair_burst: int = PAIR_BURST,
        pair_interval: float = PAIR_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.mps = mps
        self.pair_burst = pair_burst
        self.pair_interval = pair_interval
        self.clock = clock
        self._sent: dict[str, deque[float]] = {}
        self._pairs: dict[tuple[str, str], _Bucket] = {}

    def check(self, phone_number_id: str, wa_id: str) -> GraphError | None:
        """Count one send; the error to answer instead if it is over a limit."""
        if not self.enabled:
            return None
        now = self.clock()
        window = self._sent.setdefault(phone_number_id, deque())
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= self.mps:
            return throughput_exceeded()
        bucket = self._pairs.get((phone_number_id, wa_id))
        if bucket is None:
            bucket = self._pairs[(phone_number_id, wa_id)] = _Bucket(
                float(self.pair_burst), 1.0 / self.pair_interval, updated=now
            )
        if not bucket.take(now):
            return pair_rate_exceeded()
        window.append(now)
        return None
