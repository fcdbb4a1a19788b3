"""Outbound: what an employee does in a portal reaches the client, signed for the company.

Events of one room are handled in order; rooms are handled side by side. A failed send is
retried while the failure is temporary and otherwise reported in the room as a notice that
replies to the event, so an employee never believes a client got what it did not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import aiohttp
from mautrix.appservice import AppService
from mautrix.errors import MatrixError
from mautrix.types import EventType

from bridge.backoff import Backoff
from bridge.config import PortalsConfig
from bridge.events import (
    Delivery,
    DeliveryKind,
    DeliveryReceipt,
    MediaKind,
    OutboundMedia,
    RemoteLocation,
    RichText,
)
from bridge.matrix_content import TEMPLATE_KEY, notice, split_command
from bridge.networks.spec import DEFAULT_MAX_UPLOAD_BYTES
from bridge.networks.base import Connector, DeliveryError
from bridge.portals import Portals
from bridge.store import MessageLink, PortalRow, Store
from policies.engine import Verdict
from puppets.ghosts import Ghosts

if TYPE_CHECKING:
    from bridge.policy_bot import PolicyBot

log = logging.getLogger("houseline.outbound")

_CARRIED = {"m.room.message", "m.sticker", "m.reaction", "m.room.redaction"}
#: Message-like events an employee may send that the client cannot receive, in words.
_NOT_CARRIED = {
    "m.poll.start": "Polls",
    "org.matrix.msc3381.poll.start": "Polls",
    "m.call.invite": "Calls",
    "org.matrix.msc3401.call": "Calls",
}
_TEXT_TYPES = {"m.text", "m.notice", "m.emote"}
_MEDIA_KINDS = {
    "m.image": MediaKind.IMAGE,
    "m.file": MediaKind.FILE,
    "m.video": MediaKind.VIDEO,
    "m.audio": MediaKind.AUDIO,
}


@dataclass(frozen=True)
class RetryPolicy:
    """Temporary failures are retried until they pass (order within a chat is kept), with the
    employee told once after ``notice_after`` attempts; permanent ones end with a notice."""

    notice_after: int = 3
    first_backoff: float = 1.0
    max_backoff: float = 60.0


class Refused(Exception):
    """The bridge will not carry this event; the message goes into the room as a notice."""


class Outbound:
    def __init__(
        self,
        *,
        az: AppService,
        store: Store,
        portals: Portals,
        ghosts: Ghosts,
        connectors: dict[str, Connector],
        portal_config: PortalsConfig,
        retry: RetryPolicy = RetryPolicy(),
        policy: PolicyBot | None = None,
    ) -> None:
        self.policy = policy
        self.az = az
        self.store = store
        self.portals = portals
        self.ghosts = ghosts
        self.connectors = connectors
        self.portal_config = portal_config
        self.retry = retry
        self._typing_sent: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        #: Asked once the sharing rules allowed a message (bridge.review.ReviewDesk.before_send):
        #: True holds it for a compliance reviewer.
        self.review: Callable[[PortalRow, dict[str, Any], Delivery], Awaitable[bool]] | None = None
        #: Told the network of each temporary failure that is retried (the metrics count them).
        self.on_retry: Callable[[str], None] | None = None

    async def handle_ephemeral(self, edus: list[dict[str, Any]]) -> None:
        """An employee typing in a portal shows as "typing..." to the client (best effort)."""
        for edu in edus:
            if edu.get("type") == "m.receipt" and isinstance(edu.get("room_id"), str):
                await self._receipt(edu)
                continue
            if edu.get("type") != "m.typing" or not isinstance(edu.get("room_id"), str):
                continue
            users = (edu.get("content") or {}).get("user_ids") or []
            if not any(isinstance(u, str) and not self._is_ours(u) for u in users):
                continue
            portal = await self.portals.by_room(edu["room_id"])
            connector = self.connectors.get(portal.network) if portal is not None else None
            refresh_s = connector.capabilities.typing_refresh_s if connector is not None else None
            if portal is None or refresh_s is None:
                continue
            now = time.monotonic()
            if now - self._typing_sent.get(portal.room_id, 0.0) < refresh_s:
                continue
            self._typing_sent[portal.room_id] = now
            delivery = Delivery(
                DeliveryKind.TYPING,
                portal.chat,
                portal.room_id,
                "",
            )
            task = asyncio.create_task(self._send_best_effort(portal.network, delivery))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _receipt(self, edu: dict[str, Any]) -> None:
        """An employee read the client's message: tell the network where it has a read state."""
        content = edu.get("content")
        if not isinstance(content, dict):
            return
        portal = await self.portals.by_room(edu["room_id"])
        if portal is None or portal.network not in self.connectors:
            return
        for event_id, kinds in content.items():
            readers = (kinds or {}).get("m.read") or {} if isinstance(kinds, dict) else {}
            if not any(isinstance(u, str) and not self._is_ours(u) for u in readers):
                continue
            links = [
                link for link in await self.store.get_messages_by_event(event_id) if link.direction == "in"
            ]
            if not links:
                continue
            delivery = Delivery(
                DeliveryKind.READ,
                portal.chat,
                portal.room_id,
                event_id,
                targets=(links[-1].remote_id,),
            )
            task = asyncio.create_task(self._send_best_effort(portal.network, delivery))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_best_effort(self, network: str, delivery: Delivery) -> None:
        """Typing and read marks are best effort: a failure is logged, never retried."""
        try:
            await self.connectors[network].send(delivery)
        except DeliveryError as e:
            log.info(
                "event=ephemeral_not_sent room=%s kind=%s reason=%r",
                delivery.room_id,
                delivery.kind.value,
                e.reason,
            )

    def _is_ours(self, user_id: str) -> bool:
        return user_id == self.az.bot_mxid or self.ghosts.is_ghost(user_id)

    async def handle_event(self, raw: dict[str, Any], *, fresh: bool = False) -> None:
        """One employee event from the outbox, in room order: the outbox runs one worker per
        room (held messages are released into it too), so nothing here needs a lock of its own.

        ``fresh``: see bridge.outbox.Handle; an event that may have been delivered before is
        looked up first."""
        etype = raw.get("type")
        if (
            self._is_ours(raw["sender"])
            or "state_key" in raw
            or (etype not in _CARRIED and etype not in _NOT_CARRIED)
        ):
            return
        portal = await self.portals.by_room(raw["room_id"])
        if portal is None:
            return
        if etype in _NOT_CARRIED:
            await self._notice(
                portal,
                raw["event_id"],
                f"{_NOT_CARRIED[etype]} are not sent to the client; the client did not see this.",
            )
            return
        if not fresh and await self.store.get_messages_by_event(raw["event_id"]):
            log.info("event=outbound_duplicate room=%s event_id=%s", raw["room_id"], raw["event_id"])
            return
        if not isinstance(raw.get("content"), dict):
            return
        try:
            delivery = await self._delivery_for(portal, raw)
            if delivery is None:
                return
            if self.policy is not None:
                decision = await self.policy.check_send(portal, raw, delivery)
                if decision.verdict is not Verdict.ALLOW:
                    await self.policy.refuse(portal, raw, decision)
                    return
            if self.review is not None and await self.review(portal, raw, delivery):
                return  # held for a compliance reviewer, who releases it through the outbox
            await self._deliver(portal, delivery, fresh, origin_ts=raw.get("origin_server_ts"))
        except Refused as e:
            await self._notice(portal, raw["event_id"], str(e))
        except (MatrixError, aiohttp.ClientError, asyncio.TimeoutError):
            raise  # the homeserver is unwell: fail the transaction so it is retried
        except Exception as e:
            # A bug or an unexpected answer must neither block the room's later events nor
            # vanish: say so where the employee looks, with the details in the log.
            log.exception("event=outbound_error room=%s event_id=%s", raw["room_id"], raw["event_id"])
            await self._notice(
                portal,
                raw["event_id"],
                f"Not delivered to the client: the bridge hit an unexpected error ({type(e).__name__}).",
            )

    # Matrix event -> Delivery

    async def _delivery_for(self, portal: PortalRow, raw: dict[str, Any]) -> Delivery | None:
        content = raw.get("content") or {}
        if portal.status == "disconnected":
            raise Refused(
                "Not sent: the company account this conversation runs through is disconnected from Houseline."
            )
        account = await self.store.get_account(portal.network, portal.account)
        if account is not None and not account.can_reply and raw["type"] != "m.room.redaction":
            raise Refused(
                f"Not sent: the business account of {account.owner_name} does not let Houseline reply "
                "(its owner must allow the bot to reply to messages)."
            )
        base = Delivery(
            kind=DeliveryKind.MESSAGE,
            chat=portal.chat,
            room_id=raw["room_id"],
            event_id=raw["event_id"],
        )
        etype = raw["type"]
        if etype == "m.reaction":
            rel = content.get("m.relates_to") or {}
            targets = await self._remote_ids(rel.get("event_id"))
            if not targets or not isinstance(rel.get("key"), str):
                return None  # a reaction to something the client never saw (a notice, a member event)
            return replace(base, kind=DeliveryKind.REACTION, targets=targets[:1], reaction=rel["key"])
        if etype == "m.room.redaction":
            return await self._redaction(base, raw)
        relates = content.get("m.relates_to") or {}
        if relates.get("rel_type") == "m.replace":
            return await self._edit(base, raw, relates)
        template = self._template_command(content)
        if template is not None:
            name, params, language = template
            return replace(
                base,
                kind=DeliveryKind.TEMPLATE,
                template=name,
                template_params=params,
                template_language=language,
            )
        signature = self._signature(raw["sender"], await self._displayname(raw["room_id"], raw["sender"]))
        reply_ids = await self._remote_ids((relates.get("m.in_reply_to") or {}).get("event_id"))
        base = replace(base, signature=signature, reply_to=reply_ids[0] if reply_ids else None)
        msgtype = "m.sticker" if etype == "m.sticker" else content.get("msgtype")
        if msgtype in _TEXT_TYPES:
            text = _rich(content)
            if msgtype == "m.emote":
                name = await self._displayname(raw["room_id"], raw["sender"])
                text = RichText(f"* {name} {text.body}", f"* {name} {text.html}" if text.html else None)
            return replace(base, text=text)
        if msgtype == "m.location":
            return replace(base, location=_parse_geo(content.get("geo_uri")))
        if msgtype in _MEDIA_KINDS or msgtype == "m.sticker":
            connector = self.connectors.get(portal.network)
            limit = (
                connector.capabilities.max_upload_bytes if connector is not None else DEFAULT_MAX_UPLOAD_BYTES
            )
            network_name = connector.display_name if connector is not None else portal.network
            media = await self._download(
                content,
                MediaKind.IMAGE if msgtype == "m.sticker" else _MEDIA_KINDS[msgtype],
                limit,
                network_name,
            )
            caption = _caption(content)
            return replace(base, media=media, text=caption)
        raise Refused("This kind of message is not sent to the client; the client did not see it.")

    def _template_command(self, content: dict[str, Any]) -> tuple[str, tuple[str, ...], str] | None:
        """``<prefix> template <name> [--lang xx] [parameters...]`` typed in a portal: an approved
        template for the client (queued, ordered and recorded like any message)."""
        queued = content.get(TEMPLATE_KEY)
        if isinstance(queued, dict) and isinstance(queued.get("name"), str) and queued["name"]:
            params = queued.get("params") if isinstance(queued.get("params"), list) else []
            language = queued.get("language") if isinstance(queued.get("language"), str) else ""
            return queued["name"], tuple(str(p) for p in params), language
        body = content.get("body")
        prefix = self.policy.policy.commands.prefix if self.policy is not None else "!hl"
        if (
            content.get("msgtype") not in _TEXT_TYPES
            or not isinstance(body, str)
            or not body.startswith(prefix + " ")
        ):
            return None
        words = split_command(body[len(prefix) :])
        if not words or words[0].lower() != "template":
            return None
        args = words[1:]
        language = ""
        if "--lang" in args:
            i = args.index("--lang")
            if i + 1 >= len(args):
                raise Refused(
                    f"Not sent: --lang needs a language code. Usage: {prefix} template <name> [--lang en] [parameters...]"
                )
            language = args[i + 1]
            del args[i : i + 2]
        if not args:
            raise Refused(
                f"Not sent: which template? Usage: {prefix} template <name> [--lang en] [parameters...]"
            )
        return args[0], tuple(args[1:]), language

    async def _edit(self, base: Delivery, raw: dict[str, Any], relates: dict[str, Any]) -> Delivery:
        original_id = relates.get("event_id")
        links = await self.store.get_messages_by_event(original_id) if original_id else []
        if not links:
            raise Refused("This edit was not sent: the client never received the original message.")
        if len(links) > 1:
            raise Refused(
                "This edit was not sent: the original was split into several messages for the client."
            )
        new = raw["content"].get("m.new_content") or {}
        signature = self._signature(raw["sender"], await self._displayname(raw["room_id"], raw["sender"]))
        text = _caption(new) if links[0].has_media else _rich(new)
        return replace(
            base,
            kind=DeliveryKind.EDIT,
            signature=signature,
            text=text,
            targets=(links[0].remote_id,),
            target_has_media=links[0].has_media,
            target_timestamp_ms=links[0].created_at,
        )

    async def _redaction(self, base: Delivery, raw: dict[str, Any]) -> Delivery | None:
        redacts = raw.get("redacts") or (raw.get("content") or {}).get("redacts")
        links = await self.store.get_messages_by_event(redacts) if redacts else []
        outgoing = [link for link in links if link.direction == "out"]
        if outgoing:
            return replace(
                base,
                kind=DeliveryKind.DELETE,
                targets=tuple(link.remote_id for link in outgoing),
                target_timestamp_ms=outgoing[0].created_at,
            )
        if links:
            raise Refused(
                "The client's own message cannot be deleted for them; it stays here and on their phone."
            )
        return None

    async def _remote_ids(self, event_id: str | None) -> tuple[str, ...]:
        if not event_id:
            return ()
        return tuple(link.remote_id for link in await self.store.get_messages_by_event(event_id))

    async def _download(
        self, content: dict[str, Any], kind: MediaKind, limit: int, network_name: str
    ) -> OutboundMedia:
        info = content.get("info") or {}
        size = info.get("size")
        too_big = f"{network_name} accepts at most {limit // (1024 * 1024)} MB from the company. The client did not receive it."
        if isinstance(size, int) and size > limit:
            raise Refused(f"This file is {size / 1e6:.1f} MB; {too_big}")
        url = content.get("url")
        if not isinstance(url, str) or not url.startswith("mxc://"):
            raise Refused(
                "Encrypted or linkless files cannot be sent to the client; the client did not receive it."
            )
        try:
            data = await self.az.intent.download_media(url)
        except aiohttp.ClientResponseError as e:
            if 400 <= e.status < 500:
                raise Refused(
                    f"The file could not be fetched from the homeserver (HTTP {e.status}); the client did not receive it."
                ) from e
            raise
        if len(data) > limit:
            raise Refused(f"This file is {len(data) / 1e6:.1f} MB; {too_big}")
        return OutboundMedia(
            kind=kind,
            data=data,
            file_name=content.get("filename") or content.get("body") or "file",
            mimetype=info.get("mimetype") or "application/octet-stream",
            width=info.get("w"),
            height=info.get("h"),
            duration_ms=info.get("duration"),
        )

    # sending

    async def _deliver(
        self, portal: PortalRow, delivery: Delivery, fresh: bool = False, origin_ts: int | None = None
    ) -> None:
        """``origin_ts``: the employee's event's origin_server_ts, passed on with message.outbound
        (the delivery latency metric measures from it)."""
        connector = self.connectors.get(portal.network)
        if connector is None:
            await self._notice(
                portal,
                delivery.event_id,
                f"Not delivered: the {portal.network} connection is not enabled in this bridge.",
            )
            return
        refusal = connector.capabilities.refusal(delivery, connector.display_name, time.time())
        if refusal is not None:
            log.info(
                "event=outbound_unsupported room=%s event_id=%s network=%s kind=%s",
                delivery.room_id,
                delivery.event_id,
                portal.network,
                delivery.kind.value,
            )
            await self._notice(portal, delivery.event_id, f"Not delivered to the client: {refusal}.")
            return
        receipt = None if fresh else await self._already_delivered(connector, delivery)
        if receipt is None:
            # Taken before the send, so the connector can later tell what it delivered after it.
            checkpoint = (
                await connector.checkpoint(delivery.chat) if connector.capabilities.finds_delivered else ""
            )
            await self.store.mark_outbound_sending(delivery.event_id, delivery.room_id, checkpoint)
        backoff = Backoff(first=self.retry.first_backoff, cap=self.retry.max_backoff, jitter=0.2)
        attempt = 0
        while receipt is None:
            attempt += 1
            try:
                receipt = await connector.send(delivery)
                break
            except DeliveryError as e:
                if e.permanent:
                    log.warning(
                        "event=outbound_failed room=%s event_id=%s network=%s kind=%s attempts=%d reason=%r",
                        delivery.room_id,
                        delivery.event_id,
                        portal.network,
                        delivery.kind.value,
                        attempt,
                        e.reason,
                    )
                    await self.store.clear_outbound_sending(delivery.event_id)
                    await self._notice(portal, delivery.event_id, f"Not delivered to the client: {e.reason}.")
                    return
                if attempt == self.retry.notice_after:
                    # Temporary trouble is retried until it passes; the employee is told once.
                    await self._notice(
                        portal,
                        delivery.event_id,
                        f"Delivery delayed: {e.reason}. Houseline keeps trying; later messages in this conversation wait their turn.",
                    )
                wait = backoff.after(attempt - 1, e.retry_after)
                log.info(
                    "event=outbound_retry room=%s event_id=%s attempt=%d wait=%.1fs",
                    delivery.room_id,
                    delivery.event_id,
                    attempt,
                    wait,
                )
                if self.on_retry is not None:
                    self.on_retry(portal.network)
                await asyncio.sleep(wait)
        has_media = delivery.media is not None
        # The mapping, the end of the sending mark and the outbox entry: one commit.
        answered = delivery.kind in (DeliveryKind.MESSAGE, DeliveryKind.TEMPLATE)
        await self.store.record_delivery(
            delivery.event_id,
            [
                MessageLink(
                    portal.network,
                    portal.account,
                    portal.chat_id,
                    remote_id,
                    delivery.room_id,
                    delivery.event_id,
                    "out",
                    has_media=has_media and i == 0,
                )
                for i, remote_id in enumerate(receipt.message_ids)
            ],
            answered=answered,
        )
        if receipt.note:
            await self._notice(portal, delivery.event_id, receipt.note)
        if self.policy is not None:
            await self.policy.notify.emit(
                "message.outbound",
                delivery.room_id,
                event_id=delivery.event_id,
                kind=delivery.kind.value,
                network=portal.network,
                account=portal.account,
                chat_id=portal.chat_id,
                remote_ids=list(receipt.message_ids),
                text=delivery.text.body if delivery.text else None,
                template=delivery.template or None,
                media=delivery.media.kind.value if delivery.media else None,
                origin_server_ts=origin_ts,
            )
        log.info(
            "event=outbound_delivered room=%s event_id=%s network=%s chat=%s kind=%s remote_ids=%s",
            delivery.room_id,
            delivery.event_id,
            portal.network,
            portal.chat_id,
            delivery.kind.value,
            ",".join(receipt.message_ids),
        )

    async def _already_delivered(self, connector: Connector, delivery: Delivery) -> DeliveryReceipt | None:
        """A delivery marked as sending was interrupted by a crash: ask the network whether it
        arrived before sending it again (a duplicate is as wrong as a loss). The checkpoint is
        the connector's own, handed back as it was taken."""
        if not connector.capabilities.finds_delivered:
            return None
        checkpoint = await self.store.outbound_checkpoint(delivery.event_id)
        if checkpoint is None or delivery.kind is not DeliveryKind.MESSAGE:
            return None
        found = await connector.find_delivered(delivery, checkpoint)
        if found is not None:
            log.info(
                "event=outbound_settled room=%s event_id=%s remote_ids=%s",
                delivery.room_id,
                delivery.event_id,
                ",".join(found.message_ids),
            )
        return found

    def _signature(self, user_id: str, displayname: str) -> str:
        template = self.portal_config.signature
        if not template:
            return ""
        return template.format(
            displayname=displayname,
            company=self.portal_config.company,
            localpart=user_id[1:].split(":", 1)[0],
            user_id=user_id,
        )

    async def _displayname(self, room_id: str, user_id: str) -> str:
        member = await self.az.state_store.get_member(room_id, user_id)
        if member is not None and member.displayname:
            return member.displayname
        try:
            info = await self.az.intent.get_room_member_info(room_id, user_id)
            if info is not None and info.displayname:
                return info.displayname
        except Exception as e:  # a missing profile must not stop the message
            log.debug("event=displayname_lookup_failed user=%s error=%s", user_id, type(e).__name__)
        return user_id[1:].split(":", 1)[0]

    async def _notice(self, portal: PortalRow, event_id: str, text: str) -> None:
        await self.az.intent.send_message_event(
            portal.room_id,
            EventType.ROOM_MESSAGE,
            notice(text, in_reply_to=event_id),
            txn_id=f"hl.notice.{event_id}",
        )
        log.info("event=notice_posted room=%s about=%s", portal.room_id, event_id)


def _strip_reply_fallback(body: str) -> str:
    """Older clients quote the replied-to message as '> ' lines first; the client must not see
    that quote (it may carry Matrix ids)."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith("> "):
        return body
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    if i < len(lines) and lines[i] == "":
        i += 1
    return "\n".join(lines[i:])


def _rich(content: dict[str, Any]) -> RichText:
    body = content.get("body") if isinstance(content.get("body"), str) else ""
    html = content.get("formatted_body") if content.get("format") == "org.matrix.custom.html" else None
    if isinstance(html, str) and "<mx-reply>" in html:
        body = _strip_reply_fallback(body)
    return RichText(body, html if isinstance(html, str) else None)


def _caption(content: dict[str, Any]) -> RichText | None:
    """A media event's caption: its body when a separate file name is given (Matrix captions)."""
    filename = content.get("filename")
    body = content.get("body")
    if not filename or not isinstance(body, str) or body == filename:
        return None
    return _rich(content)


def _parse_geo(uri: Any) -> RemoteLocation:
    if isinstance(uri, str) and uri.startswith("geo:"):
        try:
            lat, lon = uri[4:].split(";", 1)[0].split(",")[:2]
            return RemoteLocation(float(lat), float(lon))
        except ValueError:
            pass
    raise Refused("This location has no valid coordinates; the client did not receive it.")
