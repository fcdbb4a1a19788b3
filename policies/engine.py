"""Policy decisions: may this user join the portal, may this message go to the client, may this
user run that command.

:func:`decide` is a pure function of an action and a :class:`~policies.model.Policy`: no I/O,
no clock, no state, so the bridge can call it on every event, tests can call it with plain
values, and the same input always gets the same answer. The caller does what the verdict says
(kick, redact and post ``reason`` as a notice, or queue the message until a senior joins).

Reasons are written for the room notice; they never repeat sensitive content in full (a card
number is "a card number ending 1111").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from .detectors import (
    Match,
    TextScan,
    file_type_of,
    find_card_numbers,
    find_ibans,
    find_personal_contacts,
    html_to_text,
    labels_in,
    mask_digits,
    scan_text,
)
from .lexicon import LexiconHit
from .model import Notices, Policy

__all__ = [
    "Assignees",
    "Command",
    "EMPLOYEE_COMMANDS",
    "Outreach",
    "Decision",
    "FileInfo",
    "Join",
    "RoomState",
    "SendOut",
    "Supervise",
    "SupervisionResult",
    "Verdict",
    "decide",
    "disclaimer_for",
    "is_admin",
    "is_observer",
    "is_sampled",
    "choose_assignees",
    "notice_for",
    "pick_assignees",
    "reviewers_of",
    "roles_of",
    "room_managers",
    "stand_ins",
    "supervise",
    "supervisors_of",
]

#: Commands every employee may use; the rest are for admins. ``away`` and ``back`` only for
#: oneself (``Command.target``); ``invite`` and ``contact`` are then decided as outreach;
#: ``review`` answers only the reviewers and supervisors (bridge.review checks who asks).
EMPLOYEE_COMMANDS = frozenset({"help", "waiting", "away", "back", "invite", "contact", "review"})
_SELF_COMMANDS = frozenset({"away", "back"})


class Verdict(Enum):
    ALLOW = "allow"
    DENY = "deny"
    #: Not now: keep the message and send it once the condition is met (a senior joins).
    HOLD = "hold"


@dataclass(frozen=True)
class Decision:
    """``rule`` is the policy key that decided (e.g. "sharing.card_numbers"), ``reason`` a
    sentence for the room notice."""

    verdict: Verdict
    rule: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


@dataclass(frozen=True)
class RoomState:
    """A portal as the bridge sees it: joined ``members`` (bot and ghosts included) and which of
    them are client ghosts."""

    room_id: str
    members: frozenset[str]
    ghosts: frozenset[str] = frozenset()
    is_group: bool = False
    #: Who looks after the conversation: its assignee and the covers of an absence. The
    #: managers of their teams may read it (teams.<name>.managers).
    caretakers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Join:
    """A user joining (or being invited to) a portal. The bot and ghosts are the caller's
    business and never come here."""

    user_id: str
    room: RoomState
    local_domain: str


@dataclass(frozen=True)
class FileInfo:
    """A file an employee sends: ``head`` is its first bytes (512 are plenty) for sniffing."""

    name: str
    mimetype: str
    size: int
    head: bytes = b""


@dataclass(frozen=True)
class SendOut:
    """An employee's event on its way to the client. ``kind`` is "text", "file", "edit" or
    "reaction"; for an edit ``text`` is the new text and ``previous_text`` the old one (for the
    caller's records: the new text is checked in full, as the client sees it whole). An unknown
    kind is checked like text."""

    sender: str
    room: RoomState
    kind: str
    text: str = ""
    html: str | None = None
    file: FileInfo | None = None
    labels: frozenset[str] = frozenset()
    previous_text: str | None = None


@dataclass(frozen=True)
class Command:
    """A bot command (``!hl <name> ...``) typed by ``user_id``; ``target`` is the user it acts
    on, where it acts on one (``away @user``)."""

    user_id: str
    name: str
    target: str | None = None


@dataclass(frozen=True)
class Outreach:
    """An employee starting a conversation with a client on ``network`` (a template, a link)."""

    user_id: str
    network: str
    local_domain: str
    #: The employee was offboarded: they reach no client any more.
    offboarded: bool = False


Action = Join | SendOut | Command | Outreach

_ALLOWED = Decision(Verdict.ALLOW, "sharing.allowed", "The message may be sent to the client.")
_REACTION = Decision(Verdict.ALLOW, "sharing.allowed", "Reactions may be sent to the client.")
_OBSERVER_JOIN = Decision(Verdict.ALLOW, "join.observer", "Compliance observers are in every portal.")
_MANAGER_SEND = Decision(
    Verdict.DENY,
    "join.manager_read_only",
    "Not sent: team managers can read their team's conversations but not write to the client.",
)
_OBSERVER_SEND = Decision(
    Verdict.DENY,
    "join.observer_read_only",
    "Not sent: compliance observers can read this conversation but not write to the client.",
)


# --------------------------------------------------------------------------------------------
# Who is who


def _server(user_id: str) -> str:
    return user_id.partition(":")[2].lower()


def roles_of(user_id: str, policy: Policy) -> frozenset[str]:
    """The user's roles: named ones (directly or through a team) plus the default role for
    every user of the company's homeserver."""
    roles = policy.user_roles.get(user_id, frozenset())
    if policy.default_role and _server(user_id) == policy.local_domain.lower():
        return roles | {policy.default_role}
    return roles


def is_admin(user_id: str, policy: Policy) -> bool:
    return user_id in policy.admins


def is_observer(user_id: str, policy: Policy) -> bool:
    return user_id in policy.observers


# --------------------------------------------------------------------------------------------
# Joins


def room_managers(room: RoomState, policy: Policy) -> frozenset[str]:
    """The managers of the teams of whoever looks after the conversation: they may read it."""
    found: set[str] = set()
    for user in room.caretakers:
        found |= policy.managers_of.get(user, frozenset())
    return frozenset(found)


def _reads_only(user: str, room: RoomState, policy: Policy) -> bool:
    """A manager who is in the conversation only as a manager (no role lets them take part)."""
    rules = policy.join
    return (
        user in policy.managers
        and not rules.all_local_allowed
        and user not in rules.allowed_users
        and user in room_managers(room, policy)
    )


def _decide_join(action: Join, policy: Policy) -> Decision:
    decision = _decide_member(action, policy)
    if not decision.allowed and action.user_id in room_managers(action.room, policy):
        return Decision(
            Verdict.ALLOW,
            "join.team_manager",
            f"{action.user_id} manages the team looking after this client, and may read the conversation.",
        )
    return decision


def _decide_member(action: Join, policy: Policy) -> Decision:
    user = action.user_id
    if user in policy.observers:
        return _OBSERVER_JOIN
    rules = policy.join
    local = action.local_domain.lower()
    server = _server(user)
    if server == local:
        if rules.all_local_allowed or user in rules.allowed_users:
            return Decision(Verdict.ALLOW, "join.roles", f"{user} may take part in client conversations.")
        allowed = ", ".join(sorted(rules.allowed_roles)) or "none"
        teams = f" or be in team {', '.join(sorted(rules.allowed_teams))}" if rules.allowed_teams else ""
        return Decision(
            Verdict.DENY,
            "join.roles",
            f"{user} may not join client conversations: they need one of the roles {allowed}{teams}.",
        )
    if server not in rules.allowed_servers:
        return Decision(
            Verdict.DENY,
            "join.servers",
            f"{user} may not join: users of {server} are not allowed in client conversations.",
        )
    if rules.max_external is not None:
        others = sum(
            1 for m in action.room.members if m != user and m not in policy.observers and _server(m) != local
        )
        if others + 1 > rules.max_external:
            return Decision(
                Verdict.DENY,
                "join.max_external",
                f"{user} may not join: at most {rules.max_external} people from other organisations may be in a conversation.",
            )
    return Decision(
        Verdict.ALLOW, "join.servers", f"{user} may join as a member of the partner server {server}."
    )


# --------------------------------------------------------------------------------------------
# Outbound messages


def _deny(rule: str, action: SendOut, finding: str, why: str) -> Decision:
    lead = "Edit not sent: the edited message" if action.kind == "edit" else f"Not sent: the {_noun(action)}"
    return Decision(Verdict.DENY, rule, f"{lead} {finding}; {why}.")


def _noun(action: SendOut) -> str:
    return "file" if action.kind == "file" else "message"


def _check_file(action: SendOut, policy: Policy) -> Decision | None:
    info = action.file
    if info is None:
        return None
    sharing = policy.sharing
    limit = sharing.max_file_bytes
    if limit is not None and info.size > limit:
        return _deny(
            "sharing.max_file_mb", action, f"is {info.size / 1048576:.1f} MB",
            f"files sent to clients may be at most {limit / 1048576:g} MB",
        )  # fmt: skip
    if sharing.blocked_file_types:
        hit = file_type_of(info.name, info.mimetype, info.head) & sharing.blocked_file_types
        if hit:
            # Say so when the content gives it away and the name does not: a disguised file.
            disguised = hit - file_type_of(info.name, info.mimetype, b"")
            finding = (
                f"is really a file of type {sorted(disguised)[0]}, whatever its name says"
                if disguised
                else f"is a file of type {sorted(hit)[0]}"
            )
            return _deny(
                "sharing.blocked_file_types", action, finding, "this file type may not be sent to clients"
            )
    return None


def _check_labels(action: SendOut, policy: Policy) -> Decision | None:
    blocked = policy.sharing.blocked_labels
    if not blocked:
        return None
    hit = labels_in(action.text, action.html, action.labels) & blocked.keys()
    if not hit:
        return None
    label = blocked[sorted(hit)[0]]
    return _deny(
        "sharing.blocked_labels",
        action,
        f"is labelled '{label}'",
        "labelled content may not leave the company",
    )


_MESSENGERS = {
    "t.me": "Telegram",
    "wa.me": "WhatsApp",
    "signal.me": "Signal",
    "instagram.com": "Instagram",
    "m.me": "Messenger",
}


def _describe_contact(m: Match) -> str:
    if m.kind == "phone":
        return f"a phone number ending {mask_digits(m.value, 2)}"
    if m.kind == "email":
        return f"a personal e-mail address at {m.detail}"
    if m.kind == "link":
        return f"a messenger link ({_MESSENGERS.get(m.detail, m.detail)}) to an account that is not the company's"
    return "a messenger handle that is not the company's"


def _check_content(action: SendOut, scan: TextScan, policy: Policy) -> Decision | None:
    sharing = policy.sharing
    if sharing.card_numbers:
        cards = find_card_numbers(scan)
        if cards:
            return _deny(
                "sharing.card_numbers", action, f"contains a card number ending {mask_digits(cards[0].value)}",
                "card numbers may not be shared in chats",
            )  # fmt: skip
    if sharing.ibans:
        ibans = find_ibans(scan)
        if ibans:
            compact = ibans[0].value.replace(" ", "").upper()
            return _deny(
                "sharing.ibans", action, f"contains an IBAN ({compact[:2]}… ending {compact[-4:]})",
                "bank account numbers may not be shared in chats",
            )  # fmt: skip
    for pattern in sharing.custom_patterns:
        if pattern.regex.search(scan.text):
            return _deny(
                "sharing.custom_patterns", action, f"matches the company rule '{pattern.name}'",
                "this content may not be shared with clients",
            )  # fmt: skip
    contacts = sharing.personal_contacts
    if contacts.enabled:
        found = find_personal_contacts(scan, contacts)
        if found:
            return _deny(
                "sharing.personal_contacts", action, f"contains {_describe_contact(found[0])}",
                "personal contact details may not be shared; keep the conversation on the company's channels",
            )  # fmt: skip
    return None


def _scanned_text(action: SendOut) -> TextScan:
    """The text the client will see: the body, plus the formatted body's text (and link
    targets) when it says something else, since clients show the formatted one. Scanned
    once here and shared by every detector."""
    text = action.text or ""
    if action.html:
        shown = html_to_text(action.html)
        if shown.split() != text.split():
            text = f"{text}\n{shown}"
    return scan_text(text)


def _check_senior(action: SendOut, policy: Policy) -> Decision | None:
    rules = policy.join
    room = action.room
    if rules.senior_role is None or not room.is_group or len(room.ghosts) < 2:
        return None
    if not rules.senior_users.isdisjoint(room.members):
        return None
    return Decision(
        Verdict.HOLD,
        "join.senior_role",
        f"Held: this group has {len(room.ghosts)} clients and no {rules.senior_role} is present; "
        f"the message goes out once a {rules.senior_role} joins.",
    )


def _decide_send(action: SendOut, policy: Policy) -> Decision:
    if action.sender in policy.observers:
        return _OBSERVER_SEND
    if _reads_only(action.sender, action.room, policy):
        return _MANAGER_SEND
    if action.kind == "reaction":
        return _REACTION
    decision = _check_file(action, policy) or _check_labels(action, policy)
    if decision is None:
        decision = _check_content(action, _scanned_text(action), policy)
    return decision or _check_senior(action, policy) or _ALLOWED


# --------------------------------------------------------------------------------------------
# Commands


def _decide_command(action: Command, policy: Policy) -> Decision:
    if action.user_id in policy.admins:
        return Decision(Verdict.ALLOW, "commands.admin", f"{action.user_id} is an administrator.")
    if action.name in EMPLOYEE_COMMANDS:
        if action.name not in _SELF_COMMANDS or action.target in (None, action.user_id):
            return Decision(
                Verdict.ALLOW,
                "commands.employee",
                f"{policy.commands.prefix} {action.name} is open to employees.",
            )
        return Decision(
            Verdict.DENY,
            "commands.employee",
            f"Sorry, employees can use {policy.commands.prefix} {action.name} only for themselves; "
            "an administrator can do it for someone else.",
        )
    return Decision(
        Verdict.DENY,
        "commands.admin",
        f"Sorry, {policy.commands.prefix} {action.name} is only available to administrators; "
        "please ask one of them if you need it.",
    )


# --------------------------------------------------------------------------------------------
# Outreach


def _decide_outreach(action: Outreach, policy: Policy) -> Decision:
    user = action.user_id
    if user in policy.observers:
        return Decision(
            Verdict.DENY,
            "outreach.allowed_roles",
            "Compliance observers do not start conversations with clients.",
        )
    if action.offboarded:
        return Decision(
            Verdict.DENY,
            "offboarding",
            f"{user} was offboarded and no longer starts conversations with clients.",
        )
    rules = policy.outreach
    if rules.restricted:
        allowed = user in rules.allowed_users or (
            policy.default_role in rules.allowed_roles and _server(user) == action.local_domain.lower()
        )
        if allowed:
            return Decision(
                Verdict.ALLOW, "outreach.allowed_roles", f"{user} may start conversations with clients."
            )
        who = ", ".join(sorted(rules.allowed_roles | {f"team {t}" for t in rules.allowed_teams}))
        return Decision(
            Verdict.DENY, "outreach.allowed_roles",
            f"{user} may not start conversations with clients: that needs one of {who}.",
        )  # fmt: skip
    # Unrestricted: whoever may take part in client conversations may also start one.
    joined = _decide_join(
        Join(user_id=user, room=RoomState(room_id="", members=frozenset()), local_domain=action.local_domain),
        policy,
    )
    if joined.allowed:
        return Decision(
            Verdict.ALLOW, "outreach.allowed_roles", f"{user} may start conversations with clients."
        )
    return Decision(
        Verdict.DENY,
        "outreach.allowed_roles",
        joined.reason.replace(
            "may not join client conversations", "may not start conversations with clients"
        ),
    )


def decide(action: Action, policy: Policy) -> Decision:
    """The verdict on one action. Pure and total over its inputs: any text, any bytes."""
    if isinstance(action, SendOut):
        return _decide_send(action, policy)
    if isinstance(action, Join):
        return _decide_join(action, policy)
    if isinstance(action, Command):
        return _decide_command(action, policy)
    if isinstance(action, Outreach):
        return _decide_outreach(action, policy)
    hint = "; supervise() takes Supervise" if isinstance(action, Supervise) else ""
    raise TypeError(f"decide() takes Join, SendOut, Command or Outreach, not {type(action).__name__}{hint}")


# --------------------------------------------------------------------------------------------
# Supervision: what the reviewers see


@dataclass(frozen=True)
class Supervise:
    """A message to check for review, in either direction: ``direction`` is "inbound" (client
    to company) or "outbound" (company to client). ``message_id`` decides sampling, so use an
    id that never changes (the Matrix event id). ``language``: the client's language code
    when the network reports it (Telegram's language_code); a known language skips the terms
    listed for other languages, so leave it None when unsure: then every term applies.
    ``html``: the formatted body, scanned too when it says something else than ``text``."""

    text: str
    direction: str
    message_id: str
    language: str | None = None
    html: str | None = None


@dataclass(frozen=True)
class SupervisionResult:
    """What :func:`supervise` found. ``hits``: the lexicon terms found, in text order (see
    :class:`policies.lexicon.LexiconHit` for spans and excerpts). ``hold``: an outbound message
    hit a lexicon whose action is hold, so the caller keeps it from the client until a reviewer
    releases it. ``sampled``: chosen by ``supervision.sample_rate`` whatever it says. ``rules``:
    the policy keys that put it in review ("supervision.lexicons.promises",
    "supervision.sample_rate"), one each, in order."""

    hits: tuple[LexiconHit, ...] = ()
    hold: bool = False
    sampled: bool = False
    rules: tuple[str, ...] = ()

    @property
    def review(self) -> bool:
        """The message goes to the review queue."""
        return bool(self.hits) or self.sampled

    @property
    def lexicons(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(h.lexicon for h in self.hits))

    @property
    def reason(self) -> str:
        """A sentence for the sender's notice or the queue; it names lexicons, never the text."""
        if self.hold:
            held = [h.lexicon for h in self.hits if h.action == "hold"]
            return (
                f"Held for compliance review: the message matches the lexicon '{held[0]}'; "
                "it goes to the client once a reviewer releases it."
            )
        if self.hits:
            return f"For compliance review: the message matches {_names('lexicon', self.lexicons)}."
        if self.sampled:
            return "For compliance review: the message was chosen in the random sample."
        return "Not for review."


_NOT_SUPERVISED = SupervisionResult()
_SAMPLE_SPACE = 1 << 64


def _names(what: str, names: tuple[str, ...]) -> str:
    quoted = [f"'{n}'" for n in names]
    return f"the {what} {quoted[0]}" if len(quoted) == 1 else f"the {what}s {', '.join(quoted)}"


def is_sampled(message_id: str, rate: float) -> bool:
    """Whether ``message_id`` is in the random sample of ``rate`` (0..1): the first 8 bytes of
    its SHA-256 as a fraction, below ``rate``. Stable across processes and restarts, unlike
    ``hash()``, so a message is sampled once and for all, and an auditor can recompute it."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") < rate * _SAMPLE_SPACE


def supervise(action: Supervise, policy: Policy) -> SupervisionResult:
    """Whether a message goes to review, and why. Pure, like :func:`decide`, but a separate
    function: supervision does not decide whether a message may go (the sharing rules do),
    it finds every lexicon hit in both directions, plus the sample. Raises ValueError for a
    direction other than "inbound" or "outbound" (a bug in the caller, not in the message)."""
    if action.direction not in ("inbound", "outbound"):
        raise ValueError(f"direction must be 'inbound' or 'outbound', not {action.direction!r}")
    rules = policy.supervision
    if not rules.enabled:
        return _NOT_SUPERVISED
    index = rules.index
    hits = index.find(action.text or "", action.direction, action.language)
    if action.html:
        shown = html_to_text(action.html)
        if shown.split() != (action.text or "").split():
            seen = {(h.lexicon, h.term) for h in hits}
            extra = index.find(shown, action.direction, action.language, source="html")
            hits += tuple(h for h in extra if (h.lexicon, h.term) not in seen)
    sampled = is_sampled(action.message_id, rules.sample_rate)
    if not hits and not sampled:
        return _NOT_SUPERVISED
    names = tuple(f"supervision.lexicons.{n}" for n in dict.fromkeys(h.lexicon for h in hits))
    return SupervisionResult(
        hits=hits,
        hold=action.direction == "outbound" and any(h.action == "hold" for h in hits),
        sampled=sampled,
        rules=names + (("supervision.sample_rate",) if sampled else ()),
    )


def reviewers_of(policy: Policy) -> frozenset[str]:
    """Who reviews supervision items: the members of ``supervision.reviewer_role`` (roles given
    through teams included), else the compliance observers."""
    role = policy.supervision.reviewer_role
    return policy.roles.get(role, frozenset()) if role else policy.observers


def supervisors_of(policy: Policy) -> frozenset[str]:
    """Where a reviewer escalates an item: the members of ``supervision.supervisor_role``;
    empty when the policy names none (then there is no escalation step)."""
    role = policy.supervision.supervisor_role
    return policy.roles.get(role, frozenset()) if role else frozenset()


# --------------------------------------------------------------------------------------------
# Disclaimers and assignment


def disclaimer_for(policy: Policy, network: str | None, region: str | None) -> str | None:
    """The notice for a new client: by region ('de-AT', then 'de'), else by network, else the
    default; None when the policy has none."""
    return notice_for(policy.disclaimers, network, region)


def notice_for(d: Notices, network: str | None, region: str | None) -> str | None:
    """The most specific of a set of client texts (disclaimers, out-of-hours, absence)."""
    if region:
        code = region.strip().lower().replace("_", "-")
        found = d.regions.get(code) or d.regions.get(code.split("-", 1)[0])
        if found:
            return found
    if network and network in d.networks:
        return d.networks[network]
    return d.default


def _dedupe(users: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(users))


def _round_robin(policy: Policy, invite_list: tuple[str, ...], counter: int) -> tuple[str, ...]:
    team = policy.teams.get(policy.assignment.team or "")
    if team is None or not team.members:
        return invite_list
    return (team.members[counter % len(team.members)],)


def pick_assignees(
    policy: Policy,
    *,
    network: str,
    account_key: str | None,
    invite_list: tuple[str, ...] | list[str],
    counter: int,
) -> tuple[str, ...]:
    """Employees to invite to a new portal. ``counter`` is the caller's round-robin counter
    (it stores and increments it), which keeps this function pure. ``account_key`` is the
    company account the client wrote to ("telegram:business:abc"; the network prefix may be
    left out). Observers are not included: the caller adds ``policy.observers`` to every
    portal."""
    invite = _dedupe(tuple(invite_list))
    a = policy.assignment
    if a.mode == "desk":
        return a.desk
    if a.mode == "round_robin":
        return _round_robin(policy, invite, counter)
    if a.mode == "account_owner":
        if account_key:
            owner = a.account_owners.get(account_key) or a.account_owners.get(f"{network}:{account_key}")
            if owner:
                return (owner,)
        return _round_robin(policy, invite, counter) if a.team else invite
    return invite


@dataclass(frozen=True)
class Assignees:
    """Who a new conversation goes to: ``users`` (observers not included), who stood in for
    whom (``replaced``: (unavailable user, stand-ins)), and whether nobody the rule named was
    available so the absence fallback took it (``fallback``; then the observers are told).
    ``users`` is empty when not even the fallback had anyone."""

    users: tuple[str, ...]
    replaced: tuple[tuple[str, tuple[str, ...]], ...] = ()
    fallback: bool = False


def stand_ins(user: str, unavailable: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """Who answers for ``user``: the user when available, else their successors or cover,
    followed transitively (a successor who left too hands on to theirs); () if nobody."""
    out: list[str] = []
    seen: set[str] = set()
    todo = [user]
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.add(current)
        if current in unavailable:
            todo.extend(unavailable[current])
        else:
            out.append(current)
    return tuple(out)


def choose_assignees(
    policy: Policy,
    *,
    network: str,
    account_key: str | None,
    invite_list: tuple[str, ...] | list[str],
    counter: int,
    unavailable: Mapping[str, tuple[str, ...]] = MappingProxyType({}),
) -> Assignees:
    """:func:`pick_assignees`, skipping whoever is ``unavailable`` (offboarded: their
    successors; away: their cover, or () when they have none). In a round-robin an absent
    member without cover passes the turn on; when nobody is left, ``absence.fallback``."""
    picked = pick_assignees(
        policy, network=network, account_key=account_key, invite_list=invite_list, counter=counter
    )
    users, replaced = _resolve(picked, unavailable)
    team = policy.teams.get(policy.assignment.team or "")
    if (
        not users
        and policy.assignment.mode in ("round_robin", "account_owner")
        and team is not None
        and team.members
    ):
        # The turn passes to the next member (in rotation order) who is there.
        for step in range(1, len(team.members)):
            users, more = _resolve((team.members[(counter + step) % len(team.members)],), unavailable)
            if users:
                replaced += more
                break
    if users:
        return Assignees(users, replaced)
    fallback, more = _resolve(policy.absence.fallback, unavailable)
    return Assignees(fallback, replaced + more, fallback=True)


def _resolve(
    users: tuple[str, ...], unavailable: Mapping[str, tuple[str, ...]]
) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    out: list[str] = []
    replaced: list[tuple[str, tuple[str, ...]]] = []
    for user in users:
        found = stand_ins(user, unavailable)
        if user in unavailable:
            replaced.append((user, found))
        out.extend(found)
    return _dedupe(out), tuple(replaced)
