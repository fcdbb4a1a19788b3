"""The compliance review queue: messages a reviewer must look at, one item per message.

A message goes to review when it hits a lexicon of ``supervision`` or falls in its random
sample (the pure decision is ``policies.engine.supervise``). Each item is a notice in a
"Houseline review" room (the excerpt, the conversation, the rule, a link to the event), and its
state lives in the store, so the queue survives restarts. Reviewers act with ``!hl review``
commands or reactions on the notice: claim, close (with a reason from the policy's list),
escalate (to the supervisor role), and for a held message approve (it goes to the client
through the outbox, in the commit that closes the item) or reject. Every action is audited.

Nobody reviews their own messages: an item is posted to a room whose members are the reviewers
and supervisors other than the message's sender (usually one room for everything; a reviewer's
own message goes to a room without them).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mautrix.types import EventType

from bridge import matrix_content as mc
from bridge.clock import Clock
from bridge.events import Delivery, RemoteEvent
from bridge.status_room import StatusRoom
from bridge.store import review as rows
from bridge.store.review import ReviewItem
from policies.engine import Supervise, SupervisionResult, reviewers_of, supervise, supervisors_of

if TYPE_CHECKING:
    from bridge.policy_bot import PolicyBot
    from bridge.store import PortalRow

log = logging.getLogger("houseline.review")

ROOM_NAME = "Houseline review"
ROOM_TOPIC = "Client messages for compliance review: act with !hl review, or react to an item."
#: Reactions on an item's notice, and the action each stands for.
REACTIONS = {"👀": "claim", "✅": "close", "⬆": "escalate", "👍": "approve", "👎": "reject"}
ACTIONS = ("claim", "close", "escalate", "approve", "reject")


class ReviewError(Exception):
    """An action that cannot be done as asked; the message is the answer for the reviewer."""


@dataclass(frozen=True)
class Outcome:
    item: ReviewItem
    text: str


class ReviewDesk:
    def __init__(self, pb: PolicyBot, clock: Clock, *, wake_outbox: Callable[[str], None]) -> None:
        self.pb = pb
        self.clock = clock
        self.wake_outbox = wake_outbox
        self._rooms: dict[frozenset[str], StatusRoom] = {}
        self._room_ids: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.pb.policy.supervision.enabled

    def _now_ms(self) -> int:
        return self.clock.now_ms()

    # finding what to review

    async def client_wrote(self, portal: PortalRow, event: RemoteEvent) -> None:
        """An after-message step: a client's message, once recorded, is checked."""
        if not self.enabled or event.text is None or event.from_account:
            return
        link = await self.pb.store.get_message(event.chat, event.message_id)
        if link is None:
            return
        action = Supervise(
            text=event.text.body,
            html=event.text.html,
            direction="inbound",
            message_id=link.event_id,
            language=event.sender.language,
        )
        result = supervise(action, self.pb.policy)
        if result.review:
            sender = str(self.pb.ghosts.user_id(event.sender.network, event.sender.id))
            await self._open(portal, link.event_id, sender, "inbound", result, text=event.text.body)

    async def before_send(self, portal: PortalRow, raw: dict[str, Any], delivery: Delivery) -> bool:
        """Called by Outbound once the sharing rules allowed a message: True when it is held for
        a reviewer (the caller sends nothing), False when it may go (perhaps also reviewed)."""
        if not self.enabled or delivery.text is None:
            return False
        existing = await rows.item_of_event(self.pb.store.db, raw["event_id"])
        if existing is not None:
            # Approved (released through the outbox), or already queued as an alert.
            return existing.held and existing.is_open
        action = Supervise(
            text=delivery.text.body,
            html=delivery.text.html,
            direction="outbound",
            message_id=raw["event_id"],
        )
        result = supervise(action, self.pb.policy)
        if not result.review:
            return False
        await self._open(
            portal, raw["event_id"], raw["sender"], "outbound", result, text=delivery.text.body, raw=raw
        )
        if result.hold:
            await self._say(portal.room_id, result.reason, in_reply_to=raw["event_id"])
        return result.hold

    async def _open(
        self,
        portal: PortalRow,
        event_id: str,
        sender: str,
        direction: str,
        result: SupervisionResult,
        *,
        text: str,
        raw: dict[str, Any] | None = None,
    ) -> None:
        excerpt = result.hits[0].excerpt if result.hits else _shorten(text)
        item = ReviewItem(
            id=await self.pb.store.next_counter("review") + 1,
            portal_room=portal.room_id,
            event_id=event_id,
            sender=sender,
            direction=direction,
            rules=result.rules,
            excerpt=excerpt,
            held=result.hold,
            state="open",
            claimed_by=None,
            closed_by=None,
            reason=None,
            opened_at=self._now_ms(),
            closed_at=None,
            review_room="",
            notice_id="",
            event=raw if result.hold else None,
        )
        if not await rows.add_item(self.pb.store.db, item):
            return  # a redelivered message: its item exists
        await self.pb.audit.record(
            actor=self.pb.az.bot_mxid,
            action="review.open",
            subject=event_id,
            verdict="hold" if item.held else "alert",
            rule=",".join(item.rules),
            room=portal.room_id,
            item=item.id,
        )
        log.info(
            "event=review_opened item=%d room=%s event_id=%s held=%s rules=%s",
            item.id,
            portal.room_id,
            event_id,
            item.held,
            ",".join(item.rules),
        )
        await self._post_item(item, portal)

    async def _post_item(self, item: ReviewItem, portal: PortalRow) -> None:
        room = self._room_for(item.sender)
        notice_id = await room.post(self._describe(item, portal))
        room_id = await room.room_id()
        self._room_ids.add(room_id)
        await rows.set_notice(self.pb.store.db, item.id, room_id, notice_id)

    def _describe(self, item: ReviewItem, portal: PortalRow) -> str:
        kind = "held until approved" if item.held else "for review"
        acts = "claim, close <reason>, escalate" + (", approve, reject" if item.held else "")
        reacts = "👀 ✅ ⬆️" + (" 👍 👎" if item.held else "")
        return (
            f"Review #{item.id} ({kind}): {', '.join(item.rules)}; {item.direction} in {portal.name}, "
            f"from {item.sender}.\n“{item.excerpt}”\n"
            f"https://matrix.to/#/{portal.room_id}/{item.event_id}\n"
            f"Act with !hl review {acts} {item.id} — or react {reacts}. "
            f"Close reasons: {', '.join(self.pb.policy.supervision.close_reasons)}."
        )

    # the rooms

    def audience(self, sender: str) -> frozenset[str]:
        policy = self.pb.policy
        return frozenset((reviewers_of(policy) | supervisors_of(policy)) - {sender})

    def _room_for(self, sender: str) -> StatusRoom:
        audience = self.audience(sender)
        room = self._rooms.get(audience)
        if room is None:
            everyone = self.audience("")
            key, name = "review", ROOM_NAME
            if audience != everyone:
                digest = hashlib.sha256(",".join(sorted(audience)).encode()).hexdigest()[:16]
                key, name = (
                    f"review:{digest}",
                    f"{ROOM_NAME} (without {', '.join(sorted(everyone - audience))})",
                )
            room = StatusRoom(
                self.pb.store,
                self.pb.bot,
                lambda a=audience: tuple(sorted(a)),
                key=key,
                name=name,
                topic=ROOM_TOPIC,
                mention=False,
            )
            self._rooms[audience] = room
        return room

    async def main_room(self) -> str:
        """The room of every reviewer and supervisor (scheduled reports go there)."""
        room = self._room_for("")
        room_id = await room.room_id()
        self._room_ids.add(room_id)
        return room_id

    async def is_review_room(self, room_id: str) -> bool:
        if room_id in self._room_ids:
            return True
        found = await self.pb.store.db.fetchval(
            "SELECT 1 FROM bridge_room WHERE room_id=$1 AND (name='review' OR name LIKE 'review:%')", room_id
        )
        if found:
            self._room_ids.add(room_id)
        return bool(found)

    # acting on items (commands and reactions share this)

    async def act(self, actor: str, action: str, item_id: int, reason: str | None = None) -> Outcome:
        item = await rows.get_item(self.pb.store.db, item_id)
        if item is None:
            raise ReviewError(f"There is no review item #{item_id}.")
        self._may_act(actor, item, action)
        if action == "close":
            reason = self._close_reason(reason)
        elif action == "reject":
            reason = reason or "rejected"
        if action in ("approve", "reject") and not item.held:
            raise ReviewError(f"Review #{item.id} is not a held message; close it instead.")
        if action == "escalate" and not supervisors_of(self.pb.policy):
            raise ReviewError("The policy names no supervisor_role, so there is nobody to escalate to.")
        done = await self._apply(actor, action, item, reason)
        if not done:
            latest = await rows.get_item(self.pb.store.db, item_id)
            raise ReviewError(f"Review #{item.id} is already {latest.state if latest else 'gone'}.")
        await self.pb.audit.record(
            actor=actor,
            action=f"review.{action}",
            subject=item.event_id,
            verdict=action,
            rule=",".join(item.rules),
            room=item.portal_room,
            item=item.id,
            **({"reason": reason} if reason else {}),
        )
        log.info("event=review_%s item=%d actor=%s", action, item.id, actor)
        text = self._acted(actor, action, item, reason)
        if item.review_room and item.notice_id:
            mention = (
                tuple(sorted(supervisors_of(self.pb.policy) - {item.sender})) if action == "escalate" else ()
            )
            await self._say(item.review_room, text, in_reply_to=item.notice_id, mention=mention)
        return Outcome(item, text)

    def _may_act(self, actor: str, item: ReviewItem, action: str) -> None:
        if not item.is_open:
            by = f" by {item.closed_by}" if item.closed_by else ""
            raise ReviewError(f"Review #{item.id} is already {item.state}{by}; nothing more to do.")
        if actor == item.sender:
            raise ReviewError("Nobody reviews their own message.")
        policy = self.pb.policy
        supervisors = supervisors_of(policy)
        if item.state == "escalated" and supervisors and actor not in supervisors:
            raise ReviewError(f"Review #{item.id} is escalated: a supervisor decides it now.")
        if actor not in reviewers_of(policy) | supervisors:
            raise ReviewError(
                "Only the reviewers (supervision.reviewer_role, else the observers) act on reviews."
            )
        if action not in ACTIONS:
            raise ReviewError(f"“{action}” is not a review action; use {', '.join(ACTIONS)}.")

    def _close_reason(self, reason: str | None) -> str:
        reasons = self.pb.policy.supervision.close_reasons
        if reason is None:
            raise ReviewError(f"Say why it is closed: one of {', '.join(reasons)}.")
        if reason not in reasons:
            raise ReviewError(f"“{reason}” is not a close reason; use one of {', '.join(reasons)}.")
        return reason

    async def _apply(self, actor: str, action: str, item: ReviewItem, reason: str | None) -> bool:
        db, now = self.pb.store.db, self._now_ms()
        if action == "approve":
            assert item.event is not None
            done = await self.pb.store.release_reviewed(item.id, item.event, actor=actor, at_ms=now)
            if done:
                self.wake_outbox(item.portal_room)
            return done
        to = {"claim": "claimed", "close": "closed", "escalate": "escalated", "reject": "rejected"}[action]
        done = await rows.move(db, item.id, to=to, actor=actor, at_ms=now, reason=reason)
        if done and action == "reject":
            await self._say(
                item.portal_room,
                f"Not sent to the client: a compliance reviewer rejected it ({reason}).",
                in_reply_to=item.event_id,
            )
        return done

    def _acted(self, actor: str, action: str, item: ReviewItem, reason: str | None) -> str:
        if action == "claim":
            return f"Review #{item.id} claimed by {actor}."
        if action == "close":
            return f"Review #{item.id} closed by {actor}: {reason}."
        if action == "escalate":
            return f"Review #{item.id} escalated by {actor} to the supervisors."
        if action == "approve":
            return f"Review #{item.id} approved by {actor}: the message goes to the client."
        return f"Review #{item.id} rejected by {actor} ({reason}): the client did not receive it."

    async def worklist(self, actor: str) -> str:
        if actor not in reviewers_of(self.pb.policy) | supervisors_of(self.pb.policy):
            raise ReviewError(
                "Only the reviewers (supervision.reviewer_role, else the observers) see the queue."
            )
        items = [i for i in await rows.open_items(self.pb.store.db) if i.sender != actor]
        if not items:
            return "No review items are open."
        now = self._now_ms()
        lines = [
            f"#{i.id} {i.state}{' (held)' if i.held else ''}, {_age(now - i.opened_at)} old: "
            f"{', '.join(i.rules)}; “{i.excerpt}”"
            for i in items
        ]
        return f"{len(items)} open review item(s), oldest first:\n" + "\n".join(lines)

    async def on_reaction(self, raw: dict[str, Any]) -> None:
        """A reaction on an item's notice in a review room acts on the item; a refusal is said
        in reply to the notice."""
        rel = (raw.get("content") or {}).get("m.relates_to") or {}
        action = REACTIONS.get(str(rel.get("key", "")).replace("\ufe0f", ""))
        item = await rows.item_of_notice(self.pb.store.db, str(rel.get("event_id", "")))
        if action is None or item is None:
            return
        reason = self.pb.policy.supervision.close_reasons[0] if action == "close" else None
        try:
            await self.act(raw["sender"], action, item.id, reason)
        except ReviewError as e:
            await self._say(raw["room_id"], str(e), in_reply_to=item.notice_id)

    async def _say(
        self, room_id: str, text: str, *, in_reply_to: str | None = None, mention: tuple[str, ...] = ()
    ) -> str:
        content = mc.notice(text, in_reply_to=in_reply_to)
        if mention:
            content["m.mentions"] = {"user_ids": list(mention)}
            content["body"] += " (" + ", ".join(mention) + ")"
        return str(await self.pb.bot.send_message_event(room_id, EventType.ROOM_MESSAGE, content))


def _shorten(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rsplit(" ", 1)[0] + "…"


def _age(ms: int) -> str:
    minutes = max(ms, 0) // 60_000
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"
