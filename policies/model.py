"""The policy document (the ``policies`` section) as a typed, validated :class:`Policy`.

:func:`parse_policy` checks the whole document and raises one :class:`PolicyError` listing every
problem, each starting with its key path (``sharing.custom_patterns[1].regex: ...``) and saying
what is wrong and how to fix it, so a compliance officer fixes the file in one pass. A missing or
empty document is a permissive policy: everything allowed, nobody admin.

Everything the engine looks up per message is computed here, once: user → roles and teams, the
set of senior users, compiled patterns, expanded file-type sets. The engine then only does set
look-ups and regular-expression scans. Pure: no I/O, no imports from the rest of the project.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .reader import Checks, value_kind
from .hours import BusinessHours, parse_duration, parse_hours
from .detectors import (
    SNIFF_FAMILIES,
    ContactRules,
    normalize_extension,
    normalize_handle,
    normalize_label,
    normalize_phone,
)
from .lexicon import (
    DIRECTIONS,
    LANGUAGES,
    LEXICON_ACTIONS,
    Lexicon,
    LexiconIndex,
    Term,
    TermError,
    compile_term,
)

__all__ = [
    "ASSIGNMENT_MODES",
    "Absence",
    "Assignment",
    "Commands",
    "CustomPattern",
    "DEFAULT_CLOSE_REASONS",
    "Disclaimers",
    "JoinRules",
    "Lexicon",
    "Outreach",
    "Policy",
    "PolicyError",
    "ServiceLevels",
    "SharingRules",
    "Supervision",
    "Team",
    "parse_policy",
]

#: How employees are chosen for a new portal.
ASSIGNMENT_MODES = ("invite", "round_robin", "account_owner", "desk")

_USER_ID = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(?::\d{1,5})?$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_SERVER = re.compile(rf"^(?=.{{1,253}}(?::\d{{1,5}})?$){_LABEL}(?:\.{_LABEL})*(?::\d{{1,5}})?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_EXTENSION = re.compile(r"^[a-z0-9]{1,12}$")
_REGION = re.compile(r"^[a-z]{2,3}(?:[-_][a-z0-9]{2,8})?$", re.I)
_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?)*$")
_PHONE_TEXT = re.compile(r"^\+?[0-9 ()./\-]+$")
_PREFIX = re.compile(r"^\S{1,16}$")
_REGEX_HOWTO = "write a regular expression in quotes, e.g. '(?i)\\bproject\\s+falcon\\b'"
#: Strings every custom pattern is tried on; a zero-length match on any means the pattern can
#: match empty text, which would flag every message.
_EMPTY_PROBES = ("", " ", "a", "A", "0", "a b", "abc 123 xyz", "\n", "_-.")
_MAX_FILE_MB = 100_000
_MAX_EXTERNAL = 1000

_TOP_KEYS = ("admins", "observers", "roles", "teams", "default_role", "join", "sharing", "disclaimers",
             "assignment", "commands", "retention", "outreach", "sla", "absence", "supervision")  # fmt: skip
_RETENTION_KEYS = ("default", "networks")
_TEAM_KEYS = ("members", "roles", "hours", "tz", "managers")
_OUTREACH_KEYS = ("allowed_roles", "allowed_teams", "link_expiry")
_SLA_KEYS = (
    "remind_after",
    "escalate_after",
    "supervisor_after",
    "supervisor_role",
    "hours",
    "tz",
    "out_of_hours",
)
_ABSENCE_KEYS = ("notice", "fallback")
_NOTICE_KEYS = ("default", "networks", "regions")
_DEFAULT_LINK_EXPIRY_S = 7 * 86400
_MAX_LINK_EXPIRY_S = 365 * 86400
_JOIN_KEYS = ("allowed_roles", "allowed_teams", "allowed_servers", "max_external", "senior_role")
_SHARING_KEYS = ("max_file_mb", "blocked_file_types", "blocked_labels", "card_numbers", "ibans",
                 "personal_contacts", "custom_patterns")  # fmt: skip
_CONTACT_KEYS = ("enabled", "company_domains", "company_phones", "company_handles")
_PATTERN_KEYS = ("name", "regex")
_DISCLAIMER_KEYS = ("default", "networks", "regions")
_ASSIGNMENT_KEYS = ("mode", "team", "desk", "account_owners")
_COMMAND_KEYS = ("prefix",)
_SUPERVISION_KEYS = ("lexicons", "sample_rate", "reviewer_role", "supervisor_role", "close_reasons")
_LEXICON_KEYS = ("direction", "action", "terms", "exclude")
#: How a reviewer may close a supervision item when the policy names none.
DEFAULT_CLOSE_REASONS = ("no_issue", "coached", "false_positive", "reported")


@dataclass(frozen=True)
class Retention:
    """How long client conversations are kept, in days (None: for ever). Legal holds win."""

    default_days: int | None = None
    networks: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def days_for(self, network: str) -> int | None:
        return self.networks.get(network, self.default_days)


class PolicyError(Exception):
    """The policy document is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(
            [f"policies: {len(self.problems)} problem(s):"] + [f"  - {p}" for p in self.problems]
        )


# --------------------------------------------------------------------------------------------
# The typed tree


@dataclass(frozen=True)
class Team:
    """A named group of employees; ``members`` keeps the document's order, which is the
    round-robin order. Team ``roles`` are given to every member."""

    name: str
    members: tuple[str, ...] = ()
    roles: frozenset[str] = frozenset()
    #: The team's business hours (None: those of ``sla``), when the reminder clock runs.
    hours: BusinessHours | None = None
    #: Invited read-only to the conversations of the team's members, and to no others.
    managers: tuple[str, ...] = ()


@dataclass(frozen=True)
class JoinRules:
    """Who may be in a portal. ``allowed_users`` (employees with an allowed role or team) and
    ``all_local_allowed`` are precomputed so a join is decided with one set look-up."""

    allowed_roles: frozenset[str] = frozenset()
    allowed_teams: frozenset[str] = frozenset()
    allowed_servers: frozenset[str] = frozenset()
    max_external: int | None = None
    senior_role: str | None = None
    allowed_users: frozenset[str] = frozenset()
    all_local_allowed: bool = True
    senior_users: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CustomPattern:
    """A company-specific pattern (a project codename, an internal reference format)."""

    name: str
    regex: re.Pattern[str]


@dataclass(frozen=True)
class SharingRules:
    """What may be sent to clients. ``blocked_file_types`` is expanded at parse time with the
    sniffed kinds whose family the policy blocks (blocking 'scr' also blocks anything whose
    bytes say 'exe'); ``blocked_labels`` maps normalised label → the label as written."""

    max_file_bytes: int | None = None
    blocked_file_types: frozenset[str] = frozenset()
    blocked_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    card_numbers: bool = False
    ibans: bool = False
    personal_contacts: ContactRules = ContactRules()
    custom_patterns: tuple[CustomPattern, ...] = ()


@dataclass(frozen=True)
class Disclaimers:
    """Notice posted to the client; the most specific one wins (region, network, default).
    Region keys are lower case with '-' ('pt-br')."""

    default: str | None = None
    networks: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    regions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


#: Any per-client text chosen like a disclaimer (region, then network, then default).
Notices = Disclaimers


@dataclass(frozen=True)
class Assignment:
    """Who a new portal goes to (see :func:`policies.engine.pick_assignees`)."""

    mode: str = "invite"
    team: str | None = None
    desk: tuple[str, ...] = ()
    account_owners: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Commands:
    prefix: str = "!hl"


@dataclass(frozen=True)
class Outreach:
    """Who may start a conversation with a client (a WhatsApp template, a Telegram invitation
    link). With no roles or teams named, everyone the join rules let into portals may."""

    allowed_roles: frozenset[str] = frozenset()
    allowed_teams: frozenset[str] = frozenset()
    #: How long an invitation link stays valid, in seconds.
    link_expiry_s: int = _DEFAULT_LINK_EXPIRY_S
    #: Precomputed: the users the roles and teams above name (when ``restricted``).
    allowed_users: frozenset[str] = frozenset()
    restricted: bool = False


@dataclass(frozen=True)
class ServiceLevels:
    """How long a client may wait for an answer: after ``remind_after_s`` of business time the
    assignee is reminded, after ``escalate_after_s`` the team is called in, after
    ``supervisor_after_s`` the ``supervisor_role`` is told. None: that step is off."""

    remind_after_s: int | None = None
    escalate_after_s: int | None = None
    supervisor_after_s: int | None = None
    supervisor_role: str | None = None
    #: Business hours (None: always open); a team's own hours win.
    hours: BusinessHours | None = None
    #: Told to a client who writes while the company is closed (None: nothing is sent).
    out_of_hours: Notices = Notices()

    @property
    def enabled(self) -> bool:
        return any(
            s is not None for s in (self.remind_after_s, self.escalate_after_s, self.supervisor_after_s)
        )

    def steps(self) -> tuple[tuple[str, int], ...]:
        """(step, seconds) in the order they fire."""
        named = (
            ("remind", self.remind_after_s),
            ("escalate", self.escalate_after_s),
            ("supervisor", self.supervisor_after_s),
        )
        return tuple(sorted(((n, v) for n, v in named if v is not None), key=lambda step: step[1]))


@dataclass(frozen=True)
class Absence:
    """What happens while an employee is away: the notice a waiting client gets (``{cover}``
    and ``{until}`` are filled in) and who takes new clients when nobody else is left."""

    notice: Notices = Notices()
    #: Users (teams expanded) who get a new client when the assignment finds nobody available.
    fallback: tuple[str, ...] = ()


@dataclass(frozen=True)
class Supervision:
    """Review of client conversations (FINRA 3110-style supervision): messages that hit a
    lexicon, plus a random ``sample_rate`` of all messages, go to the reviewers. ``index`` is
    the lexicons compiled for matching (see :mod:`policies.lexicon`), built once here.
    ``reviewer_role`` None: the observers review; ``supervisor_role`` None: no escalation."""

    lexicons: tuple[Lexicon, ...] = ()
    #: Fraction (0..1) of all messages sampled for review whatever they say.
    sample_rate: float = 0.0
    reviewer_role: str | None = None
    supervisor_role: str | None = None
    close_reasons: tuple[str, ...] = DEFAULT_CLOSE_REASONS
    index: LexiconIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", LexiconIndex.build(self.lexicons))

    @property
    def enabled(self) -> bool:
        return bool(self.lexicons) or self.sample_rate > 0


@dataclass(frozen=True)
class Policy:
    """The whole policy, read-only. ``roles`` (role → users), ``user_roles`` and
    ``user_teams`` are the explicit memberships, roles given by teams included; ``default_role`` is added for every user
    of ``local_domain`` by :func:`policies.engine.roles_of`."""

    local_domain: str
    admins: frozenset[str] = frozenset()
    observers: frozenset[str] = frozenset()
    roles: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    teams: Mapping[str, Team] = field(default_factory=lambda: MappingProxyType({}))
    default_role: str | None = None
    join: JoinRules = JoinRules()
    sharing: SharingRules = SharingRules()
    disclaimers: Disclaimers = Disclaimers()
    assignment: Assignment = Assignment()
    commands: Commands = Commands()
    retention: Retention = Retention()
    outreach: Outreach = Outreach()
    sla: ServiceLevels = ServiceLevels()
    absence: Absence = Absence()
    supervision: Supervision = Supervision()
    user_roles: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    user_teams: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    #: Member -> the managers of the member's teams (teams.<name>.managers).
    managers_of: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    #: Everyone who manages some team.
    managers: frozenset[str] = frozenset()


# --------------------------------------------------------------------------------------------
# Reading, with every problem collected


@dataclass
class _Reader(Checks):
    """Collects problems instead of stopping at the first; each check returns None (or an
    empty value) when it reported a problem, so parsing carries on. The value checks are the
    shared ones of policies.reader, so the policy and the config word problems alike."""

    local_domain: str
    #: The networks the bridge carries (the caller's registry): per-network keys may name these.
    networks: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)

    def mapping(self, path: str, value: Any, keys: tuple[str, ...] | None, how: str) -> dict[str, Any]:
        """A section: a mapping, with only ``keys`` (None: any key)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(path, f"expected a mapping, got {value_kind(value)}; {how}")
            return {}
        if keys is not None:
            for key in value:
                if key not in keys:
                    self.unknown_key(f"{path}.{key}" if path else str(key), str(key), keys)
        return value

    def items(self, path: str, value: Any, what: str) -> list[tuple[str, Any]]:
        """A list: (item path, item) pairs."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.bad(
                path,
                f"expected a list of {what}, got {value_kind(value)}; write it as [first, second] or one '- item' per line",
            )
            return []
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]

    def text(self, path: str, value: Any, how: str) -> str | None:
        return None if value is None else self.check_text(path, value, how)

    def user(self, path: str, value: Any) -> str | None:
        how = f"write it as @localpart:server, e.g. @alice:{self.local_domain}"
        if not isinstance(value, str):
            self.bad(
                path,
                f"expected a Matrix user id, got {value_kind(value)}; {how} (in quotes: '@' starts no YAML value)",
            )
            return None
        if not _USER_ID.match(value):
            extra = (
                " (localparts are lower case)"
                if value.lower() != value and _USER_ID.match(value.lower())
                else ""
            )
            self.bad(path, f"'{value}' is not a Matrix user id{extra}; {how}")
            return None
        return value

    def users(self, path: str, value: Any) -> tuple[str, ...]:
        out: list[str] = []
        for item_path, item in self.items(path, value, "Matrix user ids"):
            user = self.user(item_path, item)
            if user is not None and user not in out:
                out.append(user)
        return tuple(out)

    def name(self, path: str, value: Any, what: str) -> str | None:
        how = f"a {what} name is letters, digits, '_', '.' or '-', e.g. 'adviser'"
        if not isinstance(value, str) or not _NAME.match(value):
            self.bad(path, f"{value_kind(value)} is not a valid {what} name; {how}")
            return None
        return value

    def boolean(self, path: str, value: Any) -> bool | None:
        return None if value is None else self.check_boolean(path, value)

    def integer(self, path: str, value: Any, low: int, high: int) -> int | None:
        return None if value is None else self.check_integer(path, value, low, high)

    def reference(
        self, path: str, value: Any, known: Mapping[str, Any], what: str, section: str
    ) -> str | None:
        name = self.name(path, value, what)
        if name is None:
            return None
        if name not in known:
            choices = (
                f"the {what}s are {', '.join(sorted(known))}" if known else f"no {what}s are defined yet"
            )
            self.bad(
                path,
                f"'{name}' is not a {what} defined under {section}; {choices}; define it there or fix the name",
            )
            return None
        return name


# --------------------------------------------------------------------------------------------
# Sections


def _parse_roles(r: _Reader, value: Any) -> dict[str, tuple[str, ...]]:
    roles: dict[str, tuple[str, ...]] = {}
    for key, members in r.mapping(
        "roles", value, None, "write it as 'role: [\"@user:server\", ...]'"
    ).items():
        name = r.name(f"roles.{key}", key, "role")
        users = r.users(f"roles.{key}", members)
        if name is not None:
            roles[name] = users
    return roles


def _parse_teams(r: _Reader, value: Any, roles: Mapping[str, Any]) -> dict[str, Team]:
    teams: dict[str, Team] = {}
    for key, body in r.mapping(
        "teams", value, None, "write it as 'team: {members: [\"@user:server\", ...]}'"
    ).items():
        path = f"teams.{key}"
        name = r.name(path, key, "team")
        if isinstance(body, list):
            r.bad(path, "expected a mapping with members (and optional roles), got a list; write it as "
                        f"{key}: {{members: [...]}}")  # fmt: skip
            continue
        body = r.mapping(path, body, _TEAM_KEYS, f"write it as {key}: {{members: [...], roles: [...]}}")
        members = r.users(f"{path}.members", body.get("members"))
        managers = r.users(f"{path}.managers", body.get("managers"))
        role_items = r.items(f"{path}.roles", body.get("roles"), "role names")
        team_roles = [r.reference(p, v, roles, "role", "roles") for p, v in role_items]
        hours = _parse_hours(r, path, body)
        if name is not None:
            teams[name] = Team(name, members, frozenset(x for x in team_roles if x), hours, managers)
    return teams


def _parse_join(r: _Reader, value: Any, roles: Mapping[str, Any], teams: Mapping[str, Team],
                default_role: str | None) -> JoinRules:  # fmt: skip
    body = r.mapping("join", value, _JOIN_KEYS, "write it as 'join:' followed by indented keys")
    allowed_roles = {r.reference(p, v, roles, "role", "roles")
                     for p, v in r.items("join.allowed_roles", body.get("allowed_roles"), "role names")}  # fmt: skip
    allowed_teams = {r.reference(p, v, teams, "team", "teams")
                     for p, v in r.items("join.allowed_teams", body.get("allowed_teams"), "team names")}  # fmt: skip
    servers: set[str] = set()
    for p, v in r.items("join.allowed_servers", body.get("allowed_servers"), "server names"):
        if not isinstance(v, str) or not _SERVER.match(v):
            r.bad(
                p,
                f"{value_kind(v)} is not a server name; write the part after ':' in user ids, e.g. partner.example",
            )
        elif v.lower() == r.local_domain.lower():
            r.bad(p, f"'{v}' is the company's own homeserver, whose users are governed by roles; remove it")
        else:
            servers.add(v.lower())
    senior = None
    if body.get("senior_role") is not None:
        senior = r.reference("join.senior_role", body["senior_role"], roles, "role", "roles")
        if senior is not None and senior == default_role:
            r.bad("join.senior_role", f"'{senior}' is also default_role, so every employee would count as senior and "
                                      "nothing is ever held; use a role with named members")  # fmt: skip
    return JoinRules(
        allowed_roles=frozenset(x for x in allowed_roles if x),
        allowed_teams=frozenset(x for x in allowed_teams if x),
        allowed_servers=frozenset(servers),
        max_external=r.integer("join.max_external", body.get("max_external"), 0, _MAX_EXTERNAL),
        senior_role=senior,
    )


def _parse_file_types(r: _Reader, value: Any) -> frozenset[str]:
    types: set[str] = set()
    for p, v in r.items("sharing.blocked_file_types", value, "file extensions"):
        if not isinstance(v, str):
            r.bad(p, f"expected a file extension, got {value_kind(v)}; write it like exe")
            continue
        plain = v.strip().lower()
        if not _EXTENSION.match(plain):
            fix = plain.lstrip("*.") if _EXTENSION.match(plain.lstrip("*.")) else "exe"
            r.bad(p, f"'{v}' is not a plain file extension; write just the letters after the dot, e.g. {fix}")
            continue
        types.add(normalize_extension(plain))
    for sniffed, family in SNIFF_FAMILIES.items():
        if types & family:
            types.add(sniffed)
    return frozenset(types)


def _parse_labels(r: _Reader, value: Any) -> Mapping[str, str]:
    labels: dict[str, str] = {}
    for p, v in r.items("sharing.blocked_labels", value, "labels"):
        label = r.text(p, v, "write the label as employees type it, e.g. 'internal only'")
        if label is None:
            continue
        key = normalize_label(label)
        if not key:
            r.bad(p, f"'{label}' has no letters or digits; write a label like 'restricted'")
        elif key in labels:
            r.bad(
                p,
                f"'{label}' is the same label as '{labels[key]}' (case, spaces, '-' and '_' do not count); remove one",
            )
        else:
            labels[key] = label.strip()
    return MappingProxyType(labels)


def _parse_contacts(r: _Reader, value: Any) -> ContactRules:
    path = "sharing.personal_contacts"
    if isinstance(value, bool) or value is None:
        return ContactRules(enabled=bool(value))
    body = r.mapping(
        path, value, _CONTACT_KEYS, "write true, false, or a mapping with enabled and the company_* lists"
    )
    enabled = r.boolean(f"{path}.enabled", body.get("enabled"))
    domains: set[str] = set()
    for p, v in r.items(f"{path}.company_domains", body.get("company_domains"), "domains"):
        d = v.strip().lower().rstrip(".") if isinstance(v, str) else None
        if d is None or not _DOMAIN.match(d):
            fix = f"write {d.split('@')[-1]}" if d and "@" in d else "write a domain like example.com"
            r.bad(p, f"{value_kind(v)} is not a mail domain; {fix} (no '@', no scheme)")
        else:
            domains.add(d)
    phones: set[str] = set()
    for p, v in r.items(f"{path}.company_phones", body.get("company_phones"), "phone numbers"):
        digits = normalize_phone(v) if isinstance(v, str) and _PHONE_TEXT.match(v.strip()) else ""
        if not 7 <= len(digits) <= 15:
            r.bad(
                p,
                f"{value_kind(v)} is not a phone number; write it in quotes with the country code, e.g. '+49 30 1234567'",
            )
        else:
            phones.add(digits)
    handles: set[str] = set()
    links: set[tuple[str, str]] = set()
    for p, v in r.items(f"{path}.company_handles", body.get("company_handles"), "handles or links"):
        try:
            handle = normalize_handle(v) if isinstance(v, str) else None
        except ValueError:
            handle = None
        if handle is None:
            r.bad(
                p,
                f"{value_kind(v)} is not a handle or messenger link; write '@name' or a link like t.me/name or wa.me/4930123456",
            )
        elif isinstance(handle, tuple):
            links.add(handle)
        else:
            handles.add(handle)
    return ContactRules(
        enabled=True if enabled is None else enabled,
        company_domains=frozenset(domains),
        company_phones=frozenset(phones),
        company_handles=frozenset(handles),
        company_links=frozenset(links),
    )


def _compile_pattern(r: _Reader, path: str, regex: str) -> re.Pattern[str] | None:
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        r.bad(path, f"invalid regular expression ({exc.msg}); fix the pattern")
        return None
    except (RecursionError, OverflowError):
        r.bad(path, "regular expression is too complex; simplify the pattern")
        return None
    if any(m.end() == m.start() for probe in _EMPTY_PROBES for m in compiled.finditer(probe)):
        r.bad(path, "the pattern can match empty text and would flag every message; "
                    "make it require at least one character, e.g. replace '*' with '+'")  # fmt: skip
        return None
    return compiled


def _parse_patterns(r: _Reader, value: Any) -> tuple[CustomPattern, ...]:
    out: list[CustomPattern] = []
    names: set[str] = set()
    for p, item in r.items("sharing.custom_patterns", value, "patterns"):
        if not isinstance(item, dict):
            r.bad(
                p,
                f'expected a mapping with name and regex, got {value_kind(item)}; write {{name: "...", regex: "..."}}',
            )
            continue
        body = r.mapping(p, item, _PATTERN_KEYS, "")
        name = r.text(
            f"{p}.name",
            body.get("name"),
            "give the pattern a name that the notice can show, e.g. 'project codename'",
        )
        if body.get("name") is None:
            r.bad(
                f"{p}.name",
                "missing; give the pattern a name that the notice can show, e.g. 'project codename'",
            )
        elif name is not None and name in names:
            r.bad(f"{p}.name", f"'{name}' is used by another pattern; give each pattern its own name")
        regex = r.text(f"{p}.regex", body.get("regex"), _REGEX_HOWTO)
        if body.get("regex") is None:
            r.bad(f"{p}.regex", f"missing; {_REGEX_HOWTO}")
        compiled = _compile_pattern(r, f"{p}.regex", regex) if regex is not None else None
        if name is not None and compiled is not None:
            names.add(name)
            out.append(CustomPattern(name, compiled))
    return tuple(out)


def _parse_sharing(r: _Reader, value: Any) -> SharingRules:
    body = r.mapping("sharing", value, _SHARING_KEYS, "write it as 'sharing:' followed by indented keys")
    max_bytes = None
    mb = body.get("max_file_mb")
    if mb is not None:
        if isinstance(mb, bool) or not isinstance(mb, (int, float)):
            r.bad(
                "sharing.max_file_mb", f"expected a number of megabytes, got {value_kind(mb)}; write e.g. 20"
            )
        elif not 0 < mb <= _MAX_FILE_MB:
            r.bad(
                "sharing.max_file_mb",
                f"{mb} is out of range; use a number above 0 and at most {_MAX_FILE_MB}",
            )
        else:
            max_bytes = int(mb * 1024 * 1024)
    return SharingRules(
        max_file_bytes=max_bytes,
        blocked_file_types=_parse_file_types(r, body.get("blocked_file_types")),
        blocked_labels=_parse_labels(r, body.get("blocked_labels")),
        card_numbers=bool(r.boolean("sharing.card_numbers", body.get("card_numbers"))),
        ibans=bool(r.boolean("sharing.ibans", body.get("ibans"))),
        personal_contacts=_parse_contacts(r, body.get("personal_contacts")),
        custom_patterns=_parse_patterns(r, body.get("custom_patterns")),
    )


def _parse_notices(r: _Reader, path: str, value: Any) -> Disclaimers:
    """Texts for clients chosen by region, then network, then default (disclaimers and the
    other notices)."""
    how = "write the notice text in quotes"
    body = r.mapping(path, value, _NOTICE_KEYS, f"write it as '{path}:' with default, networks, regions")
    networks: dict[str, str] = {}
    for key, text in r.mapping(
        f"{path}.networks", body.get("networks"), None, "write it as 'telegram: \"...\"'"
    ).items():
        if key not in r.networks:
            r.unknown_key(f"{path}.networks.{key}", str(key), r.networks)
        elif (t := r.text(f"{path}.networks.{key}", text, how)) is not None:
            networks[key] = t
    regions: dict[str, str] = {}
    for key, text in r.mapping(
        f"{path}.regions", body.get("regions"), None, "write it as 'de: \"...\"'"
    ).items():
        if not isinstance(key, str) or not _REGION.match(key):
            r.bad(f"{path}.regions.{key}", "not a language/region code; write a code like de, en-gb or pt-BR")
        elif (t := r.text(f"{path}.regions.{key}", text, how)) is not None:
            regions[key.lower().replace("_", "-")] = t
    return Disclaimers(
        default=r.text(f"{path}.default", body.get("default"), how),
        networks=MappingProxyType(networks),
        regions=MappingProxyType(regions),
    )


def _parse_disclaimers(r: _Reader, value: Any) -> Disclaimers:
    return _parse_notices(r, "disclaimers", value)


def _parse_assignment(r: _Reader, value: Any, teams: Mapping[str, Team]) -> Assignment:
    body = r.mapping(
        "assignment", value, _ASSIGNMENT_KEYS, "write it as 'assignment:' followed by indented keys"
    )
    mode = body.get("mode", "invite")
    if mode not in ASSIGNMENT_MODES:
        r.bad(
            "assignment.mode", f"{value_kind(mode)} is not a mode; use one of {', '.join(ASSIGNMENT_MODES)}"
        )
        mode = "invite"
    team = None
    if body.get("team") is not None:
        team = r.reference("assignment.team", body["team"], teams, "team", "teams")
        if team is not None and not teams[team].members:
            r.bad(
                "assignment.team",
                f"team '{team}' has no members to assign portals to; add members under teams.{team}",
            )
    elif mode == "round_robin":
        r.bad(
            "assignment.team",
            "missing; round_robin needs the team whose members take turns, e.g. team: wealth",
        )
    desk = r.users("assignment.desk", body.get("desk"))
    if mode == "desk" and not body.get("desk"):
        r.bad(
            "assignment.desk",
            "missing or empty; desk mode invites everyone listed here, so list at least one user",
        )
    owners: dict[str, str] = {}
    for key, owner in r.mapping("assignment.account_owners", body.get("account_owners"), None,
                                "write it as '\"telegram:business:abc\": \"@alice:server\"'").items():  # fmt: skip
        path = f"assignment.account_owners.{key}"
        if not isinstance(key, str) or key.split(":", 1)[0] not in r.networks or ":" not in key:
            r.bad(path, "not a company account; write it as network:account, e.g. telegram:business:abc "
                        f"(networks: {', '.join(r.networks)})")  # fmt: skip
        elif (user := r.user(path, owner)) is not None:
            owners[key] = user
    if mode == "account_owner" and not body.get("account_owners"):
        r.bad(
            "assignment.account_owners",
            "missing or empty; account_owner mode needs the company accounts and their owners, "
            'e.g. "telegram:business:abc": "@alice:server"',
        )
    return Assignment(mode=mode, team=team, desk=desk, account_owners=MappingProxyType(owners))


def _parse_hours(r: _Reader, path: str, body: Mapping[str, Any]) -> BusinessHours | None:
    """``hours`` and ``tz`` of a section (a team, ``sla``): both or neither."""
    hours, tz = body.get("hours"), body.get("tz")
    if hours is None and tz is None:
        return None
    if hours is None:
        r.bad(f"{path}.hours", 'missing; a time zone needs business hours, e.g. hours: "Mon-Fri 08:00-18:00"')
        return None
    if not isinstance(hours, str) or (tz is not None and not isinstance(tz, str)):
        r.bad(f"{path}.hours", 'expected text like "Mon-Fri 08:00-18:00" and tz like Europe/Berlin')
        return None
    try:
        return parse_hours(hours, tz or "UTC")
    except ValueError as e:
        r.bad(f"{path}.tz" if tz and "zone" in str(e).lower() else f"{path}.hours", str(e))
        return None


def _duration(r: _Reader, path: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except (ValueError, TypeError) as e:
        r.bad(
            path,
            str(e)
            if isinstance(e, ValueError)
            else f"{value_kind(value)} is not a duration; write e.g. 15m, 1h or 2h30m",
        )
        return None


def _users_or_teams(r: _Reader, path: str, value: Any, teams: Mapping[str, Team]) -> tuple[str, ...]:
    """Users, where ``team:NAME`` stands for the team's members."""
    out: list[str] = []
    for p, item in r.items(path, value, "Matrix user ids or team:NAME"):
        if isinstance(item, str) and item.startswith("team:"):
            team = r.reference(p, item[5:], teams, "team", "teams")
            out.extend(teams[team].members if team else ())
        elif (user := r.user(p, item)) is not None:
            out.append(user)
    return tuple(dict.fromkeys(out))


def _parse_outreach(r: _Reader, value: Any, roles: Mapping[str, Any], teams: Mapping[str, Team]) -> Outreach:
    body = r.mapping("outreach", value, _OUTREACH_KEYS, "write it as 'outreach: {allowed_roles: [adviser]}'")
    allowed_roles = {r.reference(p, v, roles, "role", "roles")
                     for p, v in r.items("outreach.allowed_roles", body.get("allowed_roles"), "role names")}  # fmt: skip
    allowed_teams = {r.reference(p, v, teams, "team", "teams")
                     for p, v in r.items("outreach.allowed_teams", body.get("allowed_teams"), "team names")}  # fmt: skip
    expiry = _duration(r, "outreach.link_expiry", body.get("link_expiry"))
    if expiry is not None and expiry > _MAX_LINK_EXPIRY_S:
        r.bad(
            "outreach.link_expiry",
            "at most 365d; a link that never expires is a standing invitation to anyone who finds it",
        )
        expiry = None
    return Outreach(
        allowed_roles=frozenset(x for x in allowed_roles if x),
        allowed_teams=frozenset(x for x in allowed_teams if x),
        link_expiry_s=expiry or _DEFAULT_LINK_EXPIRY_S,
        restricted=bool(body.get("allowed_roles") or body.get("allowed_teams")),
    )


def _parse_sla(r: _Reader, value: Any, roles: Mapping[str, Any]) -> ServiceLevels:
    body = r.mapping("sla", value, _SLA_KEYS, "write it as 'sla:' followed by indented keys")
    supervisor = None
    if body.get("supervisor_role") is not None:
        supervisor = r.reference("sla.supervisor_role", body["supervisor_role"], roles, "role", "roles")
    after = {
        key: _duration(r, f"sla.{key}", body.get(key))
        for key in ("remind_after", "escalate_after", "supervisor_after")
    }
    if after["supervisor_after"] is not None and body.get("supervisor_role") is None:
        r.bad(
            "sla.supervisor_role",
            "missing; supervisor_after needs the role whose members are told, e.g. supervisor_role: senior",
        )
    named = [(k, v) for k, v in after.items() if v is not None]
    for (k1, v1), (k2, v2) in zip(named, named[1:]):
        if v2 <= v1:
            r.bad(f"sla.{k2}", f"must be longer than {k1} ({v1 // 60} min): the steps come one after another")
    return ServiceLevels(
        remind_after_s=after["remind_after"],
        escalate_after_s=after["escalate_after"],
        supervisor_after_s=after["supervisor_after"],
        supervisor_role=supervisor,
        hours=_parse_hours(r, "sla", body),
        out_of_hours=_parse_notices(r, "sla.out_of_hours", body.get("out_of_hours")),
    )


def _parse_absence(r: _Reader, value: Any, teams: Mapping[str, Team]) -> Absence:
    body = r.mapping("absence", value, _ABSENCE_KEYS, "write it as 'absence:' with notice and fallback")
    return Absence(
        notice=_parse_notices(r, "absence.notice", body.get("notice")),
        fallback=_users_or_teams(r, "absence.fallback", body.get("fallback"), teams),
    )


_PERIOD = re.compile(r"^\s*(\d{1,5})\s*(d|days?|y|years?)\s*$", re.IGNORECASE)


def _period_days(r: _Reader, path: str, value: Any) -> int | None:
    """``2555``, ``"7y"``, ``"7 years"``, ``"90 days"`` → days (a year counts 366 days, so a
    period in years is never cut short)."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100_000:
        return value
    match = _PERIOD.match(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        r.bad(
            path,
            f'{value_kind(value)} is not a retention period; write a number of days (e.g. 2555) or years (e.g. "7y")',
        )
        return None
    amount = int(match.group(1))
    return amount * 366 if match.group(2).lower().startswith("y") else amount


def _parse_retention(r: _Reader, value: Any) -> Retention:
    body = r.mapping(
        "retention",
        value,
        _RETENTION_KEYS,
        "write it as 'retention: {default: 7y, networks: {telegram: 6y}}'",
    )
    default = (
        _period_days(r, "retention.default", body["default"]) if body.get("default") is not None else None
    )
    networks: dict[str, int] = {}
    raw = body.get("networks") or {}
    if not isinstance(raw, dict):
        r.bad("retention.networks", f"expected a mapping of network -> period, got {value_kind(raw)}")
        raw = {}
    for network, period in raw.items():
        path = f"retention.networks.{network}"
        if network not in r.networks:
            r.bad(path, f"unknown network; use one of {', '.join(r.networks)}")
            continue
        days = _period_days(r, path, period)
        if days is not None:
            networks[network] = days
    return Retention(default_days=default, networks=MappingProxyType(networks))


_TERMS_HOWTO = (
    'write a list like ["risk free", "guarantee* NEAR/3 return*"], or per language {en: [...], de: [...]}'
)


def _parse_term_list(r: _Reader, path: str, value: Any, language: str | None) -> list[Term]:
    out: list[Term] = []
    for p, item in r.items(path, value, "terms"):
        if not isinstance(item, str):
            r.bad(p, f'expected a term in quotes, got {value_kind(item)}; write e.g. "risk free"')
            continue
        try:
            out.append(compile_term(item, language))
        except TermError as e:
            r.bad(p, str(e))
    return out


def _parse_terms(r: _Reader, path: str, value: Any) -> tuple[Term, ...]:
    """A list (every language) or a mapping language -> list; each term compiled now, so a
    message is only matched, never parsed."""
    if not isinstance(value, dict):
        return tuple(_parse_term_list(r, path, value, None))
    out: list[Term] = []
    for key, terms in value.items():
        lang = key.lower() if isinstance(key, str) else None
        if lang not in LANGUAGES:
            base = re.split(r"[-_]", lang or "")[0]
            fix = (
                f"terms are per language, not per region: write {base}"
                if base in LANGUAGES
                else "write a two-letter ISO 639-1 code such as en or de"
            )
            r.bad(f"{path}.{key}", f"{value_kind(key)} is not a language code; {fix}")
            continue
        out.extend(_parse_term_list(r, f"{path}.{key}", terms, lang))
    return tuple(out)


def _parse_lexicon(r: _Reader, path: str, key: Any, value: Any) -> Lexicon | None:
    name = r.name(path, key, "lexicon")
    if isinstance(value, list):
        r.bad(path, f"expected a mapping with terms (and direction, action, exclude), got a list; write it as "
                    f"{key}: {{terms: [...]}}")  # fmt: skip
        return None
    body = r.mapping(path, value, _LEXICON_KEYS, f"write it as {key}: {{direction: outbound, terms: [...]}}")
    direction = body.get("direction", "both")
    if direction not in DIRECTIONS:
        r.bad(f"{path}.direction", f"{value_kind(direction)} is not a direction; use inbound (client to company), "
                                   "outbound (company to client) or both")  # fmt: skip
        direction = None
    action = body.get("action", "alert")
    if action not in LEXICON_ACTIONS:
        r.bad(f"{path}.action", f"{value_kind(action)} is not an action; use alert (tell the reviewers) or "
                                "hold (also keep an outbound message until a reviewer releases it)")  # fmt: skip
        action = None
    elif action == "hold" and direction is not None and direction != "outbound":
        r.bad(f"{path}.action", f"hold needs direction: outbound (this lexicon scans {direction}), since an inbound "
                                "message has already reached the company; set direction: outbound or use action: alert")  # fmt: skip
    if not body.get("terms"):
        r.bad(f"{path}.terms", f"missing or empty; a lexicon needs at least one term: {_TERMS_HOWTO}")
    terms = _parse_terms(r, f"{path}.terms", body.get("terms"))
    exclude = _parse_terms(r, f"{path}.exclude", body.get("exclude"))
    if name is None or direction is None or action is None or not terms:
        return None
    return Lexicon(name=name, terms=terms, exclude=exclude, direction=direction, action=action)


def _parse_sample_rate(r: _Reader, value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        r.bad("supervision.sample_rate", f"expected a fraction from 0 to 1, got {value_kind(value)}; "
                                         "write e.g. 0.01 to review 1% of all messages")  # fmt: skip
        return 0.0
    if not 0 <= value <= 1:
        r.bad(
            "supervision.sample_rate",
            f"{value} is out of range; use a fraction from 0 to 1, e.g. 0.01 for 1%",
        )
        return 0.0
    return float(value)


def _parse_close_reasons(r: _Reader, value: Any) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_CLOSE_REASONS
    path = "supervision.close_reasons"
    reasons: list[str] = []
    for p, item in r.items(path, value, "close reasons"):
        reason = r.name(p, item, "close reason")
        if reason is not None and reason in reasons:
            r.bad(p, f"'{reason}' is listed twice; remove one")
        elif reason is not None:
            reasons.append(reason)
    if isinstance(value, list) and not value:
        r.bad(
            path,
            f"is empty, so no review could ever be closed; list reasons such as {', '.join(DEFAULT_CLOSE_REASONS)}",
        )
    return tuple(reasons) or DEFAULT_CLOSE_REASONS


def _parse_supervision(r: _Reader, value: Any, roles: Mapping[str, Any]) -> Supervision:
    body = r.mapping(
        "supervision", value, _SUPERVISION_KEYS, "write it as 'supervision:' followed by indented keys"
    )
    lexicons: list[Lexicon] = []
    for key, lex in r.mapping("supervision.lexicons", body.get("lexicons"), None,
                              "write it as 'name: {direction: outbound, terms: [...]}'").items():  # fmt: skip
        lexicon = _parse_lexicon(r, f"supervision.lexicons.{key}", key, lex)
        if lexicon is not None:
            lexicons.append(lexicon)
    found = {
        key: r.reference(f"supervision.{key}", body[key], roles, "role", "roles") if body.get(key) is not None else None
        for key in ("reviewer_role", "supervisor_role")
    }  # fmt: skip
    return Supervision(
        lexicons=tuple(lexicons),
        sample_rate=_parse_sample_rate(r, body.get("sample_rate")),
        reviewer_role=found["reviewer_role"],
        supervisor_role=found["supervisor_role"],
        close_reasons=_parse_close_reasons(r, body.get("close_reasons")),
    )


def _parse_commands(r: _Reader, value: Any) -> Commands:
    body = r.mapping("commands", value, _COMMAND_KEYS, "write it as 'commands: {prefix: \"!hl\"}'")
    prefix = body.get("prefix", "!hl")
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        r.bad(
            "commands.prefix",
            f"{value_kind(prefix)} is not a command prefix; use 1 to 16 characters without spaces, e.g. !hl",
        )
        prefix = "!hl"
    return Commands(prefix=prefix)


# --------------------------------------------------------------------------------------------
# Putting it together


_Memberships = dict[str, frozenset[str]]


def _memberships(
    roles: Mapping[str, tuple[str, ...]], teams: Mapping[str, Team]
) -> tuple[_Memberships, _Memberships]:
    """user → roles (explicit and via teams) and user → teams."""
    user_roles: dict[str, set[str]] = {}
    user_teams: dict[str, set[str]] = {}
    for role, users in roles.items():
        for user in users:
            user_roles.setdefault(user, set()).add(role)
    for team in teams.values():
        for user in team.members:
            user_teams.setdefault(user, set()).add(team.name)
            user_roles.setdefault(user, set()).update(team.roles)
    return (
        {u: frozenset(rs) for u, rs in user_roles.items()},
        {u: frozenset(ts) for u, ts in user_teams.items()},
    )


def _managers_of(teams: Mapping[str, Team]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for team in teams.values():
        for member in team.members:
            out.setdefault(member, set()).update(team.managers)
    return {u: frozenset(ms) for u, ms in out.items() if ms}


def _with_lookups(join: JoinRules, user_roles: Mapping[str, frozenset[str]], user_teams: Mapping[str, frozenset[str]],
                  default_role: str | None) -> JoinRules:  # fmt: skip
    """Join rules plus the precomputed sets the engine checks a join and a hold against."""
    restricted = bool(join.allowed_roles or join.allowed_teams)
    allowed = frozenset(
        u for u in set(user_roles) | set(user_teams)
        if user_roles.get(u, frozenset()) & join.allowed_roles or user_teams.get(u, frozenset()) & join.allowed_teams
    )  # fmt: skip
    seniors = (
        frozenset(u for u, rs in user_roles.items() if join.senior_role in rs)
        if join.senior_role
        else frozenset()
    )
    return replace(
        join,
        allowed_users=allowed,
        all_local_allowed=not restricted or (default_role is not None and default_role in join.allowed_roles),
        senior_users=seniors,
    )


def _outreach_lookups(outreach: Outreach, user_roles: Mapping[str, frozenset[str]],
                      user_teams: Mapping[str, frozenset[str]]) -> Outreach:  # fmt: skip
    allowed = frozenset(
        u for u in set(user_roles) | set(user_teams)
        if user_roles.get(u, frozenset()) & outreach.allowed_roles or user_teams.get(u, frozenset()) & outreach.allowed_teams
    )  # fmt: skip
    return replace(outreach, allowed_users=allowed)


def parse_policy(data: dict[str, Any] | None, *, local_domain: str, networks: Collection[str]) -> Policy:
    """Validate the ``policies`` section and build the :class:`Policy`; raises
    :class:`PolicyError` with every problem. ``None`` or ``{}``: everything allowed.
    ``networks``: the names the bridge carries (per-network disclaimers, retention, accounts)."""
    r = _Reader(local_domain, tuple(networks))
    if data is not None and not isinstance(data, dict):
        allowed = ", ".join(_TOP_KEYS)
        raise PolicyError(
            [f"policies: expected a mapping of keys, got {value_kind(data)}; the allowed keys are {allowed}"]
        )
    data = r.mapping("", data or {}, _TOP_KEYS, "")
    admins = r.users("admins", data.get("admins"))
    observers = r.users("observers", data.get("observers"))
    roles = _parse_roles(r, data.get("roles"))
    teams = _parse_teams(r, data.get("teams"), roles)
    default_role = None
    if data.get("default_role") is not None:
        section = "roles (an empty list is fine: 'staff: []')"
        default_role = r.reference("default_role", data["default_role"], roles, "role", section)
    join = _parse_join(r, data.get("join"), roles, teams, default_role)
    sharing = _parse_sharing(r, data.get("sharing"))
    disclaimers = _parse_disclaimers(r, data.get("disclaimers"))
    assignment = _parse_assignment(r, data.get("assignment"), teams)
    commands = _parse_commands(r, data.get("commands"))
    retention = _parse_retention(r, data.get("retention"))
    outreach = _parse_outreach(r, data.get("outreach"), roles, teams)
    sla = _parse_sla(r, data.get("sla"), roles)
    absence = _parse_absence(r, data.get("absence"), teams)
    supervision = _parse_supervision(r, data.get("supervision"), roles)
    if r.problems:
        raise PolicyError(r.problems)
    user_roles, user_teams = _memberships(roles, teams)
    return Policy(
        local_domain=local_domain,
        admins=frozenset(admins),
        observers=frozenset(observers),
        roles=MappingProxyType(
            {role: frozenset(u for u, rs in user_roles.items() if role in rs) for role in roles}
        ),
        teams=MappingProxyType(teams),
        default_role=default_role,
        join=_with_lookups(join, user_roles, user_teams, default_role),
        sharing=sharing,
        disclaimers=disclaimers,
        assignment=assignment,
        commands=commands,
        retention=retention,
        outreach=_outreach_lookups(outreach, user_roles, user_teams),
        sla=sla,
        absence=absence,
        supervision=supervision,
        user_roles=MappingProxyType(user_roles),
        user_teams=MappingProxyType(user_teams),
        managers_of=MappingProxyType(_managers_of(teams)),
        managers=frozenset(m for team in teams.values() for m in team.managers),
    )
