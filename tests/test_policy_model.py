"""The policy document: the example parses, every mistake is reported with its key path and a
fix, and all mistakes are reported at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.networks import network_names
from policies import Policy, PolicyError, parse_policy

EXAMPLE = Path(__file__).resolve().parent.parent / "policies" / "example.yaml"
DOMAIN = "localhost"
#: The networks the bridge registers: the policy checks per-network keys against them.
NETWORKS = network_names()


def load_example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def problems_of(doc: Any) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, local_domain=DOMAIN, networks=NETWORKS)
    return info.value.problems


# --------------------------------------------------------------------------------------------
# The example and the defaults


def test_example_parses_with_every_rule_on() -> None:
    policy = parse_policy(load_example(), local_domain=DOMAIN, networks=NETWORKS)
    assert policy.admins == {"@admin:localhost"}
    assert policy.observers == {"@compliance:localhost"}
    assert policy.default_role == "staff"
    assert policy.join.allowed_roles == {"adviser", "senior"}
    assert policy.join.allowed_teams == {"wealth"}
    assert policy.join.allowed_servers == {"partner.localhost"}
    assert policy.join.max_external == 2
    assert policy.join.senior_role == "senior"
    assert policy.join.senior_users == {"@senior:localhost"}
    s = policy.sharing
    assert s.max_file_bytes == 20 * 1024 * 1024
    assert {
        "exe",
        "bat",
        "cmd",
        "js",
        "vbs",
        "scr",
        "msi",
        "jar",
        "ps1",
        "apk",
        "dmg",
        "iso",
    } <= s.blocked_file_types
    assert s.card_numbers and s.ibans
    assert set(s.blocked_labels) == {"restricted", "internalonly"}
    assert s.personal_contacts.enabled
    assert "example.com" in s.personal_contacts.company_domains
    assert s.personal_contacts.company_phones == {"49301234567"}
    assert s.personal_contacts.company_handles == {"acme_support"}
    assert ("t.me", "acme_support") in s.personal_contacts.company_links
    assert [p.name for p in s.custom_patterns] == ["project codename"]
    assert policy.disclaimers.default and policy.disclaimers.regions["de"].startswith("Dieses")
    assert set(policy.disclaimers.networks) == {"telegram", "whatsapp"}
    assert policy.assignment.mode == "round_robin" and policy.assignment.team == "wealth"
    assert policy.commands.prefix == "!hl"


def test_example_uses_the_local_users_it_documents() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for user in ("@employee:localhost", "@admin:localhost", "@compliance:localhost", "@senior:localhost",
                 "@adviser2:localhost"):  # fmt: skip
        assert user in text


def test_example_documents_every_key_with_a_comment() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    keys = {"admins", "observers", "roles", "teams", "default_role", "join", "allowed_roles", "allowed_teams",
            "allowed_servers", "max_external", "senior_role", "sharing", "max_file_mb", "blocked_file_types",
            "blocked_labels", "card_numbers", "ibans", "personal_contacts", "company_domains", "company_phones",
            "company_handles", "custom_patterns", "disclaimers", "assignment", "mode", "desk", "account_owners",
            "commands", "prefix", "members", "enabled", "name", "default", "networks", "regions", "team"}  # fmt: skip
    for key in keys:
        index = next(
            i for i, line in enumerate(lines) if line.strip().removeprefix("- ").startswith(f"{key}:")
        )
        above = [line.strip() for line in lines[max(0, index - 6) : index]]
        documented = above[-1].startswith("#") or any(line.startswith("#") and key in line for line in above)
        assert documented, f"{key} has no comment above it"


@pytest.mark.parametrize("doc", [None, {}])
def test_missing_policy_allows_everything(doc: dict[str, Any] | None) -> None:
    policy = parse_policy(doc, local_domain=DOMAIN, networks=NETWORKS)
    assert policy.admins == frozenset() and policy.observers == frozenset()
    assert policy.join.all_local_allowed and policy.join.senior_role is None
    s = policy.sharing
    assert s.max_file_bytes is None and not s.blocked_file_types and not s.blocked_labels
    assert not s.card_numbers and not s.ibans and not s.personal_contacts.enabled and not s.custom_patterns
    assert policy.disclaimers.default is None
    assert policy.assignment.mode == "invite"


def test_policy_is_frozen() -> None:
    policy = parse_policy(load_example(), local_domain=DOMAIN, networks=NETWORKS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.admins = frozenset()  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.roles["x"] = frozenset()  # type: ignore[index]


def test_memberships_are_precomputed() -> None:
    doc = {
        "roles": {"adviser": ["@a:localhost"], "senior": ["@s:localhost"], "staff": []},
        "teams": {"wealth": {"members": ["@t:localhost", "@a:localhost"], "roles": ["senior"]}},
        "join": {"allowed_teams": ["wealth"], "senior_role": "senior"},
    }
    policy = parse_policy(doc, local_domain=DOMAIN, networks=NETWORKS)
    assert policy.user_roles["@t:localhost"] == {"senior"}
    assert policy.user_roles["@a:localhost"] == {"adviser", "senior"}
    assert policy.user_teams["@t:localhost"] == {"wealth"}
    assert policy.roles["senior"] == {"@s:localhost", "@t:localhost", "@a:localhost"}
    assert policy.teams["wealth"].members == ("@t:localhost", "@a:localhost")
    assert policy.join.allowed_users == {"@t:localhost", "@a:localhost"}
    assert not policy.join.all_local_allowed
    assert policy.join.senior_users == {"@s:localhost", "@t:localhost", "@a:localhost"}


def test_default_role_in_allowed_roles_allows_every_local_user() -> None:
    doc = {"roles": {"staff": []}, "default_role": "staff", "join": {"allowed_roles": ["staff"]}}
    assert parse_policy(doc, local_domain=DOMAIN, networks=NETWORKS).join.all_local_allowed


def test_shorthands_and_spellings() -> None:
    doc = {"sharing": {"personal_contacts": True, "blocked_file_types": ["JPG", "scr"], "max_file_mb": 0.5}}
    s = parse_policy(doc, local_domain=DOMAIN, networks=NETWORKS).sharing
    assert s.personal_contacts.enabled and not s.personal_contacts.company_domains
    assert "jpeg" in s.blocked_file_types  # one spelling per type
    assert "exe" in s.blocked_file_types  # blocking one kind of Windows program blocks them all by content
    assert s.max_file_bytes == 512 * 1024


# --------------------------------------------------------------------------------------------
# Every mistake: its path, what is wrong, how to fix it

ERRORS: list[tuple[Any, str, str]] = [
    # (document, the problem's key path, a fragment of what it says)
    ({"admin": ["@a:localhost"]}, "admin", "unknown key; did you mean 'admins'?"),
    ({"admins": "@a:localhost"}, "admins", "expected a list of Matrix user ids"),
    ({"admins": ["alice"]}, "admins[0]", "'alice' is not a Matrix user id; write it as @localpart:server"),
    ({"admins": ["@Alice:localhost"]}, "admins[0]", "(localparts are lower case)"),
    ({"observers": [42]}, "observers[0]", "expected a Matrix user id, got the number 42"),
    ({"roles": ["adviser"]}, "roles", "expected a mapping, got a list"),
    ({"roles": {"adviser": ["bob"]}}, "roles.adviser[0]", "'bob' is not a Matrix user id"),
    ({"roles": {"bad name!": []}}, "roles.bad name!", "is not a valid role name"),
    ({"teams": {"wealth": ["@a:localhost"]}}, "teams.wealth", "expected a mapping with members"),
    ({"teams": {"wealth": {"member": []}}}, "teams.wealth.member", "did you mean 'members'?"),
    ({"teams": {"wealth": {"members": [], "roles": ["boss"]}}}, "teams.wealth.roles[0]",
     "'boss' is not a role defined under roles; no roles are defined yet"),
    ({"default_role": "staff"}, "default_role", "'staff' is not a role defined under roles"),
    ({"join": []}, "join", "expected a mapping, got a list"),
    ({"join": {"alowed_roles": []}}, "join.alowed_roles", "did you mean 'allowed_roles'?"),
    ({"roles": {"adviser": []}, "join": {"allowed_roles": ["advisor"]}}, "join.allowed_roles[0]",
     "'advisor' is not a role defined under roles; the roles are adviser"),
    ({"join": {"allowed_teams": ["wealth"]}}, "join.allowed_teams[0]", "'wealth' is not a team defined under teams"),
    ({"join": {"allowed_servers": ["https://partner.example"]}}, "join.allowed_servers[0]", "is not a server name"),
    ({"join": {"allowed_servers": ["localhost"]}}, "join.allowed_servers[0]", "the company's own homeserver"),
    ({"join": {"max_external": -1}}, "join.max_external", "-1 is out of range; use a number from 0 to 1000"),
    ({"join": {"max_external": "2"}}, "join.max_external", "expected a whole number"),
    ({"join": {"senior_role": "boss"}}, "join.senior_role", "'boss' is not a role"),
    ({"roles": {"staff": []}, "default_role": "staff", "join": {"senior_role": "staff"}}, "join.senior_role",
     "also default_role"),
    ({"sharing": {"max_file_mb": 0}}, "sharing.max_file_mb", "out of range; use a number above 0"),
    ({"sharing": {"max_file_mb": "20 MB"}}, "sharing.max_file_mb", "expected a number of megabytes"),
    ({"sharing": {"blocked_file_types": [".exe"]}}, "sharing.blocked_file_types[0]",
     "not a plain file extension; write just the letters after the dot, e.g. exe"),
    ({"sharing": {"blocked_file_types": ["*.bat"]}}, "sharing.blocked_file_types[0]", "e.g. bat"),
    ({"sharing": {"blocked_file_types": [7]}}, "sharing.blocked_file_types[0]", "expected a file extension"),
    ({"sharing": {"blocked_labels": [""]}}, "sharing.blocked_labels[0]", "is empty"),
    ({"sharing": {"blocked_labels": ["internal only", "Internal-Only"]}}, "sharing.blocked_labels[1]",
     "is the same label as 'internal only'"),
    ({"sharing": {"card_numbers": "yes"}}, "sharing.card_numbers", "expected true or false"),
    ({"sharing": {"ibans": 1}}, "sharing.ibans", "expected true or false"),
    ({"sharing": {"personal_contacts": "on"}}, "sharing.personal_contacts", "expected a mapping"),
    ({"sharing": {"personal_contacts": {"enabled": "true"}}}, "sharing.personal_contacts.enabled",
     "expected true or false"),
    ({"sharing": {"personal_contacts": {"company_domain": []}}}, "sharing.personal_contacts.company_domain",
     "did you mean 'company_domains'?"),
    ({"sharing": {"personal_contacts": {"company_domains": ["@example.com"]}}},
     "sharing.personal_contacts.company_domains[0]", "write example.com"),
    ({"sharing": {"personal_contacts": {"company_phones": ["12 34"]}}},
     "sharing.personal_contacts.company_phones[0]", "is not a phone number; write it in quotes with the country code"),
    ({"sharing": {"personal_contacts": {"company_phones": [4930123456]}}},
     "sharing.personal_contacts.company_phones[0]", "is not a phone number"),
    ({"sharing": {"personal_contacts": {"company_handles": ["acme"]}}},
     "sharing.personal_contacts.company_handles[0]", "write '@name' or a link like t.me/name"),
    ({"sharing": {"custom_patterns": [{"name": "a", "regex": "a"}, {"name": "falcon", "regex": "falcon)"}]}},
     "sharing.custom_patterns[1].regex", "invalid regular expression (unbalanced parenthesis); fix the pattern"),
    ({"sharing": {"custom_patterns": [{"name": "x", "regex": "(?i)secret.*|"}]}}, "sharing.custom_patterns[0].regex",
     "can match empty text"),
    ({"sharing": {"custom_patterns": [{"name": "x", "regex": "\\b"}]}}, "sharing.custom_patterns[0].regex",
     "can match empty text"),
    ({"sharing": {"custom_patterns": [{"regex": "falcon"}]}}, "sharing.custom_patterns[0].name", "missing"),
    ({"sharing": {"custom_patterns": [{"name": "x"}]}}, "sharing.custom_patterns[0].regex", "missing"),
    ({"sharing": {"custom_patterns": [{"name": "x", "regex": "y", "flags": "i"}]}},
     "sharing.custom_patterns[0].flags", "unknown key"),
    ({"sharing": {"custom_patterns": ["falcon"]}}, "sharing.custom_patterns[0]", "expected a mapping with name and regex"),
    ({"sharing": {"custom_patterns": [{"name": "x", "regex": "a"}, {"name": "x", "regex": "b"}]}},
     "sharing.custom_patterns[1].name", "used by another pattern"),
    ({"disclaimers": {"default": ""}}, "disclaimers.default", "is empty; write the notice text"),
    ({"disclaimers": {"networks": {"telegarm": "x"}}}, "disclaimers.networks.telegarm", "did you mean 'telegram'?"),
    ({"disclaimers": {"regions": {"german": "x"}}}, "disclaimers.regions.german", "not a language/region code"),
    ({"assignment": {"mode": "random"}}, "assignment.mode", "is not a mode; use one of invite, round_robin"),
    ({"assignment": {"mode": "round_robin"}}, "assignment.team", "missing; round_robin needs the team"),
    ({"assignment": {"mode": "round_robin", "team": "wealth"}}, "assignment.team", "'wealth' is not a team"),
    ({"teams": {"wealth": {"members": []}}, "assignment": {"mode": "round_robin", "team": "wealth"}},
     "assignment.team", "has no members"),
    ({"assignment": {"mode": "desk"}}, "assignment.desk", "desk mode invites everyone listed here"),
    ({"assignment": {"mode": "account_owner"}}, "assignment.account_owners", "account_owner mode needs"),
    ({"assignment": {"account_owners": {"business:abc": "@a:localhost"}}}, "assignment.account_owners.business:abc",
     "write it as network:account"),
    ({"assignment": {"account_owners": {"telegram:business:abc": "alice"}}},
     "assignment.account_owners.telegram:business:abc", "is not a Matrix user id"),
    ({"commands": {"prefix": "! hl"}}, "commands.prefix", "without spaces"),
    ({"commands": {"prefx": "!hl"}}, "commands.prefx", "did you mean 'prefix'?"),
    (["admins"], "policies", "expected a mapping of keys, got a list"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "path", "fragment"), ERRORS, ids=[e[1] + ":" + e[2][:24] for e in ERRORS])
def test_each_problem_names_its_path_and_the_fix(doc: Any, path: str, fragment: str) -> None:
    problems = problems_of(doc)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.startswith(f"{path}: "), problem
    assert fragment in problem, problem
    # What was wrong, then (after ';') what to do about it.
    assert "; " in problem.removeprefix(f"{path}: "), problem


def test_all_problems_are_reported_at_once() -> None:
    doc = load_example()
    doc["admins"] = ["admin"]
    doc["roles"]["senior"] = ["@senior:localhost", "carol"]
    doc["join"]["max_external"] = 5000
    doc["sharing"]["custom_patterns"].append({"name": "broken", "regex": "(unclosed"})
    doc["sharing"]["blocked_file_types"].append(".exe")
    doc["assignment"]["mode"] = "lottery"
    doc["unknown"] = 1
    problems = problems_of(doc)
    paths = [p.split(": ", 1)[0] for p in problems]
    assert sorted(paths) == sorted([
        "unknown", "admins[0]", "roles.senior[1]", "join.max_external", "sharing.blocked_file_types[13]",
        "sharing.custom_patterns[1].regex", "assignment.mode",
    ])  # fmt: skip


def test_error_renders_every_problem() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy({"admins": ["x"], "observers": ["y"]}, local_domain=DOMAIN, networks=NETWORKS)
    text = str(info.value)
    assert text.startswith("policies: 2 problem(s):")
    assert "  - admins[0]:" in text and "  - observers[0]:" in text


def test_parse_result_is_a_policy() -> None:
    assert isinstance(parse_policy(load_example(), local_domain=DOMAIN, networks=NETWORKS), Policy)
