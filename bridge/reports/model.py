"""What a service report says, computed from the record: how clients were served in a period.

Everything is counted from what the record holds (the portals' messages as the homeserver keeps
them, the message map, the audit chain, the review queue), never from running counters that
could drift from it: a report for last quarter reads last quarter's record. The computation
here is pure (inputs in, figures out), so it is tested with exact numbers; bridge.reports.collect
does the reading.

Definitions, as the report's footnote states them:

- A *wait* opens with a client message when no wait is open and closes with the next company
  message that reached the client. Its length is the *first response time*, counted on the
  wall clock (not business hours), and belongs to the employee who answered.
- A wait *over the SLA* lasted longer than ``sla_s`` (``sla.remind_after``) before its answer,
  or is still open at the end of the period and older than that; it counts against the
  conversation's assignee (or, without one, whoever answered).
- Client messages count for the conversation's assignee; company messages for their sender.
- A *denial* is an audited decision with verdict deny (a message or a join), by its actor.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "AuditDenial",
    "PortalFacts",
    "RecordedMessage",
    "Report",
    "ReportInput",
    "ReviewFacts",
    "Row",
    "compute",
    "percentile",
]


@dataclass(frozen=True)
class PortalFacts:
    room_id: str
    network: str
    account: str
    #: Who the conversation is assigned to now (None: nobody in particular).
    assignee: str | None
    #: "Telegram bot 12345": how the company account is named in the report.
    account_label: str = ""


@dataclass(frozen=True)
class RecordedMessage:
    """A message in a portal that crossed the bridge: ``inbound`` from the client, or an
    employee's that reached the client (refused and held ones never did)."""

    room_id: str
    event_id: str
    ts_ms: int
    sender: str
    inbound: bool


@dataclass(frozen=True)
class AuditDenial:
    ts_ms: int
    actor: str
    rule: str


@dataclass(frozen=True)
class ReviewFacts:
    """One item of the review queue: whose message it is, when it opened and closed."""

    subject: str
    opened_ms: int
    closed_ms: int | None


@dataclass(frozen=True)
class ReportInput:
    """``messages`` in each room's timeline order: a client message carries the time the
    network gives it (Telegram's are whole seconds), so timestamps alone cannot order a
    client's message and an answer in the same second."""

    since_ms: int
    until_ms: int
    portals: tuple[PortalFacts, ...]
    messages: tuple[RecordedMessage, ...]
    denials: tuple[AuditDenial, ...] = ()
    reviews: tuple[ReviewFacts, ...] = ()
    #: Employee -> the teams they are in (the policy's teams).
    teams: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sla_s: int | None = None


@dataclass(frozen=True)
class Row:
    """One line of a section: an employee, a team, a company account or a network."""

    key: str
    label: str
    conversations: int = 0
    messages_in: int = 0
    messages_out: int = 0
    first_response_median_s: float | None = None
    first_response_p90_s: float | None = None
    answered_waits: int = 0
    over_sla: int = 0
    denials: Mapping[str, int] = field(default_factory=dict)
    reviews_opened: int = 0
    reviews_closed: int = 0

    @property
    def denials_total(self) -> int:
        return sum(self.denials.values())


@dataclass(frozen=True)
class Report:
    since_ms: int
    until_ms: int
    sla_s: int | None
    employees: tuple[Row, ...]
    teams: tuple[Row, ...]
    accounts: tuple[Row, ...]
    networks: tuple[Row, ...]
    total: Row


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..1) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class _Tally:
    """Mutable counts for one row while the messages are walked."""

    rooms: set[str] = field(default_factory=set)
    messages_in: int = 0
    messages_out: int = 0
    responses: list[float] = field(default_factory=list)
    over_sla: int = 0
    denials: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reviews_opened: int = 0
    reviews_closed: int = 0

    def row(self, key: str, label: str) -> Row:
        return Row(
            key=key,
            label=label,
            conversations=len(self.rooms),
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            first_response_median_s=percentile(self.responses, 0.5),
            first_response_p90_s=percentile(self.responses, 0.9),
            answered_waits=len(self.responses),
            over_sla=self.over_sla,
            denials=dict(sorted(self.denials.items())),
            reviews_opened=self.reviews_opened,
            reviews_closed=self.reviews_closed,
        )


class _Tallies:
    """One tally per employee, team, account and network, plus the total; each event is added
    to every row it belongs to."""

    def __init__(self, data: ReportInput) -> None:
        self.data = data
        self.employees: dict[str, _Tally] = defaultdict(_Tally)
        self.teams: dict[str, _Tally] = defaultdict(_Tally)
        self.accounts: dict[str, _Tally] = defaultdict(_Tally)
        self.networks: dict[str, _Tally] = defaultdict(_Tally)
        self.total = _Tally()

    def for_employee(self, user: str | None) -> list[_Tally]:
        if not user:
            return []
        return [self.employees[user], *(self.teams[t] for t in self.data.teams.get(user, ()))]

    def for_portal(self, portal: PortalFacts) -> list[_Tally]:
        return [
            self.accounts[f"{portal.network}:{portal.account}"],
            self.networks[portal.network],
            self.total,
        ]


def compute(data: ReportInput) -> Report:
    tallies = _Tallies(data)
    portals = {p.room_id: p for p in data.portals}
    by_room: dict[str, list[RecordedMessage]] = defaultdict(list)
    for m in data.messages:
        if m.room_id in portals and data.since_ms <= m.ts_ms < data.until_ms:
            by_room[m.room_id].append(m)
    for room_id, messages in by_room.items():
        _walk(tallies, portals[room_id], messages)
    for d in data.denials:
        if data.since_ms <= d.ts_ms < data.until_ms:
            for t in [*tallies.for_employee(d.actor), tallies.total]:
                t.denials[d.rule] += 1
    for r in data.reviews:
        _add_review(tallies, r, data)
    return Report(
        since_ms=data.since_ms,
        until_ms=data.until_ms,
        sla_s=data.sla_s,
        employees=_rows(tallies.employees, {}),
        teams=_rows(tallies.teams, {}),
        accounts=_rows(tallies.accounts, {f"{p.network}:{p.account}": p.account_label for p in data.portals}),
        networks=_rows(tallies.networks, {}),
        total=tallies.total.row("total", "All conversations"),
    )


def _walk(tallies: _Tallies, portal: PortalFacts, messages: list[RecordedMessage]) -> None:
    """One conversation's messages in order: who wrote, and how long each client waited."""
    sla_ms = tallies.data.sla_s * 1000 if tallies.data.sla_s else None
    where = tallies.for_portal(portal)
    for t in where + tallies.for_employee(portal.assignee):
        t.rooms.add(portal.room_id)
    opened: int | None = None
    for m in messages:
        if m.inbound:
            for t in where + tallies.for_employee(portal.assignee):
                t.messages_in += 1
            opened = m.ts_ms if opened is None else opened
            continue
        for t in where + tallies.for_employee(m.sender):
            t.messages_out += 1
            t.rooms.add(portal.room_id)
        if opened is not None:
            waited = m.ts_ms - opened
            for t in where + tallies.for_employee(m.sender):
                t.responses.append(waited / 1000)
            if sla_ms is not None and waited > sla_ms:
                _over_sla(tallies, portal, m.sender, where)
            opened = None
    if opened is not None and sla_ms is not None and tallies.data.until_ms - opened > sla_ms:
        _over_sla(tallies, portal, None, where)


def _over_sla(tallies: _Tallies, portal: PortalFacts, answerer: str | None, where: list[_Tally]) -> None:
    for t in where + tallies.for_employee(portal.assignee or answerer):
        t.over_sla += 1


def _add_review(tallies: _Tallies, r: ReviewFacts, data: ReportInput) -> None:
    opened = data.since_ms <= r.opened_ms < data.until_ms
    closed = r.closed_ms is not None and data.since_ms <= r.closed_ms < data.until_ms
    for t in [*tallies.for_employee(r.subject), tallies.total]:
        t.reviews_opened += opened
        t.reviews_closed += closed


def _rows(tallies: Mapping[str, _Tally], labels: Mapping[str, str]) -> tuple[Row, ...]:
    return tuple(tallies[key].row(key, labels.get(key) or key) for key in sorted(tallies))
