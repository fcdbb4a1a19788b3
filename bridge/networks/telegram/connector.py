"""The Telegram connector: long polling in, sendMessage out.

Polling is our own loop over ``Bot.get_updates`` rather than PTB's Updater because the offset
must advance only after the core committed an update on the Matrix side; the Updater confirms
updates as soon as it fetched them.
"""

from __future__ import annotations

import asyncio
import logging
import random

from telegram import Bot, Message, MessageEntity, Update
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from bridge.config import TelegramConfig
from bridge.events import ChatRef, Delivery, DeliveryReceipt, RemoteEvent, RemoteEventKind, RemoteUser
from bridge.networks.base import DeliveryError, InboundSink
from bridge.networks.telegram.text import split_text, utf16_len

log = logging.getLogger("houseline.telegram")

NETWORK = "telegram"
ALLOWED_UPDATES = ["message", "edited_message"]

#: What a message carries when it is not text, in words for the room's notice.
_KIND_WORDS = (
    ("photo", "a photo"),
    ("video", "a video"),
    ("animation", "an animation"),
    ("document", "a file"),
    ("audio", "an audio file"),
    ("voice", "a voice message"),
    ("video_note", "a video message"),
    ("sticker", "a sticker"),
    ("location", "a location"),
    ("venue", "a venue"),
    ("contact", "a contact"),
    ("poll", "a poll"),
    ("dice", "a dice roll"),
    ("game", "a game"),
    ("story", "a story"),
)


def _full_name(first: str | None, last: str | None) -> str:
    return " ".join(p for p in (first, last) if p) or "Telegram user"


class TelegramConnector:
    network = NETWORK
    display_name = "Telegram"

    def __init__(self, config: TelegramConfig) -> None:
        self.config = config
        kwargs = {}
        if config.base_url:
            kwargs["base_url"] = config.base_url
            kwargs["base_file_url"] = config.base_file_url
        self.bot = Bot(
            config.bot_token,
            request=HTTPXRequest(connection_pool_size=32, read_timeout=20.0, connect_timeout=10.0),
            get_updates_request=HTTPXRequest(connection_pool_size=1, read_timeout=10.0),
            **kwargs,
        )
        self.account = config.bot_token.split(":", 1)[0]
        self._sink: InboundSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._offset: int | None = None

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink
        await self.bot.initialize()  # getMe: fails fast on a wrong token
        self.account = str(self.bot.id)
        await self.bot.delete_webhook(drop_pending_updates=False)
        log.info("event=telegram_connected bot=@%s account=%s", self.bot.username, self.account)
        self._task = asyncio.create_task(self._poll(), name="telegram-poll")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._offset is not None:
            # Confirm what was committed, as a stopping poller should, so it is not redelivered.
            try:
                await self.bot.get_updates(offset=self._offset, timeout=0, allowed_updates=ALLOWED_UPDATES)
            except TelegramError as e:
                log.warning("event=telegram_confirm_failed error=%s", type(e).__name__)
        await self.bot.shutdown()

    # inbound

    async def _poll(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            try:
                updates = await self.bot.get_updates(
                    offset=self._offset, timeout=self.config.polling_timeout, allowed_updates=ALLOWED_UPDATES
                )
                backoff = 1.0
            except RetryAfter as e:
                await self._pause(_seconds(e.retry_after))
                continue
            except InvalidToken:
                log.error("event=telegram_token_rejected action=retrying_in=60s fix='check networks.telegram.bot_token'")
                await self._pause(60)
                continue
            except Conflict:
                log.warning("event=telegram_conflict reason='another poller or a webhook uses this bot'")
                await self._pause(backoff)
                backoff = min(backoff * 2, 30)
                continue
            except (TimedOut, NetworkError) as e:
                log.warning("event=telegram_poll_error error=%s retry_in=%.1fs", type(e).__name__, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, 30)
                continue
            for update in updates:
                await self._handle_update(update)
                self._offset = update.update_id + 1

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _handle_update(self, update: Update) -> None:
        event = self.translate(update)
        if event is None:
            log.info("event=telegram_update_ignored update_id=%s kind=%s", update.update_id, _update_kind(update))
            return
        assert self._sink is not None
        backoff = 0.5
        while True:
            try:
                await self._sink(event)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # The update stays unconfirmed until the core committed it: retry, never skip.
                log.warning(
                    "event=inbound_retry update_id=%s chat=%s error=%s detail=%r retry_in=%.1fs",
                    update.update_id, event.chat.chat_id, type(e).__name__, str(e)[:200], backoff,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                await asyncio.sleep(backoff + random.random() * 0.1)
                backoff = min(backoff * 2, 30)

    def translate(self, update: Update) -> RemoteEvent | None:
        """The network-neutral event for an update, or None for updates the bridge does not carry."""
        message = update.message or update.edited_message
        if message is None or message.chat.type != "private" or message.from_user is None:
            return None
        user = message.from_user
        sender = RemoteUser(
            network=NETWORK,
            id=str(user.id),
            display_name=_full_name(user.first_name, user.last_name),
            username=user.username,
        )
        chat = ChatRef(NETWORK, self.account, str(message.chat.id))
        base = dict(
            chat=chat,
            sender=sender,
            timestamp_ms=int(message.date.timestamp() * 1000),
            chat_title=_full_name(message.chat.first_name, message.chat.last_name),
        )
        if update.edited_message is not None:
            edit_ts = int(message.edit_date.timestamp()) if message.edit_date else update.update_id
            return RemoteEvent(
                kind=RemoteEventKind.UNSUPPORTED,
                message_id=f"{message.message_id}/edit/{edit_ts}",
                text=message.text or message.caption or "",
                description="an edit of an earlier message",
                **base,
            )
        if message.text is not None:
            return RemoteEvent(kind=RemoteEventKind.MESSAGE, message_id=str(message.message_id), text=message.text, **base)
        return RemoteEvent(
            kind=RemoteEventKind.UNSUPPORTED,
            message_id=str(message.message_id),
            text=message.caption or "",
            description=_describe(message),
            **base,
        )

    # outbound

    async def send(self, delivery: Delivery) -> DeliveryReceipt:
        chat_id = int(delivery.chat.chat_id)
        header = f"{delivery.signature}\n" if delivery.signature else ""
        pieces = split_text(delivery.body, limit=4096 - len(header))
        sent: list[str] = []
        for i, piece in enumerate(pieces):
            text = header + piece
            entities = [MessageEntity(MessageEntity.BOLD, 0, utf16_len(delivery.signature))] if header else None
            try:
                msg = await self._send_piece(chat_id, text, entities)
            except RetryAfter as e:
                if sent:
                    raise DeliveryError(
                        f"only {len(sent)} of {len(pieces)} parts were delivered (rate limited)", permanent=True
                    ) from e
                raise DeliveryError("Telegram asked to slow down", permanent=False, retry_after=_seconds(e.retry_after)) from e
            except Forbidden as e:
                raise DeliveryError(f"the client blocked the company's bot ({e.message})", permanent=True) from e
            except ChatMigrated as e:
                raise DeliveryError("the chat moved to a new id", permanent=True) from e
            except BadRequest as e:
                raise DeliveryError(f"Telegram refused the message: {e.message}", permanent=True) from e
            except (TimedOut, NetworkError) as e:
                if sent:
                    # Part of a split message is out: do not resend the beginning on retry.
                    raise DeliveryError(f"only {len(sent)} of {len(pieces)} parts were delivered ({type(e).__name__})", permanent=True) from e
                raise DeliveryError(f"network error talking to Telegram ({type(e).__name__})", permanent=False) from e
            sent.append(str(msg.message_id))
            log.info("event=telegram_sent chat=%s message_id=%s part=%d/%d", chat_id, msg.message_id, i + 1, len(pieces))
        return DeliveryReceipt(message_ids=tuple(sent))

    async def _send_piece(self, chat_id: int, text: str, entities: list[MessageEntity] | None) -> Message:
        """sendMessage, waiting out Telegram's ``retry_after`` a few times before giving up."""
        for attempt in range(_RATE_LIMIT_RETRIES):
            try:
                return await self.bot.send_message(chat_id, text, entities=entities)
            except RetryAfter as e:
                wait = _seconds(e.retry_after)
                if attempt == _RATE_LIMIT_RETRIES - 1 or wait > _MAX_RATE_LIMIT_WAIT:
                    raise
                log.info("event=telegram_rate_limited chat=%s retry_after=%.0fs", chat_id, wait)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")


_RATE_LIMIT_RETRIES = 5
_MAX_RATE_LIMIT_WAIT = 30.0


def _seconds(value) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


def _describe(message: Message) -> str:
    for attr, words in _KIND_WORDS:
        if getattr(message, attr, None):
            return words
    return "a kind of message"


def _update_kind(update: Update) -> str:
    for name in ("message", "edited_message", "channel_post", "my_chat_member", "callback_query"):
        value = getattr(update, name, None)
        if value is not None:
            chat = getattr(value, "chat", None)
            return f"{name}:{chat.type}" if chat is not None else name
    return "other"
