"""What an admin or an integration can do to conversations, once, under every entry point.

The bot's commands (bridge.commands) and the HTTP API (bridge.api) both call these: the same
policy decisions, the same room notices, the same audit entries, the same events to the
webhooks. Each returns a plain result or raises :class:`OperationError` with a sentence for the
person or system that asked and a ``kind`` an API maps to its status code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mautrix.errors import MatrixRequestError
from mautrix.types import EventType, Membership

from bridge import matrix_content as mc
from bridge.store import PortalRow

if TYPE_CHECKING:
    from bridge.policy_bot import PolicyBot

log = logging.getLogger("houseline.operations")


class OperationError(Exception):
    """``kind``: "invalid" (the request is wrong), "not_found", "denied" (a rule refused it),
    "failed" (the homeserver or network could not do it)."""

    def __init__(self, message: str, kind: str = "invalid", rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.rule = rule


@dataclass(frozen=True)
class Handover:
    leaver: str
    successors: tuple[str, ...]
    rooms: tuple[str, ...]
    problems: tuple[str, ...] = field(default=())


class Operations:
    def __init__(self, pb: PolicyBot) -> None:
        self.pb = pb

    async def user_exists(self, user_id: str) -> bool:
        try:
            await self.pb.bot.get_profile(user_id)
            return True
        except MatrixRequestError:
            return False

    async def _known_user(self, user_id: str) -> None:
        if user_id.split(":", 1)[-1] == self.pb.config.homeserver.domain and not await self.user_exists(
            user_id
        ):
            raise OperationError(f"There is no user {user_id} on this homeserver.", "not_found")

    async def assign(self, actor: str, portal: PortalRow, user: str) -> None:
        """Invites ``user`` and makes them the conversation's assignee, if the join rules allow."""
        await self._known_user(user)
        decision = await self.pb.join_decision(user, portal)
        if not decision.allowed:
            await self.pb.audit.record(
                actor=actor,
                action="assign",
                subject=portal.room_id,
                verdict="deny",
                rule=decision.rule,
                user=user,
            )
            raise OperationError(
                f"Not invited: {decision.reason} (rule {decision.rule}).", "denied", decision.rule
            )
        members = await self.pb.bot.get_room_members(portal.room_id, (Membership.JOIN, Membership.INVITE))
        if user not in members:
            try:
                await self.pb.bot.invite_user(portal.room_id, user)
            except MatrixRequestError as e:
                raise OperationError(f"Could not invite {user}: {e.message}", "failed") from e
        await self.pb.store.set_assignee(portal.room_id, user)
        self.pb.portals.forget(portal.room_id)
        await self.pb.sync_managers(portal.room_id)  # the new team's managers follow
        await self.pb.audit.record(
            actor=actor,
            action="assign",
            subject=portal.room_id,
            verdict="allow",
            rule=decision.rule,
            user=user,
        )
        await self.pb.notify.emit("conversation.assigned", portal.room_id, assignee=user, by=actor)

    async def successors_of(self, leaver: str, target: str) -> tuple[str, ...]:
        """``@successor`` or ``team:NAME`` (its members but the leaver), each of them known."""
        if target.startswith("team:"):
            team = self.pb.policy.teams.get(target[5:])
            if team is None:
                raise OperationError(f"There is no team “{target[5:]}” in the policy.", "not_found")
            successors = tuple(u for u in team.members if u != leaver)
        else:
            successors = (target,)
        if not successors:
            raise OperationError("Nobody to hand over to.")
        if leaver in successors:
            raise OperationError(f"{leaver} cannot hand over to themselves.")
        for user in successors:
            await self._known_user(user)
        return successors

    async def offboard(self, actor: str, leaver: str, successors: tuple[str, ...]) -> Handover:
        """Every conversation of the leaver to the successors in one step; the leaver's future
        joins are refused from now on."""
        await self.pb.store.add_offboarded(leaver, ",".join(successors))
        rooms: list[str] = []
        problems: list[str] = []
        for portal in await self.pb.store.all_portals():
            members = await self.pb.bot.get_room_members(portal.room_id, (Membership.JOIN, Membership.INVITE))
            if portal.assignee == leaver:
                await self.pb.store.set_assignee(portal.room_id, successors[0])
                self.pb.portals.forget(portal.room_id)
            if leaver not in members:
                continue
            try:
                await self.pb.bot.kick_user(portal.room_id, leaver, reason="offboarded")
            except MatrixRequestError as e:
                problems.append(f"{portal.name}: could not remove {leaver} ({e.message})")
            _, trouble = await self.pb.bring_in(portal, successors)
            problems.extend(trouble)
            await self.pb.sync_managers(portal.room_id)
            await self.pb.bot.send_message_event(
                portal.room_id,
                EventType.ROOM_MESSAGE,
                mc.notice(
                    f"Handover: {leaver} no longer looks after this client; {', '.join(successors)} take(s) over. The client sees no change."
                ),
            )
            await self.pb.audit.record(
                actor=actor,
                action="offboard.portal",
                subject=portal.room_id,
                verdict="allow",
                rule="offboarding",
                leaver=leaver,
                successors=list(successors),
            )
            await self.pb.notify.emit(
                "conversation.offboarded",
                portal.room_id,
                leaver=leaver,
                successors=list(successors),
                by=actor,
            )
            rooms.append(portal.room_id)
        return Handover(leaver, successors, tuple(rooms), tuple(problems))

    async def set_legal_hold(self, actor: str, portal: PortalRow, on: bool) -> None:
        await self.pb.store.set_portal_flag(portal.room_id, "legal_hold", on)
        self.pb.portals.forget(portal.room_id)
        await self.pb.audit.record(
            actor=actor,
            action="hold.place" if on else "hold.release",
            subject=portal.room_id,
            verdict="allow",
            rule="commands.admin",
        )
        what = f"Legal hold {'placed on' if on else 'released from'} this conversation by {actor}."
        await self.pb.bot.send_message_event(portal.room_id, EventType.ROOM_MESSAGE, mc.notice(what))
