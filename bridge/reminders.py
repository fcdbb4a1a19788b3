"""Nobody waits unanswered: the service-level clock of every conversation.

A client message nobody has answered starts the room's clock (a ``waiting`` row, written in the
commit that records the message); an employee's message reaching the client, or the company
account writing, stops it in the commit that records that. The bridge's timer tick looks at the
waiting rooms and fires each step of ``sla`` once its time has passed, counted in business hours
(the clock pauses while the team is closed): remind the assignee (their cover while they are
away), then call in the team, then tell the supervisors.

A step fires once: its notice has a transaction id derived from the room, the wait and the step,
so a crash between the notice and the step's commit re-sends the same transaction (which the
homeserver deduplicates), and the step is counted with a compare-and-set on the step number.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from mautrix.errors import MatrixRequestError
from mautrix.types import EventType, Membership

from bridge.clock import Clock
from bridge.events import RemoteEvent
from bridge.store import PortalRow, WaitingRow
from policies.engine import notice_for, stand_ins
from policies.hours import BusinessHours, add_business_seconds, is_open
from policies.model import Team

if TYPE_CHECKING:
    from bridge.policy_bot import PolicyBot

log = logging.getLogger("houseline.sla")


def duration_words(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    parts.append(f"{minutes:02d}m" if parts else f"{minutes} min")
    return " ".join(parts)


class Reminders:
    def __init__(self, pb: PolicyBot, clock: Clock) -> None:
        self.pb = pb
        self.clock = clock

    # who and when

    def team_of(self, portal: PortalRow) -> Team | None:
        """The assignee's team (the first by name), else the assignment rule's team."""
        policy = self.pb.policy
        names = sorted(policy.user_teams.get(portal.assignee or "", ()))
        name = names[0] if names else policy.assignment.team
        return policy.teams.get(name or "")

    def hours_of(self, portal: PortalRow) -> BusinessHours | None:
        team = self.team_of(portal)
        return (team.hours if team is not None else None) or self.pb.policy.sla.hours

    def due_at(self, portal: PortalRow, since_ms: int, seconds: int) -> float:
        hours = self.hours_of(portal)
        start = since_ms / 1000
        return add_business_seconds(hours, start, seconds) if hours is not None else start + seconds

    # the clock starting and stopping

    async def client_wrote(self, portal: PortalRow, event: RemoteEvent) -> None:
        """Outside business hours a waiting client is told so, once per wait."""
        texts = self.pb.policy.sla.out_of_hours
        hours = self.hours_of(portal)
        if event.from_account or hours is None or is_open(hours, self.clock.now()):
            return
        text = notice_for(texts, event.chat.network, event.sender.language)
        if text and await self.pb.store.waiting_closed_told(portal.room_id):
            await self.pb.tell_client(
                portal, text, key=f"closed:{portal.room_id}:{event.message_id}", what="Out-of-hours notice"
            )

    # the tick

    async def tick(self) -> None:
        steps = self.pb.policy.sla.steps()
        if not steps:
            return
        now = self.clock.now()
        for row in await self.pb.store.waiting():
            if row.steps >= len(steps):
                continue
            portal = await self.pb.portals.by_room(row.room_id)
            if portal is None:
                continue
            name, seconds = steps[row.steps]
            if now < self.due_at(portal, row.since_ms, seconds):
                continue
            try:
                await self._fire(portal, row, name, seconds)
            except MatrixRequestError as e:
                # One room the bot cannot post in must not hold up every other conversation.
                log.warning("event=sla_step_failed room=%s step=%s error=%s", row.room_id, name, e.message)

    async def _fire(self, portal: PortalRow, row: WaitingRow, step: str, seconds: int) -> None:
        if await self.pb.store.waiting_row(row.room_id) != row:
            return  # answered (or counted) since the rows were read
        whom = {
            "remind": self._targets_remind,
            "escalate": self._targets_escalate,
            "supervisor": self._targets_supervisor,
        }[step]
        targets, invited = await whom(portal)
        waited = duration_words(seconds)
        since = datetime.fromtimestamp(row.since_ms / 1000, timezone.utc).strftime("%H:%M UTC")
        lead = {
            "remind": "Reminder: the client has waited",
            "escalate": "Escalation: the client has waited",
            "supervisor": "Supervisors: the client has waited",
        }[step]
        who = ", ".join(targets) or "nobody is assigned"
        text = f"{lead} {waited} (business time) for an answer, since {since}. {who}"
        content = {"msgtype": "m.notice", "body": text, "m.mentions": {"user_ids": list(targets)}}
        txn = f"hl.sla.{row.room_id}.{row.since_ms}.{row.steps}".replace("!", "").replace(":", "_")
        await self.pb.bot.send_message_event(row.room_id, EventType.ROOM_MESSAGE, content, txn_id=txn)
        if not await self.pb.store.waiting_step(row.room_id, row.since_ms, row.steps):
            return  # answered or counted meanwhile: the notice was the step's one notice
        await self.pb.audit.record(
            actor=self.pb.az.bot_mxid,
            action=f"sla.{step}",
            subject=row.room_id,
            verdict="allow",
            rule=f"sla.{step}_after",
            waited_s=seconds,
            told=list(targets),
            invited=invited,
        )
        log.info("event=sla_%s room=%s waited_s=%d told=%s", step, row.room_id, seconds, ",".join(targets))
        await self.pb.notify.emit(
            "sla.breached",
            row.room_id,
            step=step,
            waited_s=seconds,
            since_ms=row.since_ms,
            told=list(targets),
        )

    async def _available(self, users: tuple[str, ...]) -> tuple[str, ...]:
        unavailable = await self.pb.unavailable()
        return tuple(dict.fromkeys(u for user in users for u in stand_ins(user, unavailable)))

    async def _employees_in(self, portal: PortalRow) -> tuple[str, ...]:
        members = await self.pb.bot.get_room_members(portal.room_id, (Membership.JOIN, Membership.INVITE))
        observers = self.pb.policy.observers
        return tuple(sorted(m for m in members if not self.pb.is_ours(m) and m not in observers))

    async def _targets_remind(self, portal: PortalRow) -> tuple[tuple[str, ...], list[str]]:
        named = (portal.assignee,) if portal.assignee else await self._employees_in(portal)
        targets = await self._available(named)
        if not targets:
            # The assignee is away with nobody covering: the team hears it at once.
            return await self._targets_escalate(portal)
        invited = await self._invite(portal, targets)
        return targets, invited

    async def _targets_escalate(self, portal: PortalRow) -> tuple[tuple[str, ...], list[str]]:
        policy = self.pb.policy
        team = self.team_of(portal)
        named = policy.assignment.desk if policy.assignment.mode == "desk" else (team.members if team else ())
        targets = await self._available(tuple(named) or await self._employees_in(portal))
        return targets, await self._invite(portal, targets)

    async def _targets_supervisor(self, portal: PortalRow) -> tuple[tuple[str, ...], list[str]]:
        role = self.pb.policy.sla.supervisor_role
        users = tuple(sorted(self.pb.policy.roles.get(role or "", ())))
        targets = await self._available(users)
        return targets, await self._invite(portal, targets)

    async def _invite(self, portal: PortalRow, users: tuple[str, ...]) -> list[str]:
        """Whoever is told and not in the room yet is invited, if the join rules allow."""
        invited, problems = await self.pb.bring_in(portal, users)
        for problem in problems:
            log.info("event=sla_not_invited room=%s problem=%r", portal.room_id, problem)
        return invited

    # the list

    async def waiting_list(self, viewer: str, *, everything: bool) -> str:
        now = self.clock.now()
        lines = []
        for row in await self.pb.store.waiting():
            portal = await self.pb.portals.by_room(row.room_id)
            if portal is None:
                continue
            if (
                not everything
                and viewer != portal.assignee
                and viewer not in await self._employees_in(portal)
            ):
                continue
            since = datetime.fromtimestamp(row.since_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            lines.append(
                f"{portal.name} — waiting {duration_words(max(0.0, now - row.since_ms / 1000))} (since {since}) — "
                f"{portal.assignee or 'no assignee'} — {row.room_id}"
                + (f" — {row.steps} reminder step(s) sent" if row.steps else "")
            )
        if not lines:
            return (
                "Nobody is waiting for an answer."
                if everything
                else "None of your conversations is waiting for an answer."
            )
        return f"{len(lines)} conversation(s) waiting for an answer, oldest first:\n" + "\n".join(lines)


__all__ = ["Reminders", "duration_words"]
