"""Exponential backoff, written once.

Every retry loop in the bridge waits "a little, then twice as long, up to a cap". Hand-written
at each site, the same three lines drifted (an exponent clamped here and not there, jitter added
before the cap in one place and after it in another); here they are once, and each caller keeps
its own numbers, since only it knows what it is waiting for. No network library is imported: the
connectors, the outbox and the journal all use this.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """``first`` seconds before the retry after the first failure (attempt 0), times ``factor``
    per attempt, never more than ``cap``. Randomness is applied after the cap, so callers that
    failed together do not retry together: the delay is scaled by a uniform factor in
    ``scale = (low, high)``, then ``jitter`` uniform seconds are added. Either may push a
    delay slightly past ``cap``; that is what the sites did before this module existed."""

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    #: The attempt from which the delay is the cap: the exponent stops there, so a retry counter
    #: that has run for weeks cannot overflow a float.
    _ceiling: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        low, high = self.scale
        if self.first < 0 or self.cap < 0 or self.factor < 1 or self.jitter < 0 or not 0 <= low <= high:
            raise ValueError(f"not a backoff: {self!r}")
        ceiling = 0
        if self.factor > 1 and 0 < self.first < self.cap:
            # One past the estimate: a rounding error in the log must not stop just short of the cap.
            # (An infinite cap stops where floats end.)
            reach = math.log(min(self.cap, sys.float_info.max)) - math.log(self.first)
            ceiling = math.ceil(reach / math.log(self.factor)) + 1
        object.__setattr__(self, "_ceiling", ceiling)

    def base(self, attempt: int) -> float:
        """The delay without its randomness: what a log line announces before the wait."""
        n = min(max(attempt, 0), self._ceiling)
        try:
            return min(self.cap, self.first * self.factor**n)
        except OverflowError:  # only a huge factor, one step past the cap
            return self.cap

    def delay(self, attempt: int) -> float:
        """Seconds to wait after ``attempt`` earlier failures (0 for the first retry)."""
        delay = self.base(attempt)
        low, high = self.scale
        if (low, high) != (1.0, 1.0):
            delay *= random.uniform(low, high)
        if self.jitter:
            delay += random.random() * self.jitter
        return delay

    def after(self, attempt: int, retry_after: float | None) -> float:
        """The server's Retry-After when it gave one (it knows when it will take us again),
        otherwise :meth:`delay`."""
        return retry_after if retry_after is not None else self.delay(attempt)


@dataclass
class Retrying:
    """A loop's place in a :class:`Backoff`, for loops that keep no attempt counter of their own
    and start again from the first delay once a call succeeds."""

    backoff: Backoff
    attempt: int = 0

    @property
    def current(self) -> float:
        """The next wait without its randomness, for the log line before it."""
        return self.backoff.base(self.attempt)

    def next_delay(self) -> float:
        """The wait before the next try; the one after it is longer."""
        delay = self.backoff.delay(self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """The call went through: the next failure waits ``first`` again."""
        self.attempt = 0
