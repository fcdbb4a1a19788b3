"""Outreach: an employee starts the conversation, from Houseline rather than their own phone.

Where the company may write first (WhatsApp, with an approved template) the portal is created
for the client's number, assigned to the employee who asked, and the template leaves through the
outbox like any employee message: decided by the policy, delivered in order, recorded, audited.
Where it may not (a Telegram bot), the employee gets a one-time link; the client's first message
brings its code back, and the conversation is assigned to the link's maker. Codes are random,
single use, expire, and only their SHA-256 is stored. Who may reach out is the policy's call
(``outreach``), and every attempt, allowed or not, is audited. The bot command and any other
entry point (an API) share these functions.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from mautrix.types import EventType, Membership

from bridge import matrix_content as mc
from bridge.clock import Clock
from bridge.events import ChatRef, RemoteEvent
from bridge.networks.base import InviteLinks, OutreachError, TemplateOutreach
from bridge.store import PortalRow
from policies.engine import Decision, Outreach, decide, stand_ins
from puppets.ghosts import Ghosts

if TYPE_CHECKING:
    from bridge.policy_bot import PolicyBot

log = logging.getLogger("houseline.outreach")

TEMPLATE_KEY = mc.TEMPLATE_KEY
Enqueue = Callable[[list[dict[str, Any]]], Awaitable[None]]


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Started:
    """An outreach that went ahead: its room, and whether the room is new."""

    portal: PortalRow
    created: bool
    text: str


class OutreachDesk:
    def __init__(self, pb: PolicyBot, ghosts: Ghosts, enqueue: Enqueue, clock: Clock) -> None:
        self.pb = pb
        self.ghosts = ghosts
        self.enqueue = enqueue
        self.clock = clock
        #: Invitation codes claimed by inbound messages whose follow-up (a room notice, the
        #: invite of an existing room, the client's answer) runs once the message is recorded.
        self._claims: dict[tuple[ChatRef, str], tuple[str, str | None, int | None]] = {}

    def _connector(self, network: str, ability: type) -> Any:
        """The network's connector if it has ``ability``; else an error pointing to the way
        that network does offer."""
        connector = self.pb.connectors.get(network)
        if connector is None:
            raise OutreachError(f"There is no {network} connection in this bridge.")
        if isinstance(connector, ability):
            return connector
        prefix = self.pb.policy.commands.prefix
        if ability is TemplateOutreach:
            hint = (
                f" Use `{prefix} invite {network}` for a link the client opens."
                if isinstance(connector, InviteLinks)
                else ""
            )
            raise OutreachError(f"{connector.display_name} does not let the company write first.{hint}")
        hint = (
            f" Use `{prefix} contact {network} …` to write first."
            if isinstance(connector, TemplateOutreach)
            else ""
        )
        raise OutreachError(f"{connector.display_name} has no invitation links.{hint}")

    async def _check(self, actor: str, network: str, action: str, subject: str, **details: Any) -> Decision:
        """The policy's word on this outreach; a refusal is audited and raised."""
        offboarded = actor in await self.pb.store.offboarded()
        decision = decide(
            Outreach(
                user_id=actor,
                network=network,
                local_domain=self.pb.config.homeserver.domain,
                offboarded=offboarded,
            ),
            self.pb.policy,
        )
        if not decision.allowed:
            await self._audit(actor, action, subject, decision, **details)
            raise OutreachError(f"{decision.reason} (rule {decision.rule})", rule=decision.rule)
        return decision

    async def _audit(self, actor: str, action: str, subject: str, decision: Decision, **details: Any) -> None:
        await self.pb.audit.record(
            actor=actor,
            action=action,
            subject=subject,
            verdict=decision.verdict.name.lower(),
            rule=decision.rule,
            **details,
        )

    # WhatsApp-like: the company writes first with a template

    async def contact(
        self,
        actor: str,
        network: str,
        address: str,
        *,
        from_account: str | None,
        template: str,
        language: str,
        params: tuple[str, ...],
        source_event_id: str | None = None,
    ) -> Started:
        connector = self._connector(network, TemplateOutreach)
        decision = await self._check(
            actor, network, "outreach.contact", f"{network}:{address}", template=template
        )
        try:
            chat, name = connector.outreach_chat(address, from_account)
            await connector.check_template(chat, template, language, params)
            await self._not_someone_elses(actor, chat)
        except OutreachError as e:
            await self.pb.audit.record(
                actor=actor,
                action="outreach.contact",
                subject=f"{network}:{address}",
                verdict="deny",
                rule="outreach.input",
                reason=e.reason,
            )
            raise
        now = self.clock.now_ms()
        ghost = await self.ghosts.ensure(network, chat.chat_id, f"{name} ({connector.display_name})")
        portal, created = await self.pb.portals.get_or_create(
            chat,
            name=f"{name} ({connector.display_name})",
            network_name=connector.display_name,
            ghost=ghost.mxid,
            requested=actor,
            initiated_at=now,
        )
        await ghost.ensure_joined(portal.room_id)
        if not created:
            await self.pb.store.set_initiated(portal.room_id, actor, now)
            await self._bring_in(portal, actor)
        shown = (
            f"“{template}”"
            + (f" ({language})" if language else "")
            + (f" with {', '.join(params)}" if params else "")
        )
        record = (
            f"Outreach: {actor} started this conversation on {_when(now)} with the approved template {shown}. "
            f"{connector.display_name} accepts only templates until the client answers."
        )
        # A transaction id from the command's event: the same command handled again (a
        # redelivered transaction) posts the same notice, whose id the outbox already holds.
        kwargs = {"txn_id": f"hl.outreach.{source_event_id}"} if source_event_id else {}
        event_id = await self.pb.bot.send_message_event(
            portal.room_id, EventType.ROOM_MESSAGE, mc.notice(record), **kwargs
        )
        # The template leaves as the employee's message through the outbox: one way out.
        await self.enqueue(
            [
                {
                    "type": "m.room.message",
                    "room_id": portal.room_id,
                    "sender": actor,
                    "event_id": str(event_id),
                    "origin_server_ts": now,
                    "content": {
                        "msgtype": "m.text",
                        "body": record,
                        TEMPLATE_KEY: {"name": template, "language": language, "params": list(params)},
                    },
                }
            ]
        )
        await self._audit(
            actor,
            "outreach.contact",
            portal.room_id,
            decision,
            template=template,
            created=created,
            chat=f"{chat.network}:{chat.account}:{chat.chat_id}",
        )
        log.info("event=outreach_contact room=%s network=%s created=%s", portal.room_id, network, created)
        return Started(portal, created, record)

    # Telegram-like: a one-time link the client opens

    async def invite_link(self, actor: str, network: str) -> tuple[str, int]:
        """The link and when it expires (ms)."""
        connector = self._connector(network, InviteLinks)
        decision = await self._check(actor, network, "outreach.invite", network)
        code = "".join(
            secrets.choice(connector.invite_code_alphabet) for _ in range(connector.invite_code_length)
        )
        expires = self.clock.now_ms() + self.pb.policy.outreach.link_expiry_s * 1000
        hashed = code_hash(code)
        await self.pb.store.add_invite_code(hashed, network, connector.invite_account(), actor, expires)
        # The hash's head identifies the link in the trail; the code itself is never written down.
        await self._audit(
            actor, "outreach.invite", network, decision, link=hashed[:12], expires=_when(expires)
        )
        log.info("event=outreach_link network=%s link=%s", network, hashed[:12])
        return connector.invite_link(code), expires

    async def claim(self, event: RemoteEvent) -> str | None:
        """Before the portal exists: the employee the client's invitation code names, if valid."""
        connector = self.pb.connectors.get(event.chat.network)
        if not event.invite_code or not isinstance(connector, InviteLinks):
            return None
        claim = await self.pb.store.claim_invite_code(
            event.chat, code_hash(event.invite_code), self.clock.now_ms()
        )
        self._claims[(event.chat, event.message_id)] = (claim.status, claim.created_by, claim.created_at)
        return claim.created_by if claim.status == "ok" else None

    async def after_message(self, portal: PortalRow, event: RemoteEvent) -> None:
        """Once the client's message is recorded: say in the room where the conversation came
        from, or answer a client whose link no longer works."""
        found = self._claims.pop((event.chat, event.message_id), None)
        if found is None:
            return
        status, maker, made_at = found
        link = code_hash(event.invite_code)[:12]
        if status == "ok" and maker is not None:
            await self.pb.store.set_initiated(portal.room_id, maker, made_at or self.clock.now_ms())
            unavailable = await self.pb.unavailable()
            looker = stand_ins(maker, unavailable)[0] if stand_ins(maker, unavailable) else None
            if looker is not None:
                await self._bring_in(portal, looker)
            who = (
                f"{looker} looks after this conversation"
                + (f" (standing in for {maker})" if looker != maker else "")
                if looker
                else "nobody stands in for them"
            )
            text = f"Outreach: the client opened the invitation link {maker} made on {_when(made_at or 0)}; {who}."
            await self.pb.bot.send_message_event(portal.room_id, EventType.ROOM_MESSAGE, mc.notice(text))
            await self.pb.audit.record(
                actor=maker,
                action="outreach.link_used",
                subject=portal.room_id,
                verdict="allow",
                rule="outreach",
                link=link,
            )
            return
        company = self.pb.config.portals.company or "us"
        answer = {
            "used": f"This invitation link was already used. You are welcome to write here all the same: someone from {company} will answer you.",
            "expired": f"This invitation link has expired. You are welcome to write here all the same: someone from {company} will answer you.",
        }.get(
            status,
            f"This invitation link is not valid. You are welcome to write here all the same: someone from {company} will answer you.",
        )
        await self.pb.tell_client(
            portal, answer, key=f"invite:{portal.room_id}:{event.message_id}", what="Invitation answer"
        )
        await self.pb.audit.record(
            actor=self.pb.az.bot_mxid,
            action="outreach.link_refused",
            subject=portal.room_id,
            verdict="deny",
            rule="outreach",
            status=status,
            link=link,
        )

    async def _not_someone_elses(self, actor: str, chat: ChatRef) -> None:
        """An outreach does not take over a colleague's client: reassigning is an admin's call."""
        portal = await self.pb.portals.get(chat)
        if portal is None or portal.assignee in (None, actor) or actor in self.pb.policy.admins:
            return
        members = await self.pb.bot.get_room_members(portal.room_id, (Membership.JOIN, Membership.INVITE))
        if actor not in members:
            raise OutreachError(
                f"This client already has a conversation ({portal.name}), looked after by {portal.assignee}; "
                "ask them, or an admin to assign it to you."
            )

    async def _bring_in(self, portal: PortalRow, user: str) -> None:
        """The employee who reached out looks after an existing conversation too."""
        if not (await self.pb.join_decision(user, portal)).allowed:
            return
        await self.pb.store.set_assignee(portal.room_id, user)
        self.pb.portals.forget(portal.room_id)
        await self.pb.notify.emit("conversation.assigned", portal.room_id, assignee=user, by=user)
        _, problems = await self.pb.bring_in(portal, (user,))
        for problem in problems:
            log.warning("event=outreach_invite_failed room=%s problem=%r", portal.room_id, problem)
