"""Capture health's rules on plain values (bridge.health.CaptureHealth): which reports make an
account failing, stale, disconnected or degraded, and that each start and end comes out once."""

from __future__ import annotations

import pytest

from bridge.health import CaptureHealth, Transition, notice_text


class Clocks:
    """The bridge clock (moved by tests) and real time, both by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.real = 100.0

    def advance(self, seconds: float, *, real: float | None = None) -> None:
        self.now += seconds
        self.real += seconds if real is None else real


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def health(clocks: Clocks) -> CaptureHealth:
    h = CaptureHealth(600, clock=lambda: clocks.now, real=lambda: clocks.real)
    h.watch("telegram", "42", "Telegram bot 42")
    return h


def changes(h: CaptureHealth) -> list[tuple[str, str, bool]]:
    return [(t.account, t.problem, t.active) for t in h.transitions()]


def test_a_healthy_account_has_no_transitions(health: CaptureHealth, clocks: Clocks) -> None:
    for _ in range(5):
        health.report("telegram", "42", True)
        clocks.advance(60)
        assert changes(health) == []
    h = health.accounts[("telegram", "42")]
    assert health.capture_up(h) and h.last_ok == clocks.now - 60


def test_failing_needs_three_in_a_row_and_ends_at_the_first_success(
    health: CaptureHealth, clocks: Clocks
) -> None:
    health.report("telegram", "42", False, "getUpdates failed (NetworkError: Internal Server Error)")
    health.report("telegram", "42", False, "x")
    assert changes(health) == []
    health.report("telegram", "42", True)  # a success in between starts the count again
    first_failure = clocks.now
    health.report("telegram", "42", False, "a")
    clocks.advance(2)
    health.report("telegram", "42", False, "b")
    assert changes(health) == []
    clocks.advance(4)
    health.report("telegram", "42", False, "getUpdates failed (NetworkError: Bad Gateway)")
    [start] = health.transitions()
    assert start.since == first_failure  # the run of failures began with the first
    assert (start.problem, start.active) == ("failing", True)
    assert "3 attempts" in start.detail and "Bad Gateway" in start.detail
    assert not health.capture_up(health.accounts[("telegram", "42")])
    health.report("telegram", "42", False, "more")
    assert changes(health) == []  # still failing: said once
    health.report("telegram", "42", True)
    assert changes(health) == [("42", "failing", False)]
    assert changes(health) == []


def test_stale_after_the_configured_minutes_of_clock_and_the_real_grace(
    health: CaptureHealth, clocks: Clocks
) -> None:
    health.report("telegram", "42", True)
    last_ok = clocks.now
    clocks.advance(599, real=1)
    assert changes(health) == []
    # The clock jumps past the limit while a long poll is out: not a gap yet in real time.
    clocks.advance(120, real=2)
    assert changes(health) == []
    clocks.advance(0, real=20)
    [start] = health.transitions()
    assert (start.problem, start.active) == ("stale", True) and "nothing received for 11 min" in start.detail
    assert start.since == last_ok  # the gap began with the last success, not when it was noticed
    clocks.advance(300)
    assert changes(health) == []
    health.report("telegram", "42", True)
    [end] = health.transitions()
    assert (end.problem, end.active, end.since) == ("stale", False, last_ok)
    text = notice_text(end, network_name="Telegram", keeps="it keeps undelivered updates for 24 hours")
    assert (
        "it had stopped from" in text
        and ", 16 min)" in text
        and "Telegram still holds them (it keeps undelivered updates for 24 hours)" in text
    )


def test_a_clock_jump_that_a_poll_answers_within_the_grace_is_not_announced(
    health: CaptureHealth, clocks: Clocks
) -> None:
    health.report("telegram", "42", True)
    clocks.advance(3600, real=1)
    health.report("telegram", "42", True)  # the long poll came back
    clocks.advance(0, real=30)
    assert changes(health) == []


def test_an_account_that_never_received_goes_stale_from_the_start(
    health: CaptureHealth, clocks: Clocks
) -> None:
    health.watch("whatsapp", "1001", "WhatsApp number 1001")
    clocks.advance(601)
    assert ("1001", "stale", True) in changes(health)
    assert (
        "nothing since the bridge started" in health.problems(health.accounts[("whatsapp", "1001")])["stale"]
    )


def test_business_disconnect_and_reconnect(health: CaptureHealth, clocks: Clocks) -> None:
    health.set_enabled(
        "telegram", "business:abc", True, "the Telegram Business account of Dana (business:abc)"
    )
    assert changes(health) == []
    health.set_enabled(
        "telegram", "business:abc", False, "the Telegram Business account of Dana (business:abc)"
    )
    health.set_enabled(
        "telegram", "business:abc", False, "the Telegram Business account of Dana (business:abc)"
    )
    [start] = health.transitions()
    assert (start.problem, start.active) == ("disabled", True)
    assert notice_text(start).startswith("Capture stopped: the Telegram Business account of Dana")
    b = health.accounts[("telegram", "business:abc")]
    assert not health.capture_up(b)
    clocks.advance(3600)  # no staleness for an account that has no receiving of its own
    assert changes(health) == [] or all(p != "stale" for _, p, _ in changes(health))
    health.set_enabled(
        "telegram", "business:abc", True, "the Telegram Business account of Dana (business:abc)"
    )
    assert changes(health) == [("business:abc", "disabled", False)]
    assert health.capture_up(b)


def test_quality_below_green_is_a_warning_not_a_capture_stop(health: CaptureHealth) -> None:
    health.set_quality("whatsapp", "1002", "GREEN")
    assert changes(health) == []
    health.set_quality("whatsapp", "1002", "yellow")
    [start] = health.transitions()
    assert (start.problem, start.active) == ("quality", True)
    assert notice_text(start).startswith("Capture at risk:") and "YELLOW" in start.detail
    assert health.capture_up(health.accounts[("whatsapp", "1002")])
    health.set_quality("whatsapp", "1002", "RED")
    assert changes(health) == []  # a further drop while degraded: the metric shows it, no second notice
    health.set_quality("whatsapp", "1002", "GREEN")
    [end] = health.transitions()
    assert not end.active and "GREEN again" in notice_text(end, health.accounts[("whatsapp", "1002")])


def test_problems_carried_over_a_restart_end_only_when_the_account_shows_it(clocks: Clocks) -> None:
    h = CaptureHealth(600, clock=lambda: clocks.now, real=lambda: clocks.real)
    h.carry(
        "telegram", "42", "Telegram bot 42", "failing", clocks.now - 300, "getUpdates failed", watched=True
    )
    h.carry(
        "telegram",
        "business:abc",
        "the Telegram Business account of Dana",
        "disabled",
        clocks.now - 300,
        "x",
        watched=False,
    )
    h.carry("whatsapp", "1002", "WhatsApp number 1002", "quality", clocks.now - 300, "RED", watched=True)
    assert changes(h) == []  # announced before the restart: not again
    assert not h.capture_up(h.accounts[("telegram", "42")])
    h.report("telegram", "42", True)
    h.set_quality("whatsapp", "1002", "RED")
    [end] = h.transitions()
    assert (end.account, end.problem, end.active, end.since) == ("42", "failing", False, clocks.now - 300)
    h.set_enabled("telegram", "business:abc", True, "the Telegram Business account of Dana")
    h.set_quality("whatsapp", "1002", "GREEN")
    assert sorted(changes(h)) == [("1002", "quality", False), ("business:abc", "disabled", False)]


def test_each_transition_names_when_it_started() -> None:
    t = Transition(
        "telegram", "42", "Telegram bot 42", "failing", False, "d", at=1_700_000_600.0, since=1_700_000_000.0
    )
    text = notice_text(t)
    assert "from 2023-11-14 22:13:20 UTC to 2023-11-14 22:23:20 UTC, 10 min" in text
