"""Team managers in the pure engine: they may read the conversations of their team's members
(the assignee and whoever covers), never write to the client, and nothing else."""

from __future__ import annotations

import pytest

from bridge.networks import network_names
from policies.engine import Join, RoomState, SendOut, Verdict, decide, room_managers
from policies.model import PolicyError, parse_policy

DOMAIN = "localhost"
ANNA, BEN, MIA, MAX = "@anna:localhost", "@ben:localhost", "@mia:localhost", "@max:localhost"
POLICY = parse_policy(
    {
        "roles": {"adviser": []},
        "teams": {
            "wealth": {"members": [ANNA], "roles": ["adviser"], "managers": [MIA]},
            "desk": {"members": [BEN], "roles": ["adviser"], "managers": [MAX]},
        },
        "join": {"allowed_roles": ["adviser"]},
    },
    local_domain=DOMAIN,
    networks=network_names(),
)


def room(*caretakers: str) -> RoomState:
    return RoomState("!r:localhost", frozenset({ANNA}), caretakers=frozenset(caretakers))


def join(user: str, state: RoomState) -> Verdict:
    return decide(Join(user, state, DOMAIN), POLICY).verdict


def test_a_manager_joins_their_teams_conversations_only() -> None:
    assert join(MIA, room(ANNA)) is Verdict.ALLOW
    assert decide(Join(MIA, room(ANNA), DOMAIN), POLICY).rule == "join.team_manager"
    assert join(MAX, room(ANNA)) is Verdict.DENY
    assert join(MAX, room(BEN)) is Verdict.ALLOW
    assert join(MIA, room()) is Verdict.DENY  # nobody looks after it: no team
    # Covering for a colleague of another team brings that team's manager too.
    assert room_managers(room(BEN, ANNA), POLICY) == {MIA, MAX}


def test_a_manager_reads_but_never_writes_to_the_client() -> None:
    denied = decide(SendOut(MIA, room(ANNA), "text", text="Hello"), POLICY)
    assert denied.verdict is Verdict.DENY and denied.rule == "join.manager_read_only"
    assert decide(SendOut(ANNA, room(ANNA), "text", text="Hello"), POLICY).verdict is Verdict.ALLOW


def test_a_manager_with_a_role_of_their_own_takes_part_like_anyone() -> None:
    policy = parse_policy(
        {
            "roles": {"adviser": [MIA]},
            "teams": {"wealth": {"members": [ANNA], "roles": ["adviser"], "managers": [MIA]}},
            "join": {"allowed_roles": ["adviser"]},
        },
        local_domain=DOMAIN,
        networks=network_names(),
    )
    assert decide(SendOut(MIA, room(ANNA), "text", text="Hello"), policy).verdict is Verdict.ALLOW
    assert decide(Join(MIA, room(BEN), DOMAIN), policy).rule == "join.roles"


def test_managers_must_be_user_ids() -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(
            {"teams": {"t": {"members": [ANNA], "managers": ["mia"]}}}, local_domain=DOMAIN, networks=()
        )
    assert any(p.startswith("teams.t.managers[0]: 'mia' is not a Matrix user id") for p in e.value.problems)
