"""Absences: while an employee is away, nobody waits for them.

``away`` records the absence, invites the cover to every conversation the absent employee is in,
and says so in each room; from then on new clients skip them (see PolicyBot.unavailable),
reminders go to the cover, and a client who writes is told once who looks after them. At the
end (the date passes, or ``back``) everything reverts: the covers invited for the absence leave
the rooms again. Every step is audited. The bot command and any other entry point share this.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING

from mautrix.errors import MatrixRequestError
from mautrix.types import EventType, Membership

from bridge import matrix_content as mc
from bridge.clock import Clock
from bridge.events import RemoteEvent
from bridge.store import AbsenceRow, PortalRow
from policies.engine import notice_for

if TYPE_CHECKING:
    from bridge.policy_bot import PolicyBot

log = logging.getLogger("houseline.absence")


#: The furthest an absence may reach: beyond it the employee has left, which is an offboarding.
MAX_ABSENCE_S = 366 * 86400


class AbsenceError(Exception):
    """The request cannot be carried out; the message says why, for the person who asked."""


@dataclass(frozen=True)
class AwayReport:
    user: str
    until_ms: int
    covers: tuple[str, ...]
    rooms: int
    problems: tuple[str, ...] = ()


def parse_until(text: str, now: float, tz_name: str = "UTC") -> int:
    """``2026-12-24`` (back at the start of that day, in ``tz_name``) or an ISO date and time
    (``2026-12-24T13:00``, with or without an offset) → Unix ms; must lie in the future."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz_name)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=zone)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
    except ValueError:
        raise AbsenceError(
            f"“{text}” is not a date; write it as YYYY-MM-DD (e.g. 2026-12-24) or YYYY-MM-DDTHH:MM."
        ) from None
    at = moment.timestamp()
    if at > now + MAX_ABSENCE_S:
        raise AbsenceError(
            f"{text} is more than a year ahead; an absence that long is an offboarding (or give a nearer date)."
        )
    if at <= now:
        shown = datetime.fromtimestamp(now, zone).strftime("%Y-%m-%d %H:%M")
        raise AbsenceError(
            f"{text} is in the past (it is now {shown} {tz_name}); give the day the absence ends."
        )
    return int(at * 1000)


def when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class Absences:
    def __init__(self, pb: PolicyBot, clock: Clock) -> None:
        self.pb = pb
        self.clock = clock

    async def resolve_cover(self, user: str, cover: str | None) -> tuple[str, ...]:
        """``@colleague`` or ``team:NAME`` (the team's members but the absent one); never
        someone offboarded or away themselves."""
        if cover is None:
            return ()
        if cover.startswith("team:"):
            team = self.pb.policy.teams.get(cover[5:])
            if team is None:
                raise AbsenceError(f"There is no team “{cover[5:]}” in the policy.")
            covers = tuple(u for u in team.members if u != user)
        else:
            covers = (cover,)
        if user in covers:
            raise AbsenceError(f"{user} cannot cover for themselves.")
        unavailable = await self.pb.unavailable()
        gone = [u for u in covers if u in unavailable]
        if gone and len(gone) == len(covers):
            raise AbsenceError(f"{', '.join(gone)} cannot cover: offboarded or away themselves.")
        return tuple(u for u in covers if u not in unavailable)

    async def away(self, actor: str, user: str, until_ms: int, covers: tuple[str, ...]) -> AwayReport:
        await self.pb.store.put_absence(AbsenceRow(user, until_ms, ",".join(covers), actor))
        rooms, problems = 0, []
        for portal in await self.pb.store.all_portals():
            members = await self.pb.bot.get_room_members(portal.room_id, (Membership.JOIN, Membership.INVITE))
            # Observers are in every room without looking after any: only assignments count.
            looks_after = portal.assignee == user or (
                user in members and user not in self.pb.policy.observers
            )
            if not looks_after:
                continue
            rooms += 1
            invited, trouble = await self.pb.bring_in(portal, covers)
            problems.extend(trouble)
            await self.pb.store.add_absence_room(user, portal.room_id, tuple(invited))
            await self.pb.sync_managers(portal.room_id)  # the covers' team managers follow
            who = ", ".join(covers) or "nobody (new clients go elsewhere)"
            await self._room_notice(
                portal.room_id, f"Absence: {user} is away until {when(until_ms)}; covering: {who}."
            )
        await self.pb.audit.record(
            actor=actor,
            action="absence.start",
            subject=user,
            verdict="allow",
            rule="absence",
            until=when(until_ms),
            covers=list(covers),
            rooms=rooms,
        )
        log.info(
            "event=absence_started user=%s until_ms=%d covers=%s rooms=%d",
            user,
            until_ms,
            ",".join(covers),
            rooms,
        )
        await self.pb.notify.emit(
            "absence.started", "", user=user, until_ms=until_ms, covers=list(covers), by=actor
        )
        return AwayReport(user, until_ms, covers, rooms, tuple(problems))

    async def back(self, actor: str, user: str, *, reason: str = "back") -> int:
        """Ends the absence: the covers invited for it leave those rooms again. Returns how
        many rooms were touched; 0 and no audit entry if ``user`` was not away."""
        if user not in await self.pb.store.absences():
            return 0
        rooms = await self.pb.store.end_absence(user)
        for room_id, invited in rooms:
            portal = await self.pb.portals.by_room(room_id)
            # A cover who has become the conversation's assignee stays: it is theirs now.
            invited = tuple(u for u in invited if portal is None or u != portal.assignee)
            for cover in invited:
                try:
                    await self.pb.bot.kick_user(room_id, cover, reason=f"cover for {user} ended")
                except MatrixRequestError as e:
                    log.info("event=cover_leave_failed room=%s user=%s error=%s", room_id, cover, e.message)
            if invited:
                await self._room_notice(
                    room_id, f"Absence over: {user} is back; {', '.join(invited)} no longer cover(s) here."
                )
            await self.pb.sync_managers(room_id)
        await self.pb.audit.record(
            actor=actor,
            action="absence.end",
            subject=user,
            verdict="allow",
            rule="absence",
            reason=reason,
            rooms=len(rooms),
        )
        log.info("event=absence_ended user=%s reason=%s rooms=%d", user, reason, len(rooms))
        await self.pb.notify.emit("absence.ended", "", user=user, reason=reason, by=actor)
        return len(rooms)

    async def expire(self) -> None:
        """Absences whose end passed revert by themselves (checked by the bridge's timers)."""
        now = self.clock.now_ms()
        for user, absence in (await self.pb.store.absences()).items():
            if absence.until_ms <= now:
                await self.back(self.pb.az.bot_mxid, user, reason="until passed")

    async def absent_here(self, portal: PortalRow) -> list[AbsenceRow]:
        """The absences of the people looking after this conversation."""
        absences = await self.pb.store.absences()
        if not absences:
            return []
        members = await self.pb.bot.get_room_members(portal.room_id, (Membership.JOIN, Membership.INVITE))
        observers = self.pb.policy.observers
        return [
            a
            for user, a in absences.items()
            if user == portal.assignee or (user in members and user not in observers)
        ]

    async def client_wrote(self, portal: PortalRow, event: RemoteEvent) -> None:
        """Once per absence and conversation, the client learns who looks after them."""
        if event.from_account:
            return
        for absence in await self.absent_here(portal):
            text = notice_for(self.pb.policy.absence.notice, event.chat.network, event.sender.language)
            if not text or not await self.pb.store.absence_client_told(absence.user_id, portal.room_id):
                continue
            cover = (
                ", ".join([await self._name(u) for u in absence.covers])
                or self.pb.config.portals.company
                or "a colleague"
            )
            until = datetime.fromtimestamp(absence.until_ms / 1000, timezone.utc).strftime("%Y-%m-%d")
            try:
                filled = text.format(cover=cover, until=until)
            except (KeyError, IndexError, ValueError):
                filled = text
            await self.pb.tell_client(
                portal,
                filled,
                key=f"absence:{absence.user_id}:{absence.until_ms}:{portal.room_id}",
                what="Absence notice",
            )

    async def _name(self, user: str) -> str:
        try:
            name = await self.pb.bot.get_displayname(user)
        except MatrixRequestError:
            name = None
        return name or user[1:].split(":", 1)[0]

    async def _room_notice(self, room_id: str, text: str) -> None:
        await self.pb.bot.send_message_event(room_id, EventType.ROOM_MESSAGE, mc.notice(text))
