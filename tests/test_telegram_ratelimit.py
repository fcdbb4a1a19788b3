"""The proactive limiter keeps to Telegram's budgets (per chat, per group, overall)."""

from __future__ import annotations

import time

from bridge.networks.telegram.ratelimit import Bucket, SendLimiter


def test_chat_bucket_allows_a_burst_then_one_per_second() -> None:
    bucket = Bucket(rate=1.0, capacity=3)
    now = 100.0
    for _ in range(3):
        assert bucket.wait_time(now) == 0
        bucket.take()
    assert bucket.wait_time(now) == 1.0
    assert bucket.wait_time(now + 1.0) == 0


def test_group_budget_is_twenty_per_minute() -> None:
    limiter = SendLimiter()
    group = limiter._bucket(-100123)
    private = limiter._bucket(42)
    assert abs(group.rate - 20 / 60) < 1e-9 and private.rate == 1.0


async def test_acquire_waits_only_when_the_budget_is_spent() -> None:
    limiter = SendLimiter(per_chat=1000, chat_burst=2, overall=1000)
    for _ in range(2):
        await limiter.acquire(7)
    chat = limiter._bucket(7)
    assert chat.tokens < 1  # the burst is spent; the next acquire would wait


def test_a_burst_is_counted_from_the_first_answer() -> None:
    """Telegram's bucket starts when the first call of a burst arrives, ours when it went out:
    settling that call at its answer keeps our clock behind Telegram's, so a later call that
    travels faster than the first is not early."""
    bucket = Bucket(rate=1.0, capacity=3)
    assert bucket.wait_time(100.0) == 0
    bucket.take()
    bucket.settle(0.005)  # answered 5 ms after it went out
    for now in (100.01, 100.02):
        assert bucket.wait_time(now) == 0
        bucket.take()
        bucket.settle(0.005)  # not from a full bucket: no further shift
    # Without the shift the fourth token would be there at 101.0; with it, 5 ms later.
    assert abs(bucket.wait_time(101.0) - 0.005) < 1e-9
    assert bucket.wait_time(101.005 + 1e-9) == 0


def test_a_refused_call_costs_no_budget() -> None:
    limiter = SendLimiter(per_chat=1.0, chat_burst=1, overall=30)
    chat = limiter._bucket(7)
    assert chat.wait_time(50.0) == 0
    chat.take()
    limiter.overall.wait_time(50.0)
    limiter.overall.take()
    limiter.refused(7)
    assert chat.wait_time(50.0) == 0
    assert limiter.overall.tokens == 30


async def test_acquire_tells_when_the_budget_was_taken() -> None:
    limiter = SendLimiter(per_chat=1000, chat_burst=2, overall=1000)
    taken_at = await limiter.acquire(7)
    limiter.settle(7, taken_at)
    limiter.settle(8, taken_at)  # a chat never seen: nothing to settle
    assert limiter._bucket(7).tokens <= 1


async def test_pacing_switched_off_takes_no_budget_and_never_waits() -> None:
    """For a Bot API server without Telegram's limits (the bench's throughput runs)."""
    limiter = SendLimiter()
    limiter.enabled = False
    start = time.monotonic()
    for _ in range(50):
        await limiter.acquire(42)
    assert time.monotonic() - start < 0.5
    limiter.enabled = True
    # Nothing was taken while off: the chat's burst of 3 is still there, the 4th waits.
    for _ in range(3):
        await limiter.acquire(42)
    assert limiter._bucket(42).wait_time(time.monotonic()) > 0.5
