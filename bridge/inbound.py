"""Inbound: what a client does becomes events in the company's portal room.

Order of work matters for the record: dedupe first (a redelivered update never posts twice),
then portal and ghost, then the send with a transaction id derived from the remote ids (a retry
after a crash is deduplicated by the homeserver too), and the message map last. The connector
confirms the update to its network only after :meth:`Inbound.handle` returned.

Nothing a client does is lost or erased here: an edit is an ``m.replace`` (the original stays),
a deletion is an annotation replying to the message, media the bridge cannot fetch is a notice.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Awaitable, Callable, ClassVar, Mapping, NamedTuple

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixRequestError
from mautrix.api import Method, Path
from mautrix.types import EventType

from bridge import matrix_content as mc
from bridge.events import ChatRef, RemoteEvent, RemoteEventKind, RichText
from bridge.networks.base import MediaUnavailable, OnSent
from bridge.notify import Notifier
from bridge.portals import Portals
from bridge.store import AccountRow, MessageLink, PortalRow, ReactionLink, Store
from puppets.ghosts import Ghosts, PictureFetch

log = logging.getLogger("houseline.inbound")

REMOTE_KEY = mc.REMOTE_KEY
#: How long a report on a company message waits for the message's mapping to be recorded.
STATUS_WAIT_S = 10.0


def txn_id_for(event: RemoteEvent, suffix: str = "") -> str:
    """Deterministic: the same remote event always maps to the same transaction id."""
    raw = f"hl.{event.chat.network}.{event.chat.account}.{event.chat.chat_id}.{event.message_id}{suffix}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


@dataclass
class _Context:
    event: RemoteEvent
    portal: PortalRow
    ghost: IntentAPI
    ghost_name: str
    #: Whether the message has a posting mark (the store's, set before its send), when
    #: already read with the dedupe lookup (None: not looked up yet).
    marked: bool | None = None


#: Called after a client's message was committed to its portal (the disclaimer goes out then).
AfterMessage = Callable[[PortalRow, RemoteEvent], Awaitable[None]]
#: Claims the invitation code a client's first message carries: the employee it names, or None.
ClaimInvite = Callable[[RemoteEvent], Awaitable[str | None]]

#: Told when a company account is switched on or off on the network's side: (network, account,
#: enabled, owner's name). Capture health announces a disconnected Telegram Business account.
OnAccount = Callable[[str, str, bool, str], None]

#: Kinds of client event that leave the client waiting for an answer (the reminder clock).
_WAITS = (RemoteEventKind.MESSAGE, RemoteEventKind.UNSUPPORTED)


class _Route(NamedTuple):
    """How :meth:`Inbound.handle` treats one kind of remote event."""

    #: The name of the :class:`Inbound` method that handles it.
    method: str
    #: True: a client's post in the portal. It is deduplicated, the sender's ghost and the portal
    #: come first, the method gets a :class:`_Context` and returns ``(event_id, has_media)`` to
    #: commit as the message mapping (None: nothing to map). False: the method gets the bare
    #: event and does all of its own work (state of accounts and chats, receipts, membership).
    in_portal: bool


class Inbound:
    #: Every kind of remote event and its handler, in one table built once: a kind the table
    #: misses is logged and acknowledged, and tests/test_inbound_dispatch.py checks it misses none.
    ROUTES: ClassVar[Mapping[RemoteEventKind, _Route]] = MappingProxyType(
        {
            RemoteEventKind.MESSAGE: _Route("_message", in_portal=True),
            RemoteEventKind.EDIT: _Route("_edit", in_portal=True),
            RemoteEventKind.DELETE: _Route("_delete", in_portal=True),
            RemoteEventKind.REACTION: _Route("_reaction", in_portal=True),
            RemoteEventKind.UNSUPPORTED: _Route("_unsupported", in_portal=True),
            RemoteEventKind.ACCOUNT: _Route("_account", in_portal=False),
            RemoteEventKind.CHAT_STATUS: _Route("_chat_status", in_portal=False),
            RemoteEventKind.MEMBERSHIP: _Route("_membership", in_portal=False),
            RemoteEventKind.MIGRATE: _Route("_migrate", in_portal=False),
            RemoteEventKind.READ: _Route("_status", in_portal=False),
            RemoteEventKind.DELIVERY_FAILED: _Route("_status", in_portal=False),
        }
    )

    def __init__(
        self,
        store: Store,
        portals: Portals,
        ghosts: Ghosts,
        network_names: dict[str, str],
        *,
        after_message: AfterMessage | None = None,
        claim_invite: ClaimInvite | None = None,
        notifier: Notifier | None = None,
        on_account: OnAccount | None = None,
        pictures: Mapping[str, PictureFetch] | None = None,
    ) -> None:
        self.store = store
        self.portals = portals
        self.ghosts = ghosts
        self.network_names = network_names
        self.after_message = after_message
        self.claim_invite = claim_invite
        self.notifier = notifier
        self.on_account = on_account
        #: Per network with profile pictures (its connector is a PictureSource), the fetch.
        self.pictures: Mapping[str, PictureFetch] = pictures or {}
        #: Per chat, the bookkeeping still being committed for a message already in its room.
        #: The chat's next message may be sent meanwhile (see ``on_sent``); whatever looks up an
        #: earlier message of the chat (replies, edits, deletions, reactions) waits for it.
        self._tails: dict[ChatRef, asyncio.Future[None]] = {}

    async def handle(self, event: RemoteEvent, *, on_sent: OnSent | None = None) -> None:
        """Hand the event to its kind's handler (:attr:`ROUTES`); returns once it is committed."""
        route = self.ROUTES.get(event.kind)
        if route is None:
            self._unhandled(event)
            return
        handler = getattr(self, route.method)
        if not route.in_portal:
            await handler(event)
            return
        ctx = await self._enter(event)
        if ctx is None:
            return
        result = await handler(ctx)
        if result is not None:
            event_id, has_media = result
            await self._commit(ctx, event_id, has_media, on_sent=on_sent)

    def _unhandled(self, event: RemoteEvent) -> None:
        """A kind without a handler (a connector ahead of this core): one line for the operator,
        and the connector acknowledges it, rather than have the update fail and come back again."""
        log.warning(
            "event=inbound_unhandled network=%s chat=%s message_id=%s kind=%s",
            event.chat.network,
            event.chat.chat_id,
            event.message_id,
            getattr(event.kind, "value", event.kind),
        )

    async def _lookup(self, event: RemoteEvent) -> tuple[bool, bool | None]:
        """(already bridged, has a send mark), read in one lookup: the mark is written only later,
        by the handling of this same message, so :meth:`_send` can use what was read here. A
        reaction is not looked up (None: not read): it carries the sender's whole set, compared
        with the record's by :meth:`_reaction`."""
        if event.kind is RemoteEventKind.REACTION:
            return False, None
        chat = event.chat
        mapped, marked_room = await self.store.inbound_state(chat, event.message_id)
        if mapped:
            log.info(
                "event=inbound_duplicate network=%s chat=%s message_id=%s",
                chat.network,
                chat.chat_id,
                event.message_id,
            )
        return mapped, marked_room is not None

    async def _enter(self, event: RemoteEvent) -> _Context | None:
        """Dedupe first (a redelivered update never posts twice), then the sender's ghost and the
        portal, joined; None when the event is already in its room."""
        duplicate, marked = await self._lookup(event)
        if duplicate:
            return None
        network_name = self.network_names.get(event.chat.network, event.chat.network)
        role = "company account" if event.from_account else None
        ghost_name = f"{event.sender.display_name} ({network_name}{', ' + role if role else ''})"
        ghost = await self._ghost(event, ghost_name)
        requested = None
        if event.invite_code and event.kind is RemoteEventKind.MESSAGE and self.claim_invite is not None:
            requested = await self.claim_invite(event)  # before the portal: it decides who gets it
        portal = await self._portal(event, ghost.mxid, requested)
        await ghost.ensure_joined(portal.room_id)
        return _Context(event, portal, ghost, ghost_name, marked)

    async def _ghost(self, event: RemoteEvent, name: str) -> IntentAPI:
        """The sender's ghost, named ``name`` and with their picture where the network has one."""
        sender = event.sender
        return await self.ghosts.ensure(
            sender.network, sender.id, name, picture=sender.picture, fetch=self.pictures.get(sender.network)
        )

    async def _commit(self, ctx: _Context, event_id: str, has_media: bool, *, on_sent: OnSent | None) -> None:
        """Record a post that is in the room. The connector may start the chat's next event once
        the send is done (``on_sent``: the send is what a chat's order depends on); the bookkeeping
        of one message after another stays in order through the chat's tail."""
        key = ctx.event.chat
        before = self._tails.get(key)
        tail: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = tail
        if on_sent is not None:
            on_sent()
        try:
            if before is not None and not before.done():
                await asyncio.wait([before])
            await self._record(ctx, event_id, has_media)
        finally:
            tail.set_result(None)
            if self._tails.get(key) is tail:
                del self._tails[key]

    async def _record(self, ctx: _Context, event_id: str, has_media: bool) -> None:
        """The mapping, the end of the posting mark and the reminder clock in one commit (so a
        crash leaves either all or none); then what follows from it: log, webhooks, disclaimer."""
        event, portal = ctx.event, ctx.portal
        chat = event.chat
        await self.store.record_inbound(
            MessageLink(
                chat.network,
                chat.account,
                chat.chat_id,
                event.message_id,
                portal.room_id,
                event_id,
                "in",
                has_media=has_media,
                created_at=event.timestamp_ms,
            ),
            waits=(not event.from_account) if event.kind in _WAITS else None,
        )
        log.info(
            "event=inbound_bridged network=%s chat=%s message_id=%s room=%s event_id=%s kind=%s",
            chat.network,
            chat.chat_id,
            event.message_id,
            portal.room_id,
            event_id,
            event.kind.value,
        )
        await self._notify(ctx, event_id)
        if event.kind is RemoteEventKind.MESSAGE and self.after_message is not None:
            await self.after_message(await self.portals.by_room(portal.room_id) or portal, event)

    async def _notify(self, ctx: _Context, event_id: str) -> None:
        """Tell the webhook subscribers, only once the post is on the record."""
        if self.notifier is None:
            return
        event = ctx.event
        chat = event.chat
        await self.notifier.emit(
            "message.inbound",
            ctx.portal.room_id,
            event_id=event_id,
            kind=event.kind.value,
            network=chat.network,
            account=chat.account,
            chat_id=chat.chat_id,
            remote_id=event.message_id,
            sender=ctx.ghost.mxid,
            from_account=event.from_account,
            text=event.text.body if event.text else None,
            media=event.media.kind.value if event.media else None,
            target_id=event.target_id,
        )

    # helpers

    async def _portal(self, event: RemoteEvent, ghost: str, requested: str | None = None) -> PortalRow:
        network_name = self.network_names.get(event.chat.network, event.chat.network)
        label = f"{network_name} group" if event.is_group else network_name
        portal, _ = await self.portals.get_or_create(
            event.chat,
            name=f"{event.chat_title or event.sender.display_name} ({label})",
            network_name=network_name,
            ghost=ghost,
            requested=requested,
            initiated_at=event.timestamp_ms if requested else None,
        )
        return portal

    async def _bot_notice(self, portal: PortalRow, event: RemoteEvent, text: str) -> None:
        await self.portals.bot.send_message_event(
            portal.room_id, EventType.ROOM_MESSAGE, mc.notice(text), txn_id=txn_id_for(event)
        )

    def _remote(self, event: RemoteEvent) -> dict[str, str]:
        return {
            "network": event.chat.network,
            "account": event.chat.account,
            "chat_id": event.chat.chat_id,
            "message_id": event.message_id,
            "sender_id": event.sender.id,
        }

    async def _send(
        self, ctx: _Context, content: dict[str, Any], *, as_bot: bool = False, suffix: str = ""
    ) -> str:
        content[REMOTE_KEY] = self._remote(ctx.event)
        if ctx.event.from_account:
            content[REMOTE_KEY]["sent_by_account"] = True
        chat = ctx.event.chat
        if not suffix:
            # A crash between the send and the mapping would post it twice on redelivery (the
            # homeserver forgets transaction ids when it restarts): mark it first, and when a
            # marked message comes again, look in the room before sending.
            marked = ctx.marked
            if marked is None:
                marked = await self.store.inbound_posting(chat, ctx.event.message_id) is not None
            if marked:
                found = await self._find_in_room(ctx.portal.room_id, content[REMOTE_KEY])
                if found is not None:
                    log.info(
                        "event=inbound_settled room=%s message_id=%s event_id=%s",
                        ctx.portal.room_id,
                        ctx.event.message_id,
                        found,
                    )
                    return found
            else:
                await self.store.mark_inbound_posting(chat, ctx.event.message_id, ctx.portal.room_id)
                ctx.marked = True
        intent = self.portals.bot if as_bot else ctx.ghost
        return await intent.send_message_event(
            ctx.portal.room_id,
            EventType.ROOM_MESSAGE,
            content,
            txn_id=txn_id_for(ctx.event, suffix),
            timestamp=ctx.event.timestamp_ms,
        )

    async def _find_in_room(self, room_id: str, remote: dict[str, Any], depth: int = 200) -> str | None:
        """The event already carrying this remote message, among the room's latest events."""
        keys = ("network", "account", "chat_id", "message_id")
        page = await self.portals.bot.api.request(
            Method.GET, Path.v3.rooms[room_id].messages, query_params={"dir": "b", "limit": str(depth)}
        )
        for event in page.get("chunk", []):
            found = (event.get("content") or {}).get(REMOTE_KEY)
            if isinstance(found, dict) and all(found.get(k) == remote.get(k) for k in keys):
                return event.get("event_id")
        return None

    async def _target(self, ctx: _Context, remote_id: str | None) -> MessageLink | None:
        if remote_id is None:
            return None
        chat = ctx.event.chat
        tail = self._tails.get(chat)
        if tail is not None and not tail.done():
            await asyncio.wait([tail])  # the message referred to may be one still being recorded
        return await self.store.get_message(chat, remote_id)

    # one method per kind

    async def _message(self, ctx: _Context) -> tuple[str, bool]:
        event = ctx.event
        media = event.media
        if media is not None and media.fetch is None:
            return await self._media_unavailable(ctx, media.unavailable_reason), False
        if media is not None:
            assert media.fetch is not None
            try:
                data = await media.fetch()
            except MediaUnavailable as e:
                # Gone for good on the network's side: say so rather than retry for ever.
                log.warning(
                    "event=inbound_media_unavailable network=%s chat=%s message_id=%s",
                    event.chat.network,
                    event.chat.chat_id,
                    event.message_id,
                )
                return await self._media_unavailable(ctx, e.reason), False
            mxc = await ctx.ghost.upload_media(
                data, mime_type=media.mimetype, filename=media.file_name, size=len(data)
            )
            content = mc.media_content(media, str(mxc), event.text)
        elif event.location is not None:
            content = mc.location_content(event.location)
        elif event.contact is not None:
            content = mc.contact_content(event.contact)
        else:
            content = mc.text_content(event.text or RichText(""))
        replied = await self._target(ctx, event.reply_to)
        if replied is not None:
            mc.reply_to(content, replied.event_id)
        return await self._send(ctx, content), media is not None

    async def _media_unavailable(self, ctx: _Context, reason: str) -> str:
        event, media = ctx.event, ctx.event.media
        assert media is not None
        body = f"{ctx.ghost_name} sent {mc.MEDIA_WORDS[media.kind]} ({media.file_name}), which could not be brought over: {reason}."
        if event.text and event.text.body:
            body += f" Its caption: {event.text.body}"
        return await self._send(ctx, mc.notice(body), as_bot=True)

    async def _edit(self, ctx: _Context) -> tuple[str, bool]:
        event = ctx.event
        original = await self._target(ctx, event.target_id)
        text = event.text or RichText("")
        if original is None:
            # Edited before we knew it (e.g. sent while the bridge was not yet connected).
            return await self._send(ctx, mc.text_content(RichText(f"(edited) {text.body}"))), False
        if original.has_media:
            # A media event's m.new_content would need the file again; record the new caption
            # as a reply instead, so the first caption stays visible too.
            content = mc.reply_to(mc.text_content(RichText(f"(new caption) {text.body}")), original.event_id)
            return await self._send(ctx, content), False
        return await self._send(ctx, mc.edit_content(original.event_id, mc.text_content(text))), False

    async def _delete(self, ctx: _Context) -> tuple[str, bool]:
        event = ctx.event
        original = await self._target(ctx, event.target_id)
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(event.timestamp_ms / 1000))
        network_name = self.network_names.get(event.chat.network, event.chat.network)
        if original is None:
            body = (
                f"{ctx.ghost_name} deleted a message on {network_name} ({when}) that never reached this room."
            )
            return await self._send(ctx, mc.notice(body), as_bot=True), False
        body = f"{ctx.ghost_name} deleted this message on {network_name} ({when}). It stays here as part of the record."
        content = mc.notice(body, in_reply_to=original.event_id)
        content["net.houseline.client_deleted"] = {"event_id": original.event_id, "ts": event.timestamp_ms}
        return await self._send(ctx, content, as_bot=True), False

    async def _reaction(self, ctx: _Context) -> None:
        event = ctx.event
        chat = event.chat
        original = await self._target(ctx, event.target_id)
        if original is None:
            log.info("event=reaction_unmapped chat=%s target=%s", chat.chat_id, event.target_id)
            return None
        current = {
            r.emoji: r for r in await self.store.get_reactions(chat, original.remote_id, event.sender.id)
        }
        wanted = set(event.reactions)
        for emoji in wanted - current.keys():
            event_id = await ctx.ghost.send_message_event(
                ctx.portal.room_id,
                EventType.REACTION,
                {"m.relates_to": {"rel_type": "m.annotation", "event_id": original.event_id, "key": emoji}},
                txn_id=txn_id_for(event, f".{emoji.encode().hex()}"),
                timestamp=event.timestamp_ms,
            )
            await self.store.add_reaction(
                ReactionLink(
                    chat.network,
                    chat.account,
                    chat.chat_id,
                    original.remote_id,
                    event.sender.id,
                    emoji,
                    ctx.portal.room_id,
                    event_id,
                )
            )
        for emoji in current.keys() - wanted:
            link = current[emoji]
            # The ghost may not redact (portal power levels); the bot does, and the homeserver
            # keeps the redacted content (redaction_retention_period: null).
            await self.portals.bot.redact(
                ctx.portal.room_id, link.event_id, reason="the client removed this reaction"
            )
            await self.store.delete_reaction(link)
        log.info(
            "event=inbound_reactions chat=%s target=%s now=%d", chat.chat_id, original.remote_id, len(wanted)
        )
        return None

    async def _status(self, event: RemoteEvent) -> None:
        """The network reports on a company message: the client read it (a read receipt from
        the client's ghost), or it did not reach the client after all (a notice replying to it,
        so the employee never believes a client got what it did not)."""
        chat = event.chat
        portal = await self.store.get_portal(chat)
        if portal is None or event.target_id is None:
            log.info(
                "event=status_ignored network=%s chat=%s kind=%s reason=no_portal",
                chat.network,
                chat.chat_id,
                event.kind.value,
            )
            return
        link = await self.store.wait_for_message(chat, event.target_id, STATUS_WAIT_S)
        if event.kind is RemoteEventKind.READ:
            if link is None:
                log.info(
                    "event=status_ignored network=%s chat=%s kind=read reason=unknown_message",
                    chat.network,
                    chat.chat_id,
                )
                return
            ghost = self.ghosts.intent(self.ghosts.user_id(event.sender.network, event.sender.id))
            await ghost.mark_read(portal.room_id, link.event_id)
            log.info("event=client_read room=%s event_id=%s", portal.room_id, link.event_id)
            return
        if link is not None:
            text = f"Not delivered to the client: {event.description}"
            content = mc.notice(text, in_reply_to=link.event_id)
        else:
            content = mc.notice(f"A message to the client was not delivered: {event.description}")
        await self.portals.bot.send_message_event(
            portal.room_id, EventType.ROOM_MESSAGE, content, txn_id=txn_id_for(event)
        )
        log.warning(
            "event=delivery_failed room=%s network=%s chat=%s message_id=%s event_id=%s",
            portal.room_id,
            chat.network,
            chat.chat_id,
            event.target_id,
            link.event_id if link else "",
        )

    async def _account(self, event: RemoteEvent) -> None:
        """Record the company account; when it is switched off or on, say so in its portals."""
        info = event.account
        assert info is not None
        previous = await self.store.get_account(info.network, info.id)
        await self.store.put_account(
            AccountRow(
                info.network, info.id, info.owner.id, info.owner.display_name, info.enabled, info.can_reply
            )
        )
        log.info(
            "event=account_updated network=%s account=%s enabled=%s can_reply=%s",
            info.network,
            info.id,
            info.enabled,
            info.can_reply,
        )
        if self.on_account is not None:
            self.on_account(info.network, info.id, info.enabled, info.owner.display_name)
        if previous is None or previous.enabled == info.enabled:
            return
        network_name = self.network_names.get(info.network, info.network)
        if info.enabled:
            text = f"The company's {network_name} account of {info.owner.display_name} is connected again: this conversation is bridged once more."
        else:
            text = (
                f"The company's {network_name} account of {info.owner.display_name} was disconnected from Houseline: "
                "new messages from this client are not bridged and answers here cannot be sent until it is reconnected."
            )
        for portal in await self.store.portals_of_account(info.network, info.id):
            await self.portals.set_status(portal, "active" if info.enabled else "disconnected")
            await self.portals.bot.send_message_event(
                portal.room_id,
                EventType.ROOM_MESSAGE,
                mc.notice(text),
                txn_id=txn_id_for(event, f".{portal.room_id}".replace("!", "").replace(":", "_")),
            )

    async def _chat_status(self, event: RemoteEvent) -> None:
        portal = await self.portals.get(event.chat)
        name = event.sender.display_name
        network_name = self.network_names.get(event.chat.network, event.chat.network)
        if portal is None:
            if not event.is_group or event.blocked:
                return  # blocked before ever writing: there is no conversation to annotate
            # The company was added to a group: its portal exists from now on.
            adder = await self._ghost(event, f"{name} ({network_name})")
            portal = await self._portal(event, adder.mxid)
            await adder.ensure_joined(portal.room_id)
            await self._bot_notice(
                portal, event, f'{name} added the company to the {network_name} group "{event.chat_title}".'
            )
            return
        status = "blocked" if event.blocked else "active"
        if portal.status == status:
            return
        await self.portals.set_status(portal, status)
        if event.is_group:
            text = (
                f"{name} removed the company from the {network_name} group: messages sent here will not reach it."
                if event.blocked
                else f"{name} added the company to the {network_name} group again."
            )
        else:
            text = (
                f"{name} blocked the company on {network_name}: messages sent here will not reach them."
                if event.blocked
                else f"{name} unblocked the company on {network_name}: messages sent here reach them again."
            )
        await self._bot_notice(portal, event, text)
        log.info(
            "event=chat_status network=%s chat=%s status=%s", event.chat.network, event.chat.chat_id, status
        )

    async def _membership(self, event: RemoteEvent) -> None:
        """A join is deduplicated and brings the member's ghost into the portal (made if need be)
        with nothing to post; a leave only takes the ghost out of a portal that exists."""
        if not event.joined:
            await self._left(event)
            return
        ctx = await self._enter(event)
        if ctx is not None:
            log.info(
                "event=member_joined network=%s chat=%s user=%s",
                event.chat.network,
                event.chat.chat_id,
                event.sender.id,
            )

    async def _left(self, event: RemoteEvent) -> None:
        portal = await self.portals.get(event.chat)
        if portal is None:
            return
        ghost = self.ghosts.intent(self.ghosts.user_id(event.sender.network, event.sender.id))
        try:
            await ghost.leave_room(portal.room_id)
        except MatrixRequestError as e:  # already gone: leaving twice is not an error for the record
            log.info(
                "event=member_leave_skipped room=%s user=%s error=%s",
                portal.room_id,
                ghost.mxid,
                type(e).__name__,
            )
        log.info(
            "event=member_left network=%s chat=%s user=%s",
            event.chat.network,
            event.chat.chat_id,
            event.sender.id,
        )

    async def _migrate(self, event: RemoteEvent) -> None:
        portal = await self.portals.get(event.chat)
        if portal is None:
            return  # already moved (a redelivered update) or never bridged
        moved = await self.portals.move(portal, event.new_chat_id)
        network_name = self.network_names.get(event.chat.network, event.chat.network)
        await self._bot_notice(
            moved,
            event,
            f"This {network_name} group {event.description or 'moved to a new chat'}; the conversation continues here.",
        )
        log.info(
            "event=portal_moved room=%s old_chat=%s new_chat=%s",
            portal.room_id,
            event.chat.chat_id,
            event.new_chat_id,
        )

    async def _unsupported(self, ctx: _Context) -> tuple[str, bool]:
        event = ctx.event
        body = f"{ctx.ghost_name} sent {event.description}, which Houseline cannot show here yet."
        if event.text and event.text.body:
            body += f" Its text: {event.text.body}"
        return await self._send(ctx, mc.notice(body), as_bot=True), False
