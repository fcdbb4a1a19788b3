"""The LINE connector: one LINE Official Account on the Messaging API, webhooks in, calls out.

The account's bot is the company account (``ChatRef.account`` is its user id, the webhooks'
``destination``); a client's one-to-one chat, a group and a multi-person chat are each a portal.

Answers go out as a *reply* while the client's latest event is fresh (a reply token is good
once, within a minute, and costs nothing) and as a *push* otherwise. Pushes count against the
account's monthly quota, which is checked before each one, and carry an ``X-Line-Retry-Key``
derived from the Matrix event: sent again (a retry after a timeout, or after a crash), LINE
does not deliver twice but answers 409 with the messages the first request became, so the
delivery settles. A reply has no such key: a reply interrupted by a crash is sent again as a
push, the one case where the client may see an answer twice.

What the core has no place for is kept here, in memory and bounded: the latest reply token
per chat, the quote token of each message (a reply quotes its target only with it; the core's
message map knows the target's id) and the mark-as-read tokens. After a restart a reply to an
older message goes out without the quote, and the employee is told.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp
from linebot.v3.messaging import AudioMessage, ImageMessage, LocationMessage, TextMessage, VideoMessage

from bridge.events import ChatRef, Delivery, DeliveryKind, DeliveryReceipt, RemoteEventKind
from bridge.networks.base import (
    CaptureListener,
    DeliveryError,
    InboundSink,
    InviteLinks,
    MediaUnavailable,
    PictureSource,
    PictureUnavailable,
    ReportsCapture,
)
from bridge.networks.line import media as line_media
from bridge.networks.line.api import LineApi, LineError, Sent, sent_from
from bridge.networks.line.config import LineConfig
from bridge.networks.line.spec import SPEC
from bridge.networks.line.translate import (
    INVITE_ALPHABET,
    INVITE_LENGTH,
    INVITE_MARK,
    NETWORK,
    USER_ID,
    ContentRef,
    Inbound,
    Profile,
    Source,
    Translator,
)
from bridge.networks.line.webhook import HandledEvents, LineWebhook
from bridge.text_split import split_text

log = logging.getLogger("houseline.line")

#: LINE: a text message holds at most 5000 characters, counted in UTF-16 code units; a push
#: or reply carries at most 5 message objects.
MAX_TEXT = 5000
MAX_PER_REQUEST = 5
#: A reply token must be used within one minute of the webhook; a margin for the clocks.
REPLY_TOKEN_S = 50.0
#: The loading animation is asked for in multiples of 5 s; the core repeats it every 4 s.
LOADING_S = 5
#: How long a quota or member count answers quota checks; the bridge's own pushes are counted
#: in between.
QUOTA_FRESH_S = 60.0
MEMBERS_FRESH_S = 600.0
PROFILE_FRESH_S = 24 * 3600.0
PROFILE_RETRY_S = 300.0
#: A client's video or audio may still be prepared on LINE's side when the webhook comes.
PREPARE_WAIT_S = 20.0
DOWNLOAD_ATTEMPTS = 3
#: Tokens remembered per message (the quote tokens of both sides, the read tokens).
REMEMBERED = 50_000
#: Namespace of the push retry keys (uuid5 of the Matrix event id and the request's number).
RETRY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://houseline.invalid/line/x-line-retry-key")
_INVITE_CODE = re.compile(rf"[A-Za-z0-9]{{{INVITE_LENGTH}}}")
_EXTERNAL_TIMEOUT = aiohttp.ClientTimeout(total=300, connect=10)
#: Profile pictures: LINE's are small JPEGs; these bounds keep a bad URL from costing much.
MAX_PICTURE_BYTES = 10 * 1024 * 1024
_PICTURE_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=5)

K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """A mapping that forgets its oldest entries beyond ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def retry_key(event_id: str, request: int) -> str:
    """The X-Line-Retry-Key of a delivery's ``request``-th push: the same on every attempt,
    in every process, so LINE recognises the request as already accepted."""
    return str(uuid.uuid5(RETRY_NAMESPACE, f"{event_id}\0{request}"))


def chat_kind(chat_id: str) -> str:
    """LINE's ids say what they name: U... a user, C... a group, R... a multi-person chat."""
    return {"C": "group", "R": "room"}.get(chat_id[:1], "user")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class LineConnector(InviteLinks, ReportsCapture, PictureSource):
    network = SPEC.name
    display_name = SPEC.display_name
    capabilities = SPEC.capabilities
    invite_code_alphabet = INVITE_ALPHABET
    invite_code_length = INVITE_LENGTH

    def __init__(
        self,
        config: LineConfig,
        *,
        media_dir: Path | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.monotonic = monotonic
        #: The bot's user id and basic id (``@...``), learnt from LINE at start.
        self.account = ""
        self.basic_id = ""
        self._api: LineApi | None = None
        self._session: aiohttp.ClientSession | None = None
        self._media = line_media.MediaStore(config.channel_secret, media_dir)
        self._webhook = LineWebhook(config, self._on_payload, self._media)
        self._handled = HandledEvents()
        self._sink: InboundSink | None = None
        self._translator: Translator | None = None
        self._directory = _Directory(self)
        self._quota = _Quota(self)
        self._chat_locks: dict[str, asyncio.Lock] = {}
        #: chat id -> (the client's latest reply token, when it arrived)
        self._replies: dict[str, tuple[str, float]] = {}
        self._quotes: Bounded[str, str] = Bounded(REMEMBERED)
        self._reads: Bounded[str, str] = Bounded(REMEMBERED)
        #: message id -> the newest edit passed on (LINE may deliver edits out of order)
        self._edits: Bounded[str, int] = Bounded(REMEMBERED)
        self._capture: CaptureListener | None = None
        #: Retry keys already presented to LINE by this process.
        self._attempted: Bounded[str, bool] = Bounded(REMEMBERED)

    @property
    def webhook_port(self) -> int | None:
        return self._webhook.port

    @property
    def api(self) -> LineApi:
        if self._api is None:
            raise DeliveryError("the LINE connection is not started", permanent=False, retry_after=5.0)
        return self._api

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink
        self._api = LineApi(self.config)
        self._session = aiohttp.ClientSession(timeout=_EXTERNAL_TIMEOUT)
        try:
            info = await self._api.bot_info()  # fails fast on a wrong access token
        except LineError as e:
            await self.stop()  # the core stops only what started
            raise RuntimeError(
                f"LINE did not answer GET /v2/bot/info ({e}); check networks.line.channel_access_token "
                "and networks.line.api_url"
            ) from None
        self.account, self.basic_id = info.user_id, info.basic_id
        self._translator = Translator(self.account, self._directory, self._fetch)
        self._media.prune()
        # Listen first, then tell LINE where to deliver: no webhook may find a closed port.
        await self._webhook.start()
        if self.config.public_url:
            await self._register_webhook()
        log.info(
            "event=line_connected account=%s basic_id=%s api=%s webhook_path=%s",
            self.account,
            self.basic_id,
            self.config.api_url,
            self.config.path,
        )

    async def _register_webhook(self) -> None:
        """PUT the webhook URL; a refusal is reported, not fatal (the console may hold it)."""
        try:
            await self.api.set_webhook(self.config.public_url)
        except LineError as e:
            log.error(
                "event=line_webhook_not_registered error=%r fix='check networks.line.webhook.public_url'",
                str(e),
            )
            self._report(False, f"LINE refused the webhook URL ({e})")

    async def stop(self) -> None:
        await self._webhook.stop()
        if self._api is not None:
            await self._api.close()
            self._api = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # capture health: a signed webhook for this account proves LINE reaches the bridge

    def set_capture_listener(self, listener: CaptureListener) -> None:
        self._capture = listener

    def capture_accounts(self) -> tuple[str, ...]:
        return (self.account,) if self.account else ()

    def capture_label(self, account: str) -> str:
        return f"LINE Official Account {self.basic_id or account}"

    def _report(self, ok: bool, detail: str = "") -> None:
        if self._capture is None or not self.account:
            return
        try:
            self._capture(NETWORK, self.account, ok, detail)
        except Exception:  # reporting must never stop receiving
            log.exception("event=capture_report_failed")

    async def probe_capture(self) -> None:
        """Quiet clients send nothing, so ask LINE: where it delivers, whether webhooks are on,
        and (LINE's webhook test) whether a delivery to the bridge is answered."""
        if not self.config.public_url or self._api is None:
            return
        try:
            endpoint, active = await self._api.webhook()
            if endpoint != self.config.public_url:
                self._report(
                    False, "LINE delivers this account's webhooks to another address than webhook.public_url"
                )
                return
            if not active:
                self._report(
                    False, "webhooks are switched off for this channel in the LINE Developers Console"
                )
                return
            success, why = await self._api.test_webhook(self.config.public_url)
        except LineError as e:
            if e.status in (404, 405, 501):
                log.info("event=line_probe_unavailable status=%s", e.status)
                return
            self._report(False, f"LINE's webhook settings could not be read ({e})")
            return
        self._report(success, "" if success else f"LINE's test delivery to the webhook failed ({why})")

    # inbound

    async def _on_payload(self, payload: dict[str, Any]) -> None:
        """Answered 200 (by the webhook) only once every event in it is committed."""
        destination = payload.get("destination")
        if destination != self.account:
            log.warning(
                "event=line_webhook_ignored reason=other_destination destination=%r", str(destination)[:40]
            )
            return
        try:
            await self._handle(payload)
        except Exception as e:
            self._report(
                False,
                f"a webhook could not be committed ({type(e).__name__}); LINE delivers it again if redelivery is on",
            )
            raise
        self._report(True)

    async def _handle(self, payload: dict[str, Any]) -> None:
        assert self._sink is not None and self._translator is not None
        for item in await self._translator.payload(payload):
            event = item.event
            marker = f"{item.webhook_event_id}/{event.message_id}"
            if marker in self._handled:
                log.info(
                    "event=line_event_skipped reason=handled webhook_event_id=%s redelivery=%s",
                    item.webhook_event_id,
                    item.redelivery,
                )
                continue
            self._keep_tokens(item)
            if self._stale_edit(item):
                self._handled.add(marker)
                continue
            lock = self._chat_locks.setdefault(event.chat.chat_id, asyncio.Lock())
            async with lock:
                await self._sink(event)
            self._handled.add(marker)

    def _keep_tokens(self, item: Inbound) -> None:
        event = item.event
        if item.reply_token and not event.from_account:
            self._replies[event.chat.chat_id] = (item.reply_token, self.monotonic())
        if item.quote_token:
            self._quotes[event.message_id] = item.quote_token
        if item.read_token:
            self._reads[event.message_id] = item.read_token

    def _stale_edit(self, item: Inbound) -> bool:
        """An edit older than one already passed on for the same message (LINE: the event with
        the largest timestamp is the message's current state)."""
        event = item.event
        if event.kind is not RemoteEventKind.EDIT or event.target_id is None:
            return False
        newest = self._edits.get(event.target_id)
        if newest is not None and newest > event.timestamp_ms:
            log.info("event=line_edit_skipped reason=older target=%s", event.target_id)
            return True
        self._edits[event.target_id] = event.timestamp_ms
        return False

    async def _fetch(self, ref: ContentRef) -> bytes:
        """A client's file; MediaUnavailable when LINE will never hand it over (it keeps files
        only for a while), another exception when it is worth trying again."""
        if ref.external_url:
            return await self._fetch_external(ref.external_url)
        if ref.kind in ("video", "audio"):
            await self._prepared(ref.message_id)
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                return await self.api.content(ref.message_id)
            except LineError as e:
                if e.status in (404, 410):
                    raise MediaUnavailable(
                        "LINE no longer has the file (it keeps clients' files only for a limited time)"
                    ) from e
                definitive = 400 <= e.status < 500 and e.status != 429
                if definitive or attempt + 1 == DOWNLOAD_ATTEMPTS:
                    raise
                await asyncio.sleep(1.0 + 2 * attempt)
        raise AssertionError("unreachable")

    async def _prepared(self, message_id: str) -> None:
        """Waits while LINE prepares a video or audio (its content answers only once ready)."""
        deadline = self.monotonic() + PREPARE_WAIT_S
        while True:
            try:
                status = await self.api.preparation(message_id)
            except LineError as e:
                log.info("event=line_preparation_unknown message_id=%s status=%s", message_id, e.status)
                return  # the download says the rest
            if status == "succeeded":
                return
            if status == "failed":
                raise MediaUnavailable("LINE could not prepare the file for download")
            if self.monotonic() >= deadline:
                raise MediaUnavailable(f"LINE was still preparing it after {PREPARE_WAIT_S:.0f} seconds")
            await asyncio.sleep(2.0)

    async def _fetch_external(self, url: str) -> bytes:
        """Content a LIFF app sent from its own server: fetched without LINE's token."""
        if not _fetchable(url):
            raise MediaUnavailable("the file was sent from an address that is not https")
        assert self._session is not None
        async with self._session.get(url) as resp:
            if resp.status in (404, 410):
                raise MediaUnavailable(f"the file's own server no longer has it (HTTP {resp.status})")
            resp.raise_for_status()
            return await resp.read()

    async def fetch_picture(self, ref: str) -> tuple[bytes, str]:
        """A profile's pictureUrl. LINE serves it from its CDN to anyone holding the URL, so
        the channel access token is never sent with it (this session carries none)."""
        if not _fetchable(ref):
            raise PictureUnavailable("the picture's address is not https")
        if self._session is None:
            raise PictureUnavailable("the LINE connection is not started")
        try:
            async with self._session.get(ref, timeout=_PICTURE_TIMEOUT) as resp:
                if resp.status != 200:
                    raise PictureUnavailable(f"LINE answered HTTP {resp.status}")
                if not resp.content_type.startswith("image/"):
                    raise PictureUnavailable(f"not an image ({resp.content_type[:60]})")
                return await _read_bounded(resp, MAX_PICTURE_BYTES), resp.content_type
        except aiohttp.ClientError as e:  # its text names the URL: only the kind is told
            raise PictureUnavailable(f"could not fetch it ({type(e).__name__})") from None
        except asyncio.TimeoutError:
            raise PictureUnavailable(f"no answer within {_PICTURE_TIMEOUT.total:.0f} s") from None

    # invitations: a LINE Official Account cannot write to someone who never wrote to it

    def invite_account(self) -> str:
        return self.account

    def invite_link(self, code: str) -> str:
        """LINE's oaMessage link: opens the chat with the account, the text pre-filled with the
        code (the client sends it; see translate.invite_code). Works only after ``start``."""
        if not _INVITE_CODE.fullmatch(code):
            raise ValueError(f"an invite code must be {INVITE_LENGTH} letters or digits")
        if not self.basic_id:
            raise ValueError("the LINE account is not connected yet; try again in a moment")
        basic_id = self.basic_id if self.basic_id.startswith("@") else f"@{self.basic_id}"
        text = f"Hello! My reference: {INVITE_MARK}{code}"
        return f"https://line.me/R/oaMessage/{quote(basic_id, safe='')}/?{quote(text, safe='')}"

    # outbound

    async def send(self, delivery: Delivery) -> DeliveryReceipt:
        self._check_account(delivery.chat)
        kind = delivery.kind
        if kind is DeliveryKind.TYPING:
            await self._typing(delivery.chat)
            return DeliveryReceipt()
        if kind is DeliveryKind.READ:
            await self._mark_read(delivery)
            return DeliveryReceipt()
        if kind is DeliveryKind.REACTION:
            raise DeliveryError(
                "LINE does not let an official account react to messages; answer with a message instead",
                permanent=True,
            )
        if kind is not DeliveryKind.MESSAGE:
            # Edits, deletions and templates are refused by the core (CAPABILITIES) already.
            raise DeliveryError(f"LINE cannot carry a {kind.value} from a bot", permanent=True)
        return await self._deliver(delivery, allow_reply=True, settling=False)

    async def checkpoint(self, chat: ChatRef) -> str:
        """How the coming send will go: "reply" while a fresh reply token waits (a reply that a
        crash interrupted cannot be found again), "push" otherwise (its retry key finds it)."""
        return "reply" if self._fresh_reply(chat.chat_id) is not None else "push"

    async def find_delivered(self, delivery: Delivery, checkpoint: str) -> DeliveryReceipt | None:
        """Presents the delivery's retry keys again: what LINE accepted before the crash comes
        back as 409 with its message ids, whatever it had not accepted is sent now, once. A
        send that may have gone as a reply cannot be told (None: it is sent again)."""
        if checkpoint != "push":
            return None
        try:
            receipt = await self._deliver(delivery, allow_reply=False, settling=True)
        except DeliveryError as e:
            log.info("event=line_settle_failed event_id=%s reason=%r", delivery.event_id, e.reason)
            return None
        return receipt

    def _check_account(self, chat: ChatRef) -> None:
        if chat.account != self.account:
            raise DeliveryError(
                f"the LINE account {chat.account} is not the one connected to this bridge", permanent=True
            )

    async def _typing(self, chat: ChatRef) -> None:
        """The loading animation, shown in one-on-one chats only (LINE has none for groups)."""
        if chat_kind(chat.chat_id) != "user":
            return
        try:
            await self.api.loading(chat.chat_id, LOADING_S)
        except LineError as e:
            raise DeliveryError(f"LINE did not show the loading animation ({e})", permanent=False) from e

    async def _mark_read(self, delivery: Delivery) -> None:
        """Marks the client's message (and all before it) read, where LINE gave a token."""
        token = self._reads.pop(delivery.targets[0]) if delivery.targets else None
        if token is None:
            return
        try:
            await self.api.mark_read(token)
        except LineError as e:
            raise DeliveryError(f"LINE did not mark the messages read ({e})", permanent=False) from e

    async def _deliver(self, delivery: Delivery, *, allow_reply: bool, settling: bool) -> DeliveryReceipt:
        messages, notes = self._compose(delivery)
        if not messages:
            raise DeliveryError("there is nothing in this message LINE could show", permanent=True)
        batches = [messages[i : i + MAX_PER_REQUEST] for i in range(0, len(messages), MAX_PER_REQUEST)]
        sent: list[Sent] = []
        for number, batch in enumerate(batches):
            token = self._take_reply(delivery.chat.chat_id) if allow_reply and number == 0 else None
            sent += await self._send_batch(delivery, number, batch, token, settling)
        for message in sent:
            if message.quote_token:
                self._quotes[message.id] = message.quote_token
        return DeliveryReceipt(tuple(m.id for m in sent), note=" ".join(notes))

    async def _send_batch(
        self, delivery: Delivery, number: int, batch: list[Any], token: str | None, settling: bool
    ) -> list[Sent]:
        to = delivery.chat.chat_id
        if token is not None:
            try:
                sent = await self.api.reply(token, batch)
                log.info("event=line_sent via=reply event_id=%s messages=%d", delivery.event_id, len(sent))
                return sent
            except LineError as e:
                if not (e.status == 400 and "reply token" in e.message.lower()):
                    raise _delivery_error(e) from e
                log.info("event=line_reply_token_refused event_id=%s action=push", delivery.event_id)
        recipients = await self._quota.recipients(to)
        key = retry_key(delivery.event_id, number)
        if not settling and self._attempted.get(key) is None:
            # A key presented before may have been accepted (LINE then answers 409 at no cost):
            # only a first attempt is held against the quota; LINE refuses the rest itself.
            await self._quota.check(recipients)
        self._attempted[key] = True
        try:
            sent = await self.api.push(to, batch, key)
        except LineError as e:
            accepted = sent_from(e)
            if e.status != 409:
                raise _delivery_error(e) from e
            log.info(
                "event=line_push_settled event_id=%s request=%d listed=%s",
                delivery.event_id,
                number,
                accepted is not None,
            )
            return accepted or []
        self._quota.spent(recipients)
        log.info(
            "event=line_sent via=push event_id=%s request=%d messages=%d",
            delivery.event_id,
            number,
            len(sent),
        )
        return sent

    def _fresh_reply(self, chat_id: str) -> str | None:
        held = self._replies.get(chat_id)
        if held is None or self.monotonic() - held[1] > REPLY_TOKEN_S:
            return None
        return held[0]

    def _take_reply(self, chat_id: str) -> str | None:
        """The chat's reply token if still fresh, spent by taking it (LINE: once only)."""
        token = self._fresh_reply(chat_id)
        self._replies.pop(chat_id, None)
        return token

    def _compose(self, d: Delivery) -> tuple[list[Any], list[str]]:
        """LINE message objects in order (a file first: the core's first remote id is the
        media's), and notes for the employee."""
        messages: list[Any] = []
        notes: list[str] = []
        if d.media is not None:
            messages.append(self._media_message(d, notes))
        if d.location is not None:
            lat, lon = d.location.latitude, d.location.longitude
            messages.append(
                LocationMessage(
                    title="Location", address=f"{lat:.6f}, {lon:.6f}", latitude=lat, longitude=lon
                )
            )
        body = d.text.body if d.text is not None else ""
        signed = f"{d.signature}\n{body}" if d.signature and body else (d.signature or body)
        texts = (
            [TextMessage(text=part) for part in split_text(signed, MAX_TEXT, measure=utf16_len)]
            if signed.strip()
            else []
        )
        if d.reply_to:
            quote_token = self._quotes.get(d.reply_to)
            if quote_token and texts:
                texts[0] = TextMessage(text=texts[0].text, quote_token=quote_token)
            else:
                notes.append(
                    "LINE shows this answer without the message it replies to (LINE lets a bot quote only messages it has a quote token for, and this bridge has none for that one)."
                )
        return messages + texts, notes

    def _media_message(self, d: Delivery, notes: list[str]) -> Any:
        media = d.media
        assert media is not None
        base = self.config.media_base
        if not base:
            raise DeliveryError(
                "LINE fetches pictures, videos and audio from an https address of the bridge, and none is set; "
                "an admin must set networks.line.webhook.public_url",
                permanent=True,
            )
        plan = line_media.plan(media)
        if plan.note:
            notes.append(plan.note)
        url = f"{base}/{self._media.put(d.event_id, 0, media.data, plan.extension)}"
        preview = f"{base}/{line_media.PREVIEW_NAME}"
        if plan.line_type == "image":
            small = len(media.data) <= line_media.MAX_PREVIEW
            return ImageMessage(original_content_url=url, preview_image_url=url if small else preview)
        if plan.line_type == "video":
            return VideoMessage(original_content_url=url, preview_image_url=preview)
        # LINE shows an audio's length from ``duration`` and needs one; Matrix may not say.
        return AudioMessage(original_content_url=url, duration=max(1, media.duration_ms or 1))


class _Directory:
    """Names and pictures from LINE's profile endpoints, cached (a failed look-up is retried
    after a few minutes and meanwhile gives a neutral name: a profile must not hold up a
    message). A person is looked up per chat (a group's member endpoint is not the friend's),
    but their picture is the newest any look-up gave: their ghost is one, and two chats' caches
    of different ages must not swap its avatar back and forth."""

    def __init__(self, connector: LineConnector) -> None:
        self.c = connector
        self._members: Bounded[tuple[str, str], tuple[float, Profile]] = Bounded(REMEMBERED)
        self._pictures: Bounded[str, str | None] = Bounded(REMEMBERED)
        self._titles: Bounded[str, tuple[float, str]] = Bounded(10_000)

    async def member(self, source: Source, user_id: str) -> Profile:
        key = ("" if source.kind == "user" else source.chat_id, user_id)
        cached = self._members.get(key)
        now = self.c.monotonic()
        if cached is None or now >= cached[0]:
            found = await self._look_up(source, user_id)
            if found is None:
                cached = (now + PROFILE_RETRY_S, Profile(f"LINE user {user_id[-4:]}"))
            else:
                cached = (now + PROFILE_FRESH_S, found)
                self._pictures[user_id] = found.picture
            self._members[key] = cached
        return replace(cached[1], picture=self._pictures.get(user_id))

    async def _look_up(self, source: Source, user_id: str) -> Profile | None:
        """The profile, or None when LINE would not say (the caller names them neutrally)."""
        if not USER_ID.fullmatch(user_id):
            return None
        try:
            if source.kind == "user":
                found = await self.c.api.profile(user_id)
            else:
                found = await self.c.api.member_profile(source.kind, source.chat_id, user_id)
        except Exception as e:  # a name must never hold up a message
            log.info(
                "event=line_profile_unknown user=%s error=%s", user_id, getattr(e, "status", type(e).__name__)
            )
            return None
        name = found.display_name or f"LINE user {user_id[-4:]}"
        return Profile(name, found.language, found.picture_url or None)

    async def title(self, source: Source) -> str:
        """A group's name; multi-person chats have none."""
        if source.kind != "group":
            return "Multi-person chat"
        cached = self._titles.get(source.chat_id)
        now = self.c.monotonic()
        if cached is not None and now < cached[0]:
            return cached[1]
        try:
            name = await self.c.api.group_name(source.chat_id)
            fresh_s = PROFILE_FRESH_S
        except Exception as e:  # nor a group's name
            log.info(
                "event=line_group_name_unknown group=%s error=%s",
                source.chat_id,
                getattr(e, "status", type(e).__name__),
            )
            name, fresh_s = "", PROFILE_RETRY_S
        name = name or "LINE group"
        self._titles[source.chat_id] = (now + fresh_s, name)
        return name


class _Quota:
    """The account's monthly message limit: a push it cannot pay for is refused before it is
    sent. LINE counts a push once per recipient (each member of a group), whatever the number
    of message objects in it; replies cost nothing."""

    def __init__(self, connector: LineConnector) -> None:
        self.c = connector
        self._known: tuple[float, int | None, int] | None = None  # (fetched, limit, used)
        self._members: Bounded[str, tuple[float, int]] = Bounded(10_000)

    async def recipients(self, chat_id: str) -> int:
        kind = chat_kind(chat_id)
        if kind == "user":
            return 1
        cached = self._members.get(chat_id)
        if cached is not None and self.c.monotonic() - cached[0] < MEMBERS_FRESH_S:
            return cached[1]
        try:
            count = max(1, await self.c.api.member_count(kind, chat_id))
        except LineError as e:
            log.info("event=line_member_count_unknown chat=%s status=%s", chat_id, e.status)
            return 1
        self._members[chat_id] = (self.c.monotonic(), count)
        return count

    async def check(self, needed: int) -> None:
        known = await self._current(QUOTA_FRESH_S)
        if known is not None and self._over(known, needed):
            # A refusal is final for the message, so it rests on LINE's figures of now, not on
            # a cached answer up to a minute old: an admin may just have raised the limit. (Only
            # refusals ask again: they are rare, and two quick calls.)
            known = await self._current(0.0)
        if known is None:
            return
        limit, used = known
        if self._over(known, needed):
            raise DeliveryError(
                f"the LINE account's monthly message limit is reached ({used} of {limit} messages sent this month"
                f"{f', and this push would count {needed}' if needed > 1 else ''}); the client can still be answered "
                "free of charge within a minute of their next message, or an admin can raise the limit in LINE "
                "Official Account Manager",
                permanent=True,
            )

    def spent(self, recipients: int) -> None:
        if self._known is not None:
            fetched, limit, used = self._known
            self._known = (fetched, limit, used + recipients)

    @staticmethod
    def _over(known: tuple[int | None, int], needed: int) -> bool:
        limit, used = known
        return limit is not None and used + needed > limit

    async def _current(self, max_age: float) -> tuple[int | None, int] | None:
        """LINE's (limit, used), asked again when the figures kept are older than ``max_age``."""
        now = self.c.monotonic()
        if self._known is None or now - self._known[0] > max_age:
            try:
                limit = await self.c.api.quota()
                used = await self.c.api.consumption() if limit is not None else 0
            except LineError as e:
                # LINE itself refuses a push beyond the limit (429, "monthly limit"): said then.
                log.info("event=line_quota_unknown status=%s", e.status)
                return None
            self._known = (now, limit, used)
        return self._known[1], self._known[2]


def _fetchable(url: str) -> bool:
    """https, or plain http to this machine (the local emulator stands in for LINE's hosts)."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (
        parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
    )


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, refused once it passes ``limit`` (a Content-Length may be absent or wrong)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise PictureUnavailable(f"larger than {limit // (1024 * 1024)} MB")
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise PictureUnavailable(f"larger than {limit // (1024 * 1024)} MB")
    return bytes(data)


def _delivery_error(e: LineError) -> DeliveryError:
    """LINE's answers in the core's terms: wait (rate limit), retry (temporary), or tell."""
    if e.status == 429 and "monthly limit" in e.message.lower():
        return DeliveryError(
            "the LINE account's monthly message limit is reached; the client can still be answered free of charge "
            "within a minute of their next message, or an admin can raise the limit in LINE Official Account Manager",
            permanent=True,
        )
    if e.status == 429:
        return DeliveryError(
            "LINE asks to slow down (HTTP 429)", permanent=False, retry_after=e.retry_after or 5.0
        )
    if e.status <= 0 or e.status >= 500:
        return DeliveryError(
            f"LINE is not answering properly ({e})", permanent=False, retry_after=e.retry_after
        )
    if e.status == 401:
        log.error("event=line_token_rejected fix='renew networks.line.channel_access_token'")
        return DeliveryError(
            "LINE refused the bridge's channel access token; an admin must renew it",
            permanent=False,
            retry_after=30.0,
        )
    return DeliveryError(
        f"LINE refused it: {e.message}{': ' + '; '.join(e.details) if e.details else ''}", permanent=True
    )
