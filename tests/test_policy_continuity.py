"""The pure side of continuity: assignment around leavers and absences, who may reach out,
which commands employees may use, and the policy sections that configure it (with errors that
name the key path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bridge.networks import network_names
from policies import (
    Command,
    Outreach,
    PolicyError,
    Verdict,
    choose_assignees,
    decide,
    notice_for,
    parse_policy,
    stand_ins,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "policies" / "example.yaml"
DOMAIN = "localhost"
#: The networks the bridge registers: the policy checks per-network keys against them.
NETWORKS = network_names()
DATA = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
POLICY = parse_policy(DATA, local_domain=DOMAIN, networks=NETWORKS)
EMPLOYEE, ADVISER2, SENIOR = "@employee:localhost", "@adviser2:localhost", "@senior:localhost"
OUTSIDER, OBSERVER, ADMIN = "@outsider:localhost", "@compliance:localhost", "@admin:localhost"


def pick(policy=POLICY, counter: int = 0, unavailable=None, account_key=None):
    return choose_assignees(
        policy,
        network="telegram",
        account_key=account_key,
        invite_list=[EMPLOYEE],
        counter=counter,
        unavailable=unavailable or {},
    )


def with_assignment(**changes) -> object:
    data = {**DATA, "assignment": {**DATA["assignment"], **changes}}
    return parse_policy(data, local_domain=DOMAIN, networks=NETWORKS)


def test_round_robin_never_picks_the_offboarded_leaver() -> None:
    offboarded = {EMPLOYEE: (ADVISER2,)}
    picks = [pick(counter=n, unavailable=offboarded) for n in range(6)]
    assert all(p.users == (ADVISER2,) for p in picks)
    assert picks[0].replaced == ((EMPLOYEE, (ADVISER2,)),) and not picks[0].fallback
    assert picks[1].replaced == ()  # adviser2's own turn


def test_an_absent_member_without_cover_passes_the_turn_on() -> None:
    away = {EMPLOYEE: ()}
    assert [pick(counter=n, unavailable=away).users for n in range(4)] == [(ADVISER2,)] * 4


def test_nobody_left_goes_to_the_fallback_and_says_so() -> None:
    gone = {EMPLOYEE: (ADVISER2,), ADVISER2: ()}
    chosen = pick(counter=0, unavailable=gone)
    assert chosen.users == (SENIOR,) and chosen.fallback
    none_left = pick(counter=0, unavailable={**gone, SENIOR: ()})
    assert none_left.users == () and none_left.fallback


@pytest.mark.parametrize("mode", ["desk", "account_owner", "invite"])
def test_every_mode_skips_the_unavailable(mode: str) -> None:
    policy = with_assignment(mode=mode)
    chosen = pick(policy, account_key="telegram:business:demo", unavailable={EMPLOYEE: (SENIOR,)})
    assert EMPLOYEE not in chosen.users and SENIOR in chosen.users


def test_stand_ins_follow_successors_of_successors_without_looping() -> None:
    assert stand_ins("@a:x", {"@a:x": ("@b:x",), "@b:x": ("@c:x",)}) == ("@c:x",)
    assert stand_ins("@a:x", {"@a:x": ("@b:x",), "@b:x": ("@a:x",)}) == ()
    assert stand_ins("@a:x", {}) == ("@a:x",)


def test_outreach_is_for_the_roles_the_policy_names() -> None:
    def verdict(user: str) -> Verdict:
        return decide(Outreach(user_id=user, network="whatsapp", local_domain=DOMAIN), POLICY).verdict

    assert verdict(EMPLOYEE) is Verdict.ALLOW and verdict(SENIOR) is Verdict.ALLOW
    assert verdict(OUTSIDER) is Verdict.DENY and verdict(OBSERVER) is Verdict.DENY
    leaver = decide(
        Outreach(user_id=EMPLOYEE, network="whatsapp", local_domain=DOMAIN, offboarded=True), POLICY
    )
    assert not leaver.allowed and leaver.rule == "offboarding"
    denied = decide(Outreach(user_id=OUTSIDER, network="whatsapp", local_domain=DOMAIN), POLICY)
    assert denied.rule == "outreach.allowed_roles" and "adviser" in denied.reason
    # Without outreach roles, whoever may join portals may reach out.
    open_policy = parse_policy(
        {k: v for k, v in DATA.items() if k != "outreach"}, local_domain=DOMAIN, networks=NETWORKS
    )
    assert decide(Outreach(user_id=ADVISER2, network="telegram", local_domain=DOMAIN), open_policy).allowed
    assert not decide(
        Outreach(user_id=OUTSIDER, network="telegram", local_domain=DOMAIN), open_policy
    ).allowed


def test_employees_may_use_their_own_commands_only() -> None:
    def verdict(user: str, name: str, target: str | None = None) -> Verdict:
        return decide(Command(user_id=user, name=name, target=target), POLICY).verdict

    for name in ("help", "waiting", "invite", "contact"):
        assert verdict(EMPLOYEE, name) is Verdict.ALLOW
    assert verdict(EMPLOYEE, "away", EMPLOYEE) is Verdict.ALLOW
    assert verdict(EMPLOYEE, "away", ADVISER2) is Verdict.DENY
    assert verdict(ADMIN, "away", ADVISER2) is Verdict.ALLOW
    assert verdict(EMPLOYEE, "offboard") is Verdict.DENY and verdict(EMPLOYEE, "rooms") is Verdict.DENY


def test_the_example_policy_configures_every_step() -> None:
    sla = POLICY.sla
    assert [name for name, _ in sla.steps()] == ["remind", "escalate", "supervisor"]
    assert [s for _, s in sla.steps()] == [900, 3600, 4 * 3600]
    assert sla.supervisor_role == "senior"
    assert POLICY.outreach.link_expiry_s == 7 * 86400
    assert POLICY.absence.fallback == (SENIOR,)
    assert "{cover}" in notice_for(POLICY.absence.notice, "telegram", None)
    assert notice_for(POLICY.sla.out_of_hours, "telegram", "de-AT").startswith("Danke")


@pytest.mark.parametrize(
    ("section", "value", "path"),
    [
        ("sla", {"remind_after": "soon"}, "sla.remind_after"),
        ("sla", {"remind_after": "1h", "escalate_after": "30m"}, "sla.escalate_after"),
        ("sla", {"supervisor_after": "4h"}, "sla.supervisor_role"),
        ("sla", {"hours": "Mon-Fri 08:00-18:00", "tz": "Mars/Olympus"}, "sla.tz"),
        ("sla", {"hours": "weekdays", "tz": "Europe/Berlin"}, "sla.hours"),
        ("sla", {"remind_afterr": "1h"}, "sla.remind_afterr"),
        ("outreach", {"allowed_roles": ["nobody"]}, "outreach.allowed_roles[0]"),
        ("outreach", {"link_expiry": "400d"}, "outreach.link_expiry"),
        ("absence", {"fallback": ["team:nope"]}, "absence.fallback[0]"),
        ("absence", {"fallback": ["not-a-user"]}, "absence.fallback[0]"),
        (
            "absence",
            {"notice": {"regions": {"xx-toolongregion": "hi"}}},
            "absence.notice.regions.xx-toolongregion",
        ),
        (
            "teams",
            {"wealth": {"members": [EMPLOYEE], "hours": "Mon-Fri 08:00-18:00", "tz": "Nowhere/City"}},
            "teams.wealth.tz",
        ),
    ],
)
def test_bad_continuity_settings_name_their_key_path(section: str, value: object, path: str) -> None:
    data = {**DATA, section: value}
    with pytest.raises(PolicyError) as err:
        parse_policy(data, local_domain=DOMAIN, networks=NETWORKS)
    assert any(problem.startswith(path + ":") for problem in err.value.problems), err.value.problems
