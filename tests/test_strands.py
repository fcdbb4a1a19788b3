"""The guard against transactions Synapse strands at the end of a recovery (appservice/strands.py)."""

from __future__ import annotations

from appservice.strands import WATCH_S, StrandGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def armed() -> tuple[StrandGuard, Clock]:
    clock = Clock()
    guard = StrandGuard(clock)
    guard.arm("start")
    return guard, clock


def test_in_sequence_transactions_are_all_admitted() -> None:
    guard, _ = armed()
    assert all(guard.admit(str(n)) for n in range(40, 60))
    assert guard.last == 59


def test_a_gap_soon_after_a_recovery_is_refused_once_then_the_stranded_one_and_it_pass() -> None:
    guard, _ = armed()
    assert guard.admit("40")
    assert not guard.admit("42")  # 41 stranded: the homeserver must resend, 41 first
    assert guard.admit("41")
    assert guard.admit("42")
    assert guard.last == 42


def test_a_gap_that_is_another_appservices_transaction_costs_one_refusal() -> None:
    guard, _ = armed()
    assert guard.admit("40")
    assert not guard.admit("43")
    assert guard.admit("43")  # resent: 41 and 42 were never ours
    assert guard.admit("44")


def test_gaps_outside_the_watch_are_admitted() -> None:
    guard, clock = armed()
    assert guard.admit("40")
    clock.now += WATCH_S + 1
    assert guard.admit("45")
    guard.arm("homeserver_back")
    assert not guard.admit("47")


def test_older_resent_and_non_numeric_transactions_are_admitted() -> None:
    guard, _ = armed()
    assert guard.admit("40") and guard.admit("41")
    assert guard.admit("12")  # an old one resent (a recoverer): handled, the sequence kept
    assert guard.last == 41
    assert guard.admit("replay-3f2a") and guard.admit("٣")  # not ASCII decimal: never refused
