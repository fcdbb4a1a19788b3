"""The Telegram connector's lifecycle: updates in (long polling, or a webhook), deliveries out.

Polling is our own loop over ``Bot.get_updates`` rather than PTB's Updater because the offset
must advance only after the core committed an update on the Matrix side; the Updater confirms
updates as soon as it fetched them. In webhook mode the same holds: the webhook is answered
only after the commit.

Polled updates are handled in lanes, one per chat, each in order, all chats side by side; the
offset confirmed to Telegram is the lowest update not yet committed. The next fetch does not wait
for the slowest chat of the previous one (that wait left the homeserver idle at the end of every
fetch): it goes out once no more than FETCH_AHEAD_AT updates are still being handled, and at
least as many were committed since the last fetch. Telegram cannot be asked for "the updates
after those I hold" without confirming those, so a fetch made early gets the unconfirmed ones
again (parsed again: parsing is the largest part of the bridge's own work per update) and skips
them; those two conditions keep that re-reading small.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from telegram import Bot, Update
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut

from bridge.backoff import Backoff, Retrying
from bridge.networks.telegram.spec import SPEC
from bridge.networks.telegram.config import TelegramConfig
from bridge.events import ChatRef, Delivery, DeliveryReceipt, RemoteEvent
from bridge.networks.base import CaptureListener, InboundSink, InviteLinks, OnSent, ReportsCapture
from bridge.networks.spec import MappedIds
from bridge.networks.telegram.request import AiohttpRequest
from bridge.networks.telegram.sender import Sender, seconds
from bridge.networks.telegram.translate import NETWORK, START_PAYLOAD, Translator
from bridge.networks.telegram.webhook import WebhookServer, register_webhook

log = logging.getLogger("houseline.telegram")

#: Fetch the next updates once no more than this many are still being handled: enough sends in
#: flight to keep a homeserver busy while the fetch comes back (a Synapse is saturated by about
#: ten), few enough that getting them again costs little next to the up to 100 a fetch brings.
FETCH_AHEAD_AT = 16

ALLOWED_UPDATES = [
    "message",
    "edited_message",
    "message_reaction",
    "my_chat_member",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
]


class TelegramConnector(InviteLinks, ReportsCapture):
    network = SPEC.name
    display_name = SPEC.display_name
    capabilities = SPEC.capabilities
    #: Start parameters may be up to 64 characters; 32 of the 64-letter alphabet is plenty.
    invite_code_length = 32

    def __init__(self, config: TelegramConfig, *, mapped_ids: MappedIds | None = None) -> None:
        self.config = config
        #: The record's message ids per chat, for crash settlement (None: a send interrupted by a
        #: crash cannot be found and is sent again).
        self.mapped_ids = mapped_ids
        #: The highest message id per chat, for checkpoint (insertion order: least recent first).
        self._highest: dict[ChatRef, int] = {}
        kwargs = {}
        if config.base_url:
            kwargs["base_url"] = config.base_url
            kwargs["base_file_url"] = config.base_file_url
        self.bot = Bot(
            config.bot_token,
            request=AiohttpRequest(pool_size=32, read_timeout=20.0, connect_timeout=10.0),
            get_updates_request=AiohttpRequest(pool_size=1, read_timeout=10.0),
            **kwargs,
        )
        self.account = config.bot_token.split(":", 1)[0]
        self._sink: InboundSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        #: Highest update id handed to a lane (None before the first fetch).
        self._seen: int | None = None
        #: Updates handed to a lane and not committed yet, by update id.
        self._pending: dict[int, asyncio.Task[None]] = {}
        #: Each chat lane's last gate: set once that update's message is in its room (or the
        #: update is done); the chat's next update starts then, while the bookkeeping of the one
        #: before is still being committed (the offset still waits for that).
        self._lanes: dict[object, asyncio.Future[None]] = {}
        #: An update that concerns more than its chat (see _is_barrier) and is not done yet.
        self._barrier: asyncio.Task[None] | None = None
        self._committed_since_fetch = 0
        self._progress = asyncio.Event()
        self._translator = Translator(self.bot, self.account)
        self._sender = Sender(self.bot)
        self._sender.limiter.enabled = config.pacing
        self._webhook: WebhookServer | None = None
        self._capture: CaptureListener | None = None
        #: getWebhookInfo's last_error_date already accounted for (webhook mode's probe; None
        #: until the first probe, which takes what happened before this start as history).
        self._webhook_error_seen: int | None = None

    # capture health: every poll round or webhook says whether receiving works

    def set_capture_listener(self, listener: CaptureListener) -> None:
        self._capture = listener

    def capture_accounts(self) -> tuple[str, ...]:
        return (self.account,)

    def capture_label(self, account: str) -> str:
        try:
            username = self.bot.username  # getMe's, known once started
        except RuntimeError:
            username = None
        return f"Telegram bot @{username} ({account})" if username else f"Telegram bot {account}"

    def _report(self, ok: bool, detail: str = "") -> None:
        if self._capture is None:
            return
        try:
            # The token is in the Bot API's URLs: it must never reach a notice through an error text.
            self._capture(NETWORK, self.account, ok, detail.replace(self.config.bot_token, "<token>")[:200])
        except Exception:  # reporting must never stop receiving
            log.exception("event=capture_report_failed")

    async def probe_capture(self) -> None:
        """In webhook mode nothing arrives while clients are quiet, so ask Telegram: the
        webhook it delivers to, and whether its last delivery failed since the previous probe.
        (Polling reports every round itself.)"""
        if self.config.webhook is None:
            return
        try:
            info = await self.bot.get_webhook_info()
        except TelegramError as e:
            self._report(False, f"getWebhookInfo failed ({type(e).__name__}: {e.message})")
            return
        error_at = int(info.last_error_date.timestamp()) if info.last_error_date else 0
        seen, self._webhook_error_seen = (
            self._webhook_error_seen,
            max(error_at, self._webhook_error_seen or 0),
        )
        if not info.url:
            self._report(False, "Telegram has no webhook registered for the bot; updates are not delivered")
        elif info.url != self.config.webhook.public_url:
            # Another deployment (or a stale one) registered its own address: Telegram delivers there.
            self._report(
                False,
                "Telegram delivers this bot's updates to another address (someone registered another webhook)",
            )
        elif seen is None:
            return  # the first probe: a failed delivery from before this start says nothing about now
        elif error_at > seen:
            self._report(
                False,
                f"Telegram could not deliver to the webhook ({info.last_error_message or 'no reason given'}; {info.pending_update_count} update(s) waiting)",
            )
        else:
            self._report(True)

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink
        await self.bot.initialize()  # getMe: fails fast on a wrong token
        self.account = str(self.bot.id)
        self._translator = Translator(self.bot, self.account)
        webhook = self.config.webhook
        if webhook is not None:
            # Listen first, then ask Telegram to deliver: no update may arrive at a closed port.
            self._webhook = WebhookServer(webhook, self._on_webhook_update)
            await self._webhook.start()
            await register_webhook(self.bot, webhook, ALLOWED_UPDATES)
            log.info(
                "event=telegram_connected bot=@%s account=%s mode=webhook", self.bot.username, self.account
            )
            return
        await self.bot.delete_webhook(drop_pending_updates=False)
        log.info("event=telegram_connected bot=@%s account=%s mode=polling", self.bot.username, self.account)
        self._task = asyncio.create_task(self._poll(), name="telegram-poll")
        self._task.add_done_callback(self._poll_ended)

    def _poll_ended(self, task: asyncio.Task[None]) -> None:
        """The polling loop ends only when stopping; anything else is a capture stop."""
        if task.cancelled() or self._stopping.is_set():
            return
        error = task.exception()
        log.error(
            "event=telegram_poll_stopped error=%s", type(error).__name__ if error else "none", exc_info=error
        )
        self._report(
            False,
            f"the polling loop stopped ({type(error).__name__ if error else 'ended'}); restart the bridge",
        )

    async def _on_webhook_update(self, data: dict) -> None:
        """Answered 200 only after this returns, so Telegram redelivers what was not committed."""
        update = Update.de_json(data, self.bot)
        if update is None:
            raise ValueError("not an update")
        try:
            await self._handle_update(update)
        except Exception as e:
            self._report(
                False,
                f"a webhook update could not be committed ({type(e).__name__}); Telegram delivers it again",
            )
            raise
        self._report(True)

    async def stop(self) -> None:
        self._stopping.set()
        if self._webhook is not None:
            # The webhook stays registered: Telegram keeps what arrives meanwhile and delivers it
            # when the bridge listens again.
            await self._webhook.stop()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        # Updates being handled are cancelled: they stay unconfirmed and come again next time.
        in_hand = list(self._pending.values())
        for task in in_hand:
            task.cancel()
        if in_hand:
            await asyncio.gather(*in_hand, return_exceptions=True)
        offset = self._confirmable()
        if offset is not None:
            # Confirm what was committed, as a stopping poller should, so it is not redelivered.
            try:
                await self.bot.get_updates(offset=offset, timeout=0, allowed_updates=ALLOWED_UPDATES)
            except TelegramError as e:
                log.warning("event=telegram_confirm_failed error=%s", type(e).__name__)
        await self.bot.shutdown()

    # inbound

    async def _poll(self) -> None:
        retry = Retrying(Backoff(first=1.0, cap=30.0))
        while not self._stopping.is_set():
            await self._wait_for_room()
            # Long polling only with nothing in hand: otherwise Telegram answers at once anyway
            # (with the unconfirmed updates), and an answer is wanted at once.
            timeout = 0 if self._pending else self.config.polling_timeout
            self._committed_since_fetch = 0
            try:
                updates = await self.bot.get_updates(
                    offset=self._confirmable(), timeout=timeout, allowed_updates=ALLOWED_UPDATES
                )
                retry.reset()
                self._report(True)
            except RetryAfter as e:
                await self._pause(seconds(e.retry_after))
                continue
            except InvalidToken:
                log.error(
                    "event=telegram_token_rejected action=retrying_in=60s fix='check networks.telegram.bot_token'"
                )
                self._report(False, "Telegram rejected the bot token (check networks.telegram.bot_token)")
                await self._pause(60)
                continue
            except Conflict:
                log.warning("event=telegram_conflict reason='another poller or a webhook uses this bot'")
                self._report(False, "another poller or a webhook takes this bot's updates (Conflict)")
                await self._pause(retry.next_delay())
                continue
            except (TimedOut, NetworkError) as e:
                log.warning(
                    "event=telegram_poll_error error=%s retry_in=%.1fs", type(e).__name__, retry.current
                )
                self._report(False, f"getUpdates failed ({type(e).__name__}: {e.message})")
                await self._pause(retry.next_delay())
                continue
            except TelegramError as e:
                # Any other refusal (400, 403...) must not end the loop: that would stop capture
                # silently. Retried with the same backoff, and reported.
                log.warning(
                    "event=telegram_poll_error error=%s retry_in=%.1fs", type(e).__name__, retry.current
                )
                self._report(False, f"getUpdates was refused ({type(e).__name__}: {e.message})")
                await self._pause(retry.next_delay())
                continue
            for update in updates:
                if self._seen is None or update.update_id > self._seen:
                    self._dispatch(update)
                    self._seen = update.update_id

    def _confirmable(self) -> int | None:
        """The offset that confirms exactly the committed updates: the lowest one still in hand,
        else the one after the last seen (None before anything was seen)."""
        if self._pending:
            return min(self._pending)
        return self._seen + 1 if self._seen is not None else None

    async def _wait_for_room(self) -> None:
        """Before fetching with updates in hand: wait until no more than FETCH_AHEAD_AT are in
        hand and at least as many were committed since the last fetch (a fetch gets those
        again; see the module docstring). With none in hand, fetch (long-poll) right away."""
        while self._pending and (
            len(self._pending) > FETCH_AHEAD_AT or self._committed_since_fetch < len(self._pending)
        ):
            self._progress.clear()
            await self._progress.wait()

    def _dispatch(self, update: Update) -> None:
        """Hand an update to its chat's lane: after the chat's previous update, and after (or,
        for a barrier, before) an update that concerns several chats."""
        key = _chat_key(update)
        after: list[asyncio.Future[None]] = [
            f for f in (self._lanes.get(key), self._barrier) if f is not None and not f.done()
        ]
        if _is_barrier(update):
            after = [t for t in self._pending.values() if not t.done()]
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            self._run_after(after, update, gate), name=f"telegram-update-{update.update_id}"
        )
        self._lanes[key] = gate
        if _is_barrier(update):
            self._barrier = task
        self._pending[update.update_id] = task
        task.add_done_callback(partial(self._done, key, update.update_id, gate))

    async def _run_after(
        self, after: list[asyncio.Future[None]], update: Update, gate: asyncio.Future[None]
    ) -> None:
        try:
            await self._run(after, update, gate)
        finally:
            if not gate.done():
                gate.set_result(None)

    async def _run(
        self, after: list[asyncio.Future[None]], update: Update, gate: asyncio.Future[None]
    ) -> None:
        if after:
            # Only the order matters here; each task's outcome is its own.
            await asyncio.wait(after)
        retry = Retrying(Backoff(first=0.5, cap=30.0))
        while True:
            try:
                await self._handle_update(update, gate)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Commits are retried in _commit; what lands here failed before that (turning the
                # update into events). Like a failing commit it is retried, never skipped: it
                # stays unconfirmed and holds up its own chat only.
                log.error(
                    "event=telegram_update_failed update_id=%s error=%s retry_in=%.1fs",
                    update.update_id,
                    type(e).__name__,
                    retry.current,
                    exc_info=True,
                )
                await asyncio.sleep(retry.next_delay())

    def _done(
        self, key: object, update_id: int, gate: asyncio.Future[None], task: asyncio.Task[None]
    ) -> None:
        if self._lanes.get(key) is gate:
            del self._lanes[key]
        if self._barrier is task:
            self._barrier = None
        if task.cancelled():
            return  # stopping: stays unconfirmed and comes again next time
        del self._pending[update_id]
        self._committed_since_fetch += 1
        self._progress.set()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _handle_update(self, update: Update, gate: asyncio.Future[None] | None = None) -> None:
        events = self.translate(update)
        if not events:
            log.info(
                "event=telegram_update_ignored update_id=%s kind=%s", update.update_id, _update_kind(update)
            )
        for i, event in enumerate(events):
            # Only the update's last event opens the gate early; the ones before it finish first.
            last = gate is not None and i == len(events) - 1
            await self._commit(update, event, partial(_open, gate) if last else None)

    async def _commit(self, update: Update, event: RemoteEvent, on_sent: OnSent | None = None) -> None:
        assert self._sink is not None
        retry = Retrying(Backoff(first=0.5, cap=30.0, jitter=0.1))
        while True:
            try:
                await self._sink(event, on_sent=on_sent)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # The update stays unconfirmed until the core committed it: retry, never skip.
                log.warning(
                    "event=inbound_retry update_id=%s chat=%s error=%s detail=%r retry_in=%.1fs",
                    update.update_id,
                    event.chat.chat_id,
                    type(e).__name__,
                    str(e)[:200],
                    retry.current,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                await asyncio.sleep(retry.next_delay())

    def translate(self, update: Update) -> list[RemoteEvent]:
        return self._translator.translate(update)

    # invitations: a bot cannot write first, so the client opens a link and writes to it

    def invite_account(self) -> str:
        return self.account

    def invite_link(self, code: str) -> str:
        """Always t.me (that is what the client opens, whichever Bot API server the bridge
        talks to); the username is getMe's, so this works only after ``start``."""
        if not START_PAYLOAD.fullmatch(code):
            # Telegram refuses such a start parameter (START_PARAM_INVALID): the client's START
            # would bring no code, so the employee's link would silently not work.
            raise ValueError("an invite code must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
        return f"https://t.me/{self.bot.username}?start={code}"

    # outbound

    async def checkpoint(self, chat: ChatRef) -> str:
        """The highest message id known in the chat: Telegram numbers a chat's messages upwards,
        so whatever the coming send becomes lies above it. The record is asked once per chat
        (its MAX reads every mapped row of the chat); after that the ids of this process's own
        sends keep it current. One a little low is still right: settlement skips mapped ids."""
        if self.mapped_ids is None:
            return ""
        highest = self._highest.get(chat)
        if highest is None:
            highest = await self.mapped_ids.highest_numeric(chat)
        self._note_highest(chat, highest)
        return str(self._highest[chat])

    def _note_highest(self, chat: ChatRef, message_id: int) -> None:
        """Most recently used last; the oldest chat is forgotten past HIGHEST_KEPT."""
        self._highest[chat] = max(message_id, self._highest.pop(chat, 0))
        if len(self._highest) > HIGHEST_KEPT:
            del self._highest[next(iter(self._highest))]

    async def find_delivered(self, delivery: Delivery, checkpoint: str) -> DeliveryReceipt | None:
        """Probes the ids above the checkpoint that the record does not map (Sender.find_delivered)."""
        if self.mapped_ids is None or not _is_message_id(checkpoint):
            return None
        known = {int(r) for r in await self.mapped_ids.of_chat(delivery.chat) if _is_message_id(r)}
        return await self._sender.find_delivered(delivery, int(checkpoint), known)

    async def send(self, delivery: Delivery) -> DeliveryReceipt:
        receipt = await self._sender.send(delivery)
        sent = [int(i) for i in receipt.message_ids if _is_message_id(i)]
        if sent and delivery.chat in self._highest:
            self._note_highest(delivery.chat, max(sent))
        # The core's event=outbound_delivered says the same with the room; this is for debugging.
        log.debug(
            "event=telegram_sent chat=%s kind=%s message_ids=%s",
            delivery.chat.chat_id,
            delivery.kind.value,
            ",".join(receipt.message_ids),
        )
        return receipt


#: Chats whose highest message id is kept in memory (the rest are asked of the record again).
HIGHEST_KEPT = 10_000


def _is_message_id(value: str) -> bool:
    """A Telegram message id as the record keeps it (decimal digits); the record also holds ids
    the connector made up for edits, reactions and the like."""
    return value.isascii() and value.isdigit()


def _open(gate: asyncio.Future[None] | None) -> None:
    if gate is not None and not gate.done():
        gate.set_result(None)


def _chat_key(update: Update) -> object:
    """The conversation an update belongs to (updates without one share a lane)."""
    chat = update.effective_chat
    business = (
        getattr(update.effective_message, "business_connection_id", None)
        if update.effective_message
        else None
    )
    if update.deleted_business_messages is not None:
        business = update.deleted_business_messages.business_connection_id
    return (business, chat.id if chat is not None else None)


def _is_barrier(update: Update) -> bool:
    """Updates whose effect reaches beyond their own chat's lane: a business connection
    switched on or off (all its chats), and a group's migration to a supergroup (the new chat's
    messages must find the moved portal). They run after every update fetched before them, and
    every later update runs after them, as whole fetches used to."""
    if update.business_connection is not None:
        return True
    message = update.message or update.business_message
    return message is not None and bool(message.migrate_to_chat_id or message.migrate_from_chat_id)


def _update_kind(update: Update) -> str:
    for name in ("message", "edited_message", "channel_post", "my_chat_member", "callback_query"):
        value = getattr(update, name, None)
        if value is not None:
            chat = getattr(value, "chat", None)
            return f"{name}:{chat.type}" if chat is not None else name
    return "other"
