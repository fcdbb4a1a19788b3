"""Reading a period's record for a report: the store says which events crossed the bridge, the
homeserver says who sent them and when (its timestamps are the record's: a client message
carries the time the client sent it), and the audit chain holds the denials.

Shared by ``houseline report`` and the ``report`` bot command, so both print the same figures.
"""

from __future__ import annotations

from collections import defaultdict

from bridge.networks import network_names, spec_of
from bridge.record.reader import HomeserverReader
from bridge.reports.model import (
    AuditDenial,
    PortalFacts,
    RecordedMessage,
    Report,
    ReportInput,
    ReviewFacts,
    compute,
)
from bridge.store import Store
from bridge.store import reports as queries
from bridge.store import review as review_rows
from policies.model import Policy

#: How far the bridge's recording time may lag the record's timestamp (a client message posted
#: after an outage): the store is read this much wider, the homeserver's times decide.
SLACK_MS = 7 * 86_400_000


def account_label(network: str, account: str) -> str:
    name = spec_of(network).display_name if network in network_names() else network
    return f"{name} account {account}"


def teams_of(policy: Policy) -> dict[str, tuple[str, ...]]:
    return {user: tuple(sorted(teams)) for user, teams in policy.user_teams.items()}


async def collect(
    store: Store,
    reader: HomeserverReader,
    policy: Policy,
    *,
    bot: str,
    since_ms: int,
    until_ms: int,
) -> ReportInput:
    portals = {p.room_id: p for p in await store.all_portals()}
    mapped = await queries.mapped_events(store.db, since_ms - SLACK_MS, until_ms + SLACK_MS)
    by_room: dict[str, dict[str, bool]] = defaultdict(dict)
    for m in mapped:
        if m.room_id in portals:
            by_room[m.room_id][m.event_id] = m.inbound
    messages: list[RecordedMessage] = []
    for room_id, inbound_of in sorted(by_room.items()):
        for event in await reader.events_since(room_id, since_ms):
            event_id, sender = event.get("event_id"), event.get("sender", "")
            if event_id not in inbound_of or (not inbound_of[event_id] and sender == bot):
                continue  # not bridged, or the bot's own notice to the client (a disclaimer)
            ts = int(event.get("origin_server_ts", 0))
            messages.append(RecordedMessage(room_id, event_id, ts, sender, inbound_of[event_id]))
    denials = [
        AuditDenial(ts, actor, rule)
        for ts, actor, rule in await queries.denials(store.db, since_ms, until_ms)
    ]
    return ReportInput(
        since_ms=since_ms,
        until_ms=until_ms,
        portals=tuple(
            PortalFacts(p.room_id, p.network, p.account, p.assignee, account_label(p.network, p.account))
            for p in portals.values()
        ),
        messages=tuple(messages),
        denials=tuple(denials),
        reviews=tuple(
            ReviewFacts(i.sender, i.opened_at, i.closed_at)
            for i in await review_rows.items_between(store.db, since_ms, until_ms)
        ),
        teams=teams_of(policy),
        sla_s=policy.sla.remind_after_s,
    )


async def produce(
    store: Store,
    policy: Policy,
    *,
    homeserver_url: str,
    as_token: str,
    bot: str,
    verify_tls: bool,
    since_ms: int,
    until_ms: int,
) -> Report:
    """The report for a period, read as the bot (the CLI and the bot command both call this)."""
    async with HomeserverReader(homeserver_url, as_token, bot, verify_tls) as reader:
        data = await collect(store, reader, policy, bot=bot, since_ms=since_ms, until_ms=until_ms)
    return compute(data)
