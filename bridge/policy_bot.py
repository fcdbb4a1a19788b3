"""The policy bot: acts on what the pure policy engine decides.

The engine (policies.engine) only says allow / deny / hold and why; this module does the acting
in the rooms: it picks who is invited to a new portal, sends the client disclaimer, undoes joins
that break a rule, stops denied messages with a notice that names the rule (and mentions the
compliance observers), holds messages until a senior is present, and appends every decision to
the hash-chained audit trail. Admin commands live in bridge.commands.

It lives in the bridge rather than in policies/ because acting needs the portals, the store and
the connectors; policies/ stays pure.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from mautrix.appservice import AppService
from mautrix.errors import MatrixRequestError
from mautrix.types import EventType, Membership

from bridge import matrix_content as mc
from bridge.audit_log import AuditLog
from bridge.config import Config
from bridge.events import ChatRef, Delivery, DeliveryKind, RemoteEvent, RichText
from bridge.networks import network_names, spec_of
from bridge.networks.base import Connector, DeliveryError
from bridge.notify import Notifier
from bridge.portals import Portals
from bridge.store import MessageLink, PortalRow, Store
from bridge.portals import Assigned
from policies.engine import (
    Decision,
    FileInfo,
    Join,
    RoomState,
    SendOut,
    Verdict,
    choose_assignees,
    decide,
    disclaimer_for,
    roles_of,
    room_managers,
    stand_ins,
)
from policies.model import Policy
from puppets.ghosts import Ghosts

log = logging.getLogger("houseline.policy")

#: Where an employee's classification labels travel in a Matrix event (a list of strings).
LABELS_KEY = "net.houseline.labels"


class PolicyBot:
    def __init__(
        self,
        *,
        config: Config,
        az: AppService,
        store: Store,
        portals: Portals,
        ghosts: Ghosts,
        audit: AuditLog,
        connectors: dict[str, Connector],
        policy: Policy,
    ) -> None:
        self.config = config
        self.az = az
        self.store = store
        self.portals = portals
        self.ghosts = ghosts
        self.audit = audit
        self.connectors = connectors
        self.policy = policy
        #: Wakes the outbox worker of a room whose held events were put back in its queue.
        self.wake_outbox: Callable[[str], None] | None = None
        #: Where every part reports what happened (webhooks, metrics subscribe to it).
        self.notify = Notifier()

    @property
    def bot(self):
        return self.az.intent

    def is_ours(self, user_id: str) -> bool:
        return user_id == self.az.bot_mxid or self.ghosts.is_ghost(user_id)

    # portal creation

    async def unavailable(self) -> dict[str, tuple[str, ...]]:
        """Who must not get new clients, with who stands in: the offboarded (their successors)
        and the absent (their cover; nobody named: nobody)."""
        out: dict[str, tuple[str, ...]] = {}
        for user, absence in (await self.store.absences()).items():
            out[user] = absence.covers
        for user, successors in (await self.store.offboarded()).items():
            out[user] = tuple(u for u in successors.split(",") if u)
        return out

    async def assignees(self, chat: ChatRef, requested: str | None = None) -> Assigned:
        """Who is invited to a new client conversation: the employee who started it (an
        outreach) if the join rules let them in, else the assignment rule with the offboarded
        and absent skipped; plus the observers."""
        observers = tuple(sorted(self.policy.observers))
        unavailable = await self.unavailable()
        if requested is not None and requested in unavailable:
            # The maker of a link is away (or left): their stand-in takes the client.
            found = stand_ins(requested, unavailable)
            requested = found[0] if found else None
        if requested is not None:
            decision = await self.join_decision(requested, None)
            if decision.allowed:
                managers = self._managers_for(requested)
                return Assigned(tuple(dict.fromkeys((requested, *observers, *managers))), requested)
        counter = await self.store.next_counter("assignment")
        chosen = choose_assignees(
            self.policy,
            network=chat.network,
            account_key=f"{chat.network}:{chat.account}",
            invite_list=self.config.portals.invite,
            counter=counter,
            unavailable=unavailable,
        )
        note = ""
        if chosen.replaced:
            note = "; ".join(
                f"{u} is unavailable, " + (f"{', '.join(by)} stand(s) in" if by else "nobody stands in")
                for u, by in chosen.replaced
            )
        if chosen.fallback:
            note = (note + "; " if note else "") + (
                f"nobody the assignment rule names is available, so the absence fallback ({', '.join(chosen.users)}) takes it"
                if chosen.users
                else "nobody the assignment rule names is available and the policy names no absence fallback: nobody was invited"
            )
        managers = self._managers_for(chosen.users[0]) if chosen.users else ()
        invite = tuple(dict.fromkeys((*chosen.users, *observers, *managers)))
        return Assigned(
            invite, chosen.users[0] if chosen.users else None, note, tell_observers=chosen.fallback
        )

    def initial_state(self) -> list[dict[str, Any]]:
        """Server ACL: the company's homeserver and the allowlisted partners, nobody else."""
        # The specification matches ACL entries against host names without the port, Synapse
        # against the whole server name: list both forms so either reading allows exactly these.
        names = [self.config.homeserver.domain, *sorted(self.policy.join.allowed_servers)]
        allowed = list(dict.fromkeys(form for name in names for form in (name, _host(name))))
        ip_literals = any(_is_ip_literal(s) for s in allowed)
        return [
            {
                "type": "m.room.server_acl",
                "state_key": "",
                "content": {"allow": allowed, "deny": [], "allow_ip_literals": ip_literals},
            }
        ]

    async def portal_created(self, portal: PortalRow, assigned: Assigned) -> None:
        await self.audit.record(
            actor=self.az.bot_mxid,
            action="portal.created",
            subject=portal.room_id,
            verdict="allow",
            rule="outreach" if portal.initiated_by else "assignment." + self.policy.assignment.mode,
            invited=list(assigned.invite),
            assignee=assigned.assignee,
            note=assigned.note,
            chat=f"{portal.network}:{portal.account}:{portal.chat_id}",
        )
        await self.notify.emit(
            "conversation.created",
            portal.room_id,
            network=portal.network,
            account=portal.account,
            chat_id=portal.chat_id,
            name=portal.name,
            assignee=assigned.assignee,
            invited=list(assigned.invite),
            initiated_by=portal.initiated_by,
        )
        if assigned.note:
            mention = tuple(sorted(self.policy.observers)) if assigned.tell_observers else ()
            await self._notice(
                portal.room_id,
                f"Assignment: {assigned.note}.",
                mention=mention,
                txn=f"hl.assigned.{portal.room_id}",
            )

    async def ensure_disclaimer(self, portal: PortalRow, event: RemoteEvent) -> None:
        """Sent to the client on first contact and recorded in the portal; never twice."""
        if portal.disclaimer_sent or event.from_account:
            return
        text = disclaimer_for(self.policy, event.chat.network, event.sender.language)
        if not text:
            return
        if not await self.tell_client(
            portal,
            text,
            key=f"disclaimer:{portal.room_id}",
            what="Disclaimer",
            retry_note="it will be tried again with the client's next message",
        ):
            return
        await self.store.set_portal_flag(portal.room_id, "disclaimer_sent", True)
        self.portals.forget(portal.room_id)
        await self.audit.record(
            actor=self.az.bot_mxid,
            action="disclaimer.sent",
            subject=portal.room_id,
            verdict="allow",
            rule="disclaimers",
        )

    async def tell_client(
        self, portal: PortalRow, text: str, *, key: str, what: str, retry_note: str = ""
    ) -> bool:
        """A notice from the company to the client (disclaimer, out-of-hours, absence): sent,
        then recorded in the room and in the message map. A failure is said in the room."""
        connector = self.connectors.get(portal.network)
        if connector is None:
            return False
        delivery = Delivery(
            kind=DeliveryKind.MESSAGE,
            chat=portal.chat,
            room_id=portal.room_id,
            event_id=key,
            text=RichText(text),
        )
        try:
            receipt = await connector.send(delivery)
        except DeliveryError as e:
            await self._notice(
                portal.room_id,
                f"The {what.lower()} notice could not be sent to the client ({e.reason}){'; ' + retry_note if retry_note else ''}.",
            )
            return False
        notice_id = await self._notice(
            portal.room_id, f"{what} sent to the client: “{text}”", txn=f"hl.told.{key}".replace(":", "_")
        )
        for remote_id in receipt.message_ids:
            await self.store.add_message(
                MessageLink(
                    portal.network,
                    portal.account,
                    portal.chat_id,
                    remote_id,
                    portal.room_id,
                    notice_id,
                    "out",
                )
            )
        log.info(
            "event=client_told what=%s room=%s network=%s chat=%s remote_ids=%s",
            what.lower().replace(" ", "_"),
            portal.room_id,
            portal.network,
            portal.chat_id,
            ",".join(receipt.message_ids),
        )
        return True

    # joins

    async def room_state(self, room_id: str, portal: PortalRow) -> RoomState:
        # Every outbound message is a decision over the room's members: asked of the homeserver
        # once per room, then kept current by the member events the bridge receives (see
        # HouselineAppService.remember_state), instead of one request per message.
        store = self.az.state_store
        if await store.has_full_member_list(room_id):
            members = frozenset(await store.get_members(room_id, memberships=(Membership.JOIN,)))
        else:
            members = frozenset(await self.bot.get_joined_members(room_id))
        ghosts = frozenset(m for m in members if self.ghosts.is_ghost(m))
        return RoomState(
            room_id=room_id,
            members=members,
            ghosts=ghosts,
            is_group=_is_group(portal),
            caretakers=await self.caretakers(portal),
        )

    def _managers_for(self, assignee: str) -> tuple[str, ...]:
        """The managers a new conversation of ``assignee`` invites (teams.<name>.managers)."""
        return tuple(sorted(self.policy.managers_of.get(assignee, frozenset()) - {assignee}))

    async def caretakers(self, portal: PortalRow) -> frozenset[str]:
        """Who looks after the conversation: its assignee, and whoever stands in while they are
        away or after they left. Their teams' managers may read it. Only asked of the store when
        the policy names managers (it is part of every outbound decision)."""
        if portal.assignee is None:
            return frozenset()
        if not self.policy.managers:
            return frozenset({portal.assignee})
        unavailable = await self.unavailable()
        return frozenset({portal.assignee, *unavailable.get(portal.assignee, ())})

    async def sync_managers(self, room_id: str) -> None:
        """After the conversation moved (assigned, handed over, covered, back): the managers of
        its caretakers' teams are invited, and managers who were there only as managers of the
        earlier caretakers leave."""
        if not self.policy.managers:
            return
        portal = await self.portals.by_room(room_id)
        if portal is None:
            return
        state = await self.room_state(room_id, portal)
        wanted = room_managers(state, self.policy)
        members = await self.bot.get_room_members(room_id, (Membership.JOIN, Membership.INVITE))
        await self.bring_in(portal, sorted(wanted - set(members)))
        for user in sorted((set(members) & self.policy.managers) - wanted):
            if (await self.join_decision(user, portal)).allowed:
                continue  # in the room by a right of their own (a role)
            try:
                await self.bot.kick_user(
                    room_id, user, reason="no longer manages the team looking after this client"
                )
            except MatrixRequestError as e:
                log.warning("event=kick_failed room=%s user=%s error=%s", room_id, user, e)
                continue
            log.info("event=manager_left room=%s user=%s", room_id, user)

    async def join_decision(self, user: str, portal: PortalRow | None) -> Decision:
        """May ``user`` be in this portal (None: a portal not created yet)? Offboarded
        employees never; otherwise the join rules."""
        offboarded = await self.store.offboarded()
        if user in offboarded:
            return Decision(
                Verdict.DENY, "offboarding", f"{user} was offboarded (handed over to {offboarded[user]})"
            )
        state = (
            await self.room_state(portal.room_id, portal)
            if portal is not None
            else RoomState(room_id="", members=frozenset())
        )
        return decide(Join(user_id=user, room=state, local_domain=self.config.homeserver.domain), self.policy)

    async def bring_in(
        self, portal: PortalRow, users: tuple[str, ...] | list[str]
    ) -> tuple[list[str], list[str]]:
        """Invites whoever of ``users`` is not in the room yet and may be (the join rules, the
        offboarded refused). Returns (invited, problems in words for a report)."""
        members = await self.bot.get_room_members(portal.room_id, (Membership.JOIN, Membership.INVITE))
        invited: list[str] = []
        problems: list[str] = []
        for user in users:
            if user in members or user in invited:
                continue
            decision = await self.join_decision(user, portal)
            if not decision.allowed:
                problems.append(f"{portal.name}: {user} not invited ({decision.reason})")
                continue
            try:
                await self.bot.invite_user(portal.room_id, user)
                invited.append(user)
            except MatrixRequestError as e:
                problems.append(f"{portal.name}: could not invite {user} ({e.message})")
        return invited, problems

    async def on_member(self, raw: dict[str, Any], portal: PortalRow) -> None:
        """A join that breaks a rule is undone at once; every decision is audited."""
        user = raw.get("state_key")
        membership = (raw.get("content") or {}).get("membership")
        if membership != "join" or not isinstance(user, str) or self.is_ours(user):
            return
        decision = await self.join_decision(user, portal)
        await self.audit.record(
            actor=user,
            action="join",
            subject=portal.room_id,
            verdict=decision.verdict.name.lower(),
            rule=decision.rule,
            reason=decision.reason,
        )
        if decision.verdict is Verdict.DENY:
            try:
                await self.bot.kick_user(portal.room_id, user, reason=f"{decision.rule}: {decision.reason}")
            except MatrixRequestError as e:
                log.warning("event=kick_failed room=%s user=%s error=%s", portal.room_id, user, e)
            await self._notice(
                portal.room_id,
                f"{user} was removed. {decision.reason} (rule {decision.rule})",
                mention=tuple(sorted(self.policy.observers)),
            )
            log.info("event=join_denied room=%s user=%s rule=%s", portal.room_id, user, decision.rule)
            return
        if self.policy.join.senior_role and self.policy.join.senior_role in roles_of(user, self.policy):
            await self._release_held_for_senior(portal.room_id)

    async def _release_held_for_senior(self, room_id: str) -> None:
        """Held events go back to the outbox in one commit and leave through it like every
        message (decided again, delivered in order, crash-safe), never from here."""
        held = await self.store.held_for_senior(room_id)
        if not held:
            return
        await self.store.release_to_outbox(room_id, held)
        log.info("event=held_released room=%s events=%d", room_id, len(held))
        if self.wake_outbox is not None:
            self.wake_outbox(room_id)
        await self._notice(room_id, f"A senior is present: releasing {len(held)} held message(s).")

    # sending

    async def check_send(self, portal: PortalRow, raw: dict[str, Any], delivery: Delivery) -> Decision:
        """The engine's decision for an employee's event about to leave, audited."""
        if delivery.kind not in (
            DeliveryKind.MESSAGE,
            DeliveryKind.EDIT,
            DeliveryKind.REACTION,
            DeliveryKind.TEMPLATE,
        ):
            return Decision(Verdict.ALLOW, "sharing.not_content", "")
        content = raw.get("content") or {}
        labels = content.get(LABELS_KEY) if isinstance(content.get(LABELS_KEY), list) else []
        previous = None
        kind = {
            DeliveryKind.MESSAGE: "file" if delivery.media else "text",
            DeliveryKind.EDIT: "edit",
            DeliveryKind.REACTION: "reaction",
            DeliveryKind.TEMPLATE: "text",
        }[delivery.kind]
        if delivery.kind is DeliveryKind.EDIT:
            previous = await self._original_text(raw)
        media = delivery.media
        action = SendOut(
            sender=raw["sender"],
            room=await self.room_state(portal.room_id, portal),
            kind=kind,
            # A template's parameters are what reaches the client besides the approved wording.
            text=delivery.text.body
            if delivery.text
            else (delivery.reaction or " ".join(delivery.template_params)),
            html=delivery.text.html if delivery.text else None,
            file=FileInfo(
                name=media.file_name, mimetype=media.mimetype, size=len(media.data), head=media.data[:512]
            )
            if media
            else None,
            labels=frozenset(str(label) for label in labels),
            previous_text=previous,
        )
        decision = decide(action, self.policy)
        await self.audit.record(
            actor=raw["sender"],
            action=f"send.{kind}",
            subject=raw["event_id"],
            verdict=decision.verdict.name.lower(),
            rule=decision.rule,
            reason=decision.reason,
            room=portal.room_id,
        )
        return decision

    async def refuse(self, portal: PortalRow, raw: dict[str, Any], decision: Decision) -> None:
        """A denied message never leaves: it stays here, answered by a notice naming the rule."""
        if decision.verdict is Verdict.HOLD:
            await self.store.hold_for_senior(portal.room_id, raw["event_id"], raw)
            text = f"{decision.reason} (rule {decision.rule}) Nothing was sent to the client yet."
        else:
            text = f"{decision.reason} (rule {decision.rule}) Nothing was sent to the client; the message stays here as part of the record."
        await self._notice(
            portal.room_id, text, in_reply_to=raw["event_id"], mention=tuple(sorted(self.policy.observers))
        )
        await self.notify.emit(
            "message.denied",
            portal.room_id,
            event_id=raw["event_id"],
            sender=raw.get("sender"),
            verdict=decision.verdict.name.lower(),
            rule=decision.rule,
            reason=decision.reason,
        )

    async def _original_text(self, raw: dict[str, Any]) -> str | None:
        original = ((raw.get("content") or {}).get("m.relates_to") or {}).get("event_id")
        if not original:
            return None
        try:
            event = await self.bot.get_event(raw["room_id"], original)
        except MatrixRequestError:
            return None
        body = getattr(event.content, "body", None)
        return body if isinstance(body, str) else None

    # helpers

    async def _notice(
        self,
        room_id: str,
        text: str,
        *,
        in_reply_to: str | None = None,
        mention: tuple[str, ...] = (),
        txn: str | None = None,
    ) -> str:
        content = mc.notice(text, in_reply_to=in_reply_to)
        if mention:
            # Compliance observers are told: the mention notifies them wherever they read.
            content["m.mentions"] = {"user_ids": list(mention)}
            content["body"] += " (" + ", ".join(mention) + ")"
        kwargs = {"txn_id": txn} if txn else {}
        return await self.bot.send_message_event(room_id, EventType.ROOM_MESSAGE, content, **kwargs)


def _host(server: str) -> str:
    """The server name without its port (IPv6 literals keep their brackets)."""
    if server.startswith("["):
        return server[: server.index("]") + 1] if "]" in server else server
    return server.rsplit(":", 1)[0] if server.count(":") == 1 else server


def _is_ip_literal(server: str) -> bool:
    host = server.rsplit(":", 1)[0] if server.count(":") == 1 else server
    host = host.strip("[]")
    return all(part.isdigit() for part in host.split(".")) or ":" in host


def _is_group(portal: PortalRow) -> bool:
    """Whether the portal's chat has several clients, as its network reads the id (a portal of
    a network no longer registered is taken as one client: nothing is sent to it anyway)."""
    if portal.network not in network_names():
        return False
    return spec_of(portal.network).is_group_chat(portal.chat_id)
