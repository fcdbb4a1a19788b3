"""The one backoff helper: first delay, doubling, cap, no overflow, jitter bounds, reset."""

from __future__ import annotations

import pytest

from bridge.backoff import Backoff, Retrying


def test_first_delay_then_doubling_up_to_the_cap() -> None:
    b = Backoff(first=0.5, cap=5.0)
    assert [b.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.delay(-3) == 0.5  # a counter that never went below zero: the first delay


def test_same_values_as_repeated_doubling() -> None:
    """The sites used to double a running value; the closed form gives the very same floats."""
    for first, cap in ((0.2, 5), (0.1, 2.0), (1.0, 30), (0.5, 30), (300.0, 3600.0)):
        b, delay = Backoff(first=first, cap=cap), first
        for n in range(40):
            assert b.delay(n) == delay, (first, cap, n)
            delay = min(delay * 2, cap)


def test_other_factors() -> None:
    assert [Backoff(first=1.0, cap=100.0, factor=3.0).delay(n) for n in range(6)] == [1, 3, 9, 27, 81, 100]
    assert Backoff(first=2.0, cap=60.0, factor=1.0).delay(10**6) == 2.0


@pytest.mark.parametrize("attempt", [1_000, 10**6, 10**18, 2**200])
def test_huge_attempt_numbers_give_the_cap(attempt: int) -> None:
    assert Backoff(first=0.5, cap=60.0).delay(attempt) == 60.0
    assert Backoff(first=1e-300, cap=1e300, factor=10.0).delay(attempt) == 1e300
    assert Backoff(first=1.0, cap=10.0, factor=1e308).delay(attempt) == 10.0


def test_first_above_the_cap_gives_the_cap() -> None:
    assert Backoff(first=10.0, cap=5.0).delay(0) == 5.0


def test_added_jitter_stays_within_its_bounds_after_the_cap() -> None:
    b = Backoff(first=0.5, cap=60.0, jitter=0.2)
    for attempt, base in ((0, 0.5), (3, 4.0), (50, 60.0)):
        delays = [b.delay(attempt) for _ in range(300)]
        assert base <= min(delays) and max(delays) < base + 0.2, (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1
        assert b.base(attempt) == base


def test_scaled_jitter_stays_within_its_bounds_after_the_cap() -> None:
    b = Backoff(first=1.0, cap=600.0, scale=(0.75, 1.0))
    for attempt, base in ((0, 1.0), (9, 512.0), (10, 600.0)):
        delays = [b.delay(attempt) for _ in range(300)]
        assert 0.75 * base <= min(delays) and max(delays) <= base, (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1


def test_no_randomness_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without jitter the global random stream is left alone (seeded tests keep their sequence)."""

    def no(*_: object) -> float:
        raise AssertionError("random drawn")

    monkeypatch.setattr("bridge.backoff.random.random", no)
    monkeypatch.setattr("bridge.backoff.random.uniform", no)
    assert Backoff(first=1.0, cap=8.0).delay(5) == 8.0


def test_retry_after_wins_when_given() -> None:
    b = Backoff(first=0.5, cap=5.0)
    assert b.after(2, None) == 2.0
    assert b.after(2, 42.0) == 42.0
    assert b.after(2, 0.0) == 0.0  # "retry now" is an answer too


def test_retrying_doubles_and_resets() -> None:
    retry = Retrying(Backoff(first=1.0, cap=30.0))
    assert retry.current == 1.0
    assert [retry.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert retry.current == 30.0
    retry.reset()
    assert retry.current == 1.0 and retry.next_delay() == 1.0 and retry.current == 2.0


def test_retrying_announces_the_delay_without_its_jitter() -> None:
    retry = Retrying(Backoff(first=0.5, cap=30.0, jitter=0.1))
    announced = retry.current
    waited = retry.next_delay()
    assert announced == 0.5 and 0.5 <= waited < 0.6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first": -1.0, "cap": 1.0},
        {"first": 1.0, "cap": -1.0},
        {"first": 1.0, "cap": 5.0, "factor": 0.5},
        {"first": 1.0, "cap": 5.0, "jitter": -0.1},
        {"first": 1.0, "cap": 5.0, "scale": (1.0, 0.5)},
    ],
)
def test_nonsense_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_an_infinite_cap_still_does_not_overflow() -> None:
    assert Backoff(first=1.0, cap=float("inf")).delay(10**9) == float("inf")
    assert Backoff(first=1.0, cap=float("inf")).delay(10) == 1024.0
