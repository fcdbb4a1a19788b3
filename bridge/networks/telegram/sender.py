"""Deliveries → Bot API calls (the outbound edge of the connector).

Every Telegram error is turned into a DeliveryError whose reason an employee can act on; the
core decides about retries and notices.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Any

from telegram import Bot, InputFile, Message, MessageEntity, ReactionTypeEmoji, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TimedOut

from bridge.backoff import Backoff
from bridge.events import Delivery, DeliveryKind, DeliveryReceipt, MediaKind, RichText
from bridge.networks.base import DeliveryError
from bridge.networks.telegram.formatting import matrix_to_telegram, split_entities
from bridge.networks.telegram.ratelimit import SendLimiter
from bridge.networks.telegram.text import utf16_len
from bridge.networks.telegram.translate import BUSINESS_PREFIX

log = logging.getLogger("houseline.telegram")

MAX_TEXT = 4096
MAX_CAPTION = 1024
#: sendPhoto takes at most 10 MB; larger images go as documents (up to the 50 MB upload limit).
MAX_PHOTO_BYTES = 10 * 1024 * 1024
_RATE_LIMIT_RETRIES = 5
_MAX_RATE_LIMIT_WAIT = 30.0

#: Per delivery: the business connection it goes through, if any (keeps every call site simple).
_business: contextvars.ContextVar[str | None] = contextvars.ContextVar("business_connection", default=None)
#: Methods that take no business_connection_id (the Bot API refuses it there).
_NO_BUSINESS_ID = {"set_message_reaction", "delete_message", "forward_message", "copy_message"}

_SEND_METHOD = {
    MediaKind.IMAGE: ("send_photo", "photo"),
    MediaKind.STICKER: ("send_photo", "photo"),
    MediaKind.FILE: ("send_document", "document"),
    MediaKind.VIDEO: ("send_video", "video"),
    MediaKind.ANIMATION: ("send_animation", "animation"),
    MediaKind.VIDEO_NOTE: ("send_video", "video"),
    MediaKind.AUDIO: ("send_audio", "audio"),
    MediaKind.VOICE: ("send_voice", "voice"),
}


def seconds(value: Any) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


def _entities(raw: list[dict[str, Any]]) -> list[MessageEntity]:
    return [MessageEntity.de_json(e, None) for e in raw]  # type: ignore[misc]


class Sender:
    def __init__(self, bot: Bot, limiter: SendLimiter | None = None) -> None:
        self.bot = bot
        self.limiter = limiter or SendLimiter()

    async def send(self, delivery: Delivery) -> DeliveryReceipt:
        handler = {
            DeliveryKind.MESSAGE: self._message,
            DeliveryKind.EDIT: self._edit,
            DeliveryKind.DELETE: self._delete,
            DeliveryKind.REACTION: self._reaction,
            DeliveryKind.TYPING: self._typing,
            DeliveryKind.READ: self._read,
            DeliveryKind.TEMPLATE: self._template,
        }[delivery.kind]
        business = (
            delivery.chat.account.removeprefix(BUSINESS_PREFIX)
            if delivery.chat.account.startswith(BUSINESS_PREFIX)
            else None
        )
        token = _business.set(business)
        try:
            return await handler(delivery, int(delivery.chat.chat_id))
        finally:
            _business.reset(token)

    async def _template(self, d: Delivery, chat_id: int) -> DeliveryReceipt:
        raise DeliveryError("Telegram has no message templates; write the message itself", permanent=True)

    async def find_delivered(
        self, d: Delivery, after: int, known: set[int], window: int = 8
    ) -> DeliveryReceipt | None:
        """Did a delivery reach the chat before a crash? A bot cannot read a chat, but
        editMessageReplyMarkup without a keyboard answers "message is not modified" for a message
        of the bot's that has none — changing nothing — and "not found" / "can't be edited"
        otherwise. The first such message after the last known id that the message map does not
        know is the interrupted delivery (the bridge never sends keyboards)."""
        if d.kind is not DeliveryKind.MESSAGE:
            return None
        chat_id = int(d.chat.chat_id)
        for candidate in range(after + 1, after + 1 + window):
            if candidate in known:
                continue
            try:
                await self._probe(chat_id, candidate)
            except DeliveryError as e:
                if "changes nothing" in e.reason:
                    pieces = (
                        1
                        if d.media is not None or d.text is None
                        else len(split_entities(*self._signed(d.signature, d.text), MAX_TEXT))
                    )
                    return DeliveryReceipt(tuple(str(candidate + i) for i in range(pieces)))
                continue
            log.warning("event=probe_removed_keyboard chat=%s message_id=%s", chat_id, candidate)
        return None

    async def _probe(self, chat_id: int, message_id: int, attempts: int = 8) -> None:
        """One probe, asked again while Telegram's answer is temporary (429, 5xx, a timeout):
        taking a failed probe for "not this message" would send a delivered message twice."""
        for attempt in range(attempts):
            try:
                await self._call(self.bot.edit_message_reply_markup, chat_id, message_id=message_id)
                return
            except DeliveryError as e:
                if e.permanent or attempt == attempts - 1:
                    raise
                await asyncio.sleep(Backoff(first=0.5, cap=5.0).after(attempt, e.retry_after))

    # composition

    @staticmethod
    def _signed(signature: str, text: RichText | None) -> tuple[str, list[dict[str, Any]]]:
        """Signature in bold on the first line, then the employee's text with its formatting."""
        body, entities = matrix_to_telegram(text.body, text.html) if text else ("", [])
        if not signature:
            return body, entities
        header = signature + ("\n" if body else "")
        shift = utf16_len(header)
        shifted = [{**e, "offset": e["offset"] + shift} for e in entities]
        return header + body, [{"type": "bold", "offset": 0, "length": utf16_len(signature)}, *shifted]

    # kinds

    async def _message(self, d: Delivery, chat_id: int) -> DeliveryReceipt:
        reply = (
            ReplyParameters(message_id=int(d.reply_to), allow_sending_without_reply=True)
            if d.reply_to
            else None
        )
        if d.location is not None:
            msg = await self._call(
                self.bot.send_location,
                chat_id,
                latitude=d.location.latitude,
                longitude=d.location.longitude,
                reply_parameters=reply,
            )
            ids = [str(msg.message_id)]
            if d.signature:
                follow = await self._call(
                    self.bot.send_message,
                    chat_id,
                    text=d.signature,
                    entities=_entities(self._signed(d.signature, None)[1]),
                    reply_parameters=ReplyParameters(message_id=msg.message_id),
                )
                ids.append(str(follow.message_id))
            return DeliveryReceipt(tuple(ids))
        text, entities = self._signed(d.signature, d.text)
        if d.media is None:
            return await self._send_text(chat_id, text, entities, reply)
        method_name, field = _SEND_METHOD[d.media.kind]
        if field == "photo" and len(d.media.data) > MAX_PHOTO_BYTES:
            method_name, field = "send_document", "document"  # Telegram takes photos up to 10 MB
        caption, caption_entities = text, entities
        overflow: tuple[str, list[dict[str, Any]]] | None = None
        if len(caption) > MAX_CAPTION:
            caption, caption_entities = self._signed(d.signature, None)
            overflow = self._signed("", d.text)
        kwargs: dict[str, Any] = {field: InputFile(d.media.data, filename=d.media.file_name)}
        if d.media.kind in (MediaKind.VIDEO, MediaKind.ANIMATION, MediaKind.VIDEO_NOTE):
            if d.media.width and d.media.height:
                kwargs.update(width=d.media.width, height=d.media.height)
        if d.media.duration_ms and d.media.kind not in (MediaKind.IMAGE, MediaKind.STICKER, MediaKind.FILE):
            kwargs["duration"] = max(1, d.media.duration_ms // 1000)
        try:
            msg = await self._call(
                getattr(self.bot, method_name),
                chat_id,
                caption=caption or None,
                caption_entities=_entities(caption_entities) or None,
                reply_parameters=reply,
                **kwargs,
            )
        except DeliveryError as e:
            if field != "photo" or "photo" not in e.reason.lower():
                raise
            # Telegram refuses some images as photos (dimensions, format): send the file itself.
            kwargs = {"document": InputFile(d.media.data, filename=d.media.file_name)}
            msg = await self._call(
                self.bot.send_document,
                chat_id,
                caption=caption or None,
                caption_entities=_entities(caption_entities) or None,
                reply_parameters=reply,
                **kwargs,
            )
        ids = [str(msg.message_id)]
        note = ""
        if overflow is not None:
            rest = await self._send_text(
                chat_id,
                overflow[0],
                overflow[1],
                ReplyParameters(message_id=msg.message_id),
                first_id=msg.message_id,
            )
            ids += rest.message_ids
            note = f"The caption was longer than Telegram allows ({MAX_CAPTION} characters), so it followed the file as a separate message."
        return DeliveryReceipt(tuple(ids), note)

    async def _send_text(
        self,
        chat_id: int,
        text: str,
        entities: list[dict[str, Any]],
        reply: ReplyParameters | None,
        first_id: int | None = None,
    ) -> DeliveryReceipt:
        if not text.strip():
            raise DeliveryError("the message is empty after formatting", permanent=True)
        pieces = split_entities(text, entities, MAX_TEXT)
        sent: list[str] = []
        for i, (piece, piece_entities) in enumerate(pieces):
            try:
                msg = await self._call(
                    self.bot.send_message,
                    chat_id,
                    text=piece,
                    entities=_entities(piece_entities) or None,
                    reply_parameters=reply if i == 0 else None,
                )
            except DeliveryError as e:
                if sent or first_id is not None:
                    # Part is out already: resending from the start would duplicate it.
                    raise DeliveryError(
                        f"only {len(sent)} of {len(pieces)} parts were delivered ({e.reason})", permanent=True
                    ) from e
                raise
            sent.append(str(msg.message_id))
        return DeliveryReceipt(tuple(sent))

    async def _edit(self, d: Delivery, chat_id: int) -> DeliveryReceipt:
        text, entities = self._signed(d.signature, d.text)
        target = int(d.targets[0])
        if d.target_has_media:
            if len(text) > MAX_CAPTION:
                raise DeliveryError(
                    f"the new caption is longer than Telegram allows ({MAX_CAPTION} characters)",
                    permanent=True,
                )
            await self._call(
                self.bot.edit_message_caption,
                chat_id,
                message_id=target,
                caption=text,
                caption_entities=_entities(entities) or None,
            )
        else:
            if len(text) > MAX_TEXT:
                raise DeliveryError(
                    f"the edited text is longer than Telegram allows in one message ({MAX_TEXT} characters)",
                    permanent=True,
                )
            await self._call(
                self.bot.edit_message_text,
                chat_id,
                text=text,
                message_id=target,
                entities=_entities(entities) or None,
            )
        return DeliveryReceipt()

    async def _delete(self, d: Delivery, chat_id: int) -> DeliveryReceipt:
        business = _business.get()
        if business is not None:
            await self._call_plain(
                self.bot.delete_business_messages,
                business_connection_id=business,
                message_ids=[int(t) for t in d.targets],
            )
            return DeliveryReceipt()
        for target in d.targets:
            await self._call(self.bot.delete_message, chat_id, message_id=int(target))
        return DeliveryReceipt()

    async def _read(self, d: Delivery, chat_id: int) -> DeliveryReceipt:
        business = _business.get()
        if business is not None:  # plain bot chats have no read state to set
            await self._call_plain(
                self.bot.read_business_message,
                business_connection_id=business,
                chat_id=chat_id,
                message_id=int(d.targets[0]),
            )
        return DeliveryReceipt()

    async def _reaction(self, d: Delivery, chat_id: int) -> DeliveryReceipt:
        if _business.get() is not None:
            raise DeliveryError(
                "Telegram does not let a bot react on behalf of a business account", permanent=True
            )
        reaction = [ReactionTypeEmoji(d.reaction)] if d.reaction else []
        await self._call(
            self.bot.set_message_reaction, chat_id, message_id=int(d.targets[0]), reaction=reaction
        )
        return DeliveryReceipt()

    async def _typing(self, d: Delivery, chat_id: int) -> DeliveryReceipt:
        await self._call(self.bot.send_chat_action, chat_id, action="typing")
        return DeliveryReceipt()

    # one call, with Telegram's errors translated

    async def _call(self, method, chat_id: int, **kwargs: Any) -> Message:
        business = _business.get()
        if business is not None and method.__name__ not in _NO_BUSINESS_ID:
            kwargs["business_connection_id"] = business
        return await self._call_plain(method, chat_id=chat_id, **kwargs)

    async def _call_plain(self, method, **kwargs: Any) -> Any:
        chat_id = kwargs.get("chat_id", "-")
        limited = (
            method.__name__.startswith("send_")
            and method.__name__ != "send_chat_action"
            and isinstance(chat_id, int)
        )
        for attempt in range(_RATE_LIMIT_RETRIES):
            taken_at = await self.limiter.acquire(chat_id) if limited else None
            refused = False
            try:
                return await method(**kwargs)
            except RetryAfter as e:
                refused = True
                if taken_at is not None:
                    self.limiter.refused(chat_id)
                wait = seconds(e.retry_after)
                if attempt == _RATE_LIMIT_RETRIES - 1 or wait > _MAX_RATE_LIMIT_WAIT:
                    raise DeliveryError(
                        "Telegram asked to slow down", permanent=False, retry_after=wait
                    ) from e
                log.info("event=telegram_rate_limited chat=%s retry_after=%.0fs", chat_id, wait)
                await asyncio.sleep(wait)
            except Forbidden as e:
                raise DeliveryError(
                    f"the client blocked the company's bot ({e.message})", permanent=True
                ) from e
            except ChatMigrated as e:
                raise DeliveryError("the chat moved to a new id", permanent=True) from e
            except BadRequest as e:
                raise DeliveryError(_explain(e.message), permanent=True) from e
            except (TimedOut, NetworkError) as e:
                raise DeliveryError(
                    f"network error talking to Telegram ({type(e).__name__})", permanent=False
                ) from e
            finally:
                if taken_at is not None and not refused:
                    # Answered (or failed after it may have arrived there): see SendLimiter.settle.
                    self.limiter.settle(chat_id, taken_at)
        raise AssertionError("unreachable")


def _explain(message: str) -> str:
    lowered = message.lower()
    if "business connection not found" in lowered:
        return "the company's Telegram Business account is no longer connected to the bot"
    if "business_peer" in lowered or "can't reply" in lowered or ("24" in lowered and "hour" in lowered):
        return "Telegram only lets a business account answer within 24 hours of the client's last message; the client must write first"
    if "reaction_invalid" in lowered:
        return "Telegram does not allow this emoji as a reaction"
    if "message to edit not found" in lowered or "message to delete not found" in lowered:
        return "the message no longer exists on Telegram"
    if "can't be deleted" in lowered:
        return "Telegram no longer lets the bot delete this message"
    if "message is not modified" in lowered:
        return "the edit changes nothing the client sees"
    return f"Telegram refused it: {message}"
