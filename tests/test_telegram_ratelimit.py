"""The proactive limiter keeps to Telegram's budgets (per chat, per group, overall)."""

from __future__ import annotations

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
