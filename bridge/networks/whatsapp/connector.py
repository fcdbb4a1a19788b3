"""The WhatsApp connector: company numbers on Meta's Cloud API, webhooks in, Graph calls out.

Each configured number is a company account; a client's conversation with it is a portal. The
connector owns everything WhatsApp-specific: signatures, payload shapes, the 24-hour customer
service window, media upload/download, error codes. The core sees RemoteEvents and Deliveries.

The window: WhatsApp accepts free-form messages from a business only within 24 hours of the
client's last message. The connector knows the client's last message time from the webhooks it
handled and, after a restart, from the core's record (``last_inbound``); outside the window a
free-form message is refused before it is sent, with a notice saying to use a template. If
WhatsApp still reports a 131047 failure (clocks differ), the chat is marked closed until the
client writes again.

Outreach (``TemplateOutreach``): the company may write first, with an approved template only.
The connector turns the typed number into the chat the client's answers will arrive in and
checks the template against the account's list before the core creates anything; a client who
never wrote has no inbound in the record, so free text to them is refused by the window check.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

import aiohttp

from bridge.events import ChatRef, Delivery, DeliveryKind, DeliveryReceipt, MediaKind, OutboundMedia
from bridge.networks.whatsapp.spec import SPEC
from bridge.networks.base import (
    CaptureListener,
    DeliveryError,
    InboundSink,
    MediaUnavailable,
    OutreachError,
    ReportsCapture,
    TemplateOutreach,
)
from bridge.networks.whatsapp import outreach
from bridge.networks.whatsapp.config import WhatsAppConfig
from bridge.networks.whatsapp.formatting import MAX_CAPTION, MAX_TEXT, matrix_to_whatsapp, split_text
from bridge.networks.whatsapp.graph import GraphClient, GraphError
from bridge.networks.whatsapp.translate import NETWORK, Translator
from bridge.networks.whatsapp.webhook import WhatsAppWebhook

log = logging.getLogger("houseline.whatsapp")

WINDOW_S = 24 * 3600
#: Largest file WhatsApp takes from a business (documents; other kinds fall back to documents).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
#: Per kind: the types WhatsApp shows natively and their size limits (Meta's media reference).
_NATIVE = {
    MediaKind.IMAGE: ("image", {"image/jpeg", "image/png"}, 5 * 1024 * 1024),
    MediaKind.VIDEO: ("video", {"video/mp4", "video/3gpp"}, 16 * 1024 * 1024),
    MediaKind.ANIMATION: ("video", {"video/mp4", "video/3gpp"}, 16 * 1024 * 1024),
    MediaKind.VIDEO_NOTE: ("video", {"video/mp4", "video/3gpp"}, 16 * 1024 * 1024),
    MediaKind.AUDIO: (
        "audio",
        {"audio/aac", "audio/mp4", "audio/mpeg", "audio/amr", "audio/ogg", "audio/opus"},
        16 * 1024 * 1024,
    ),
    MediaKind.VOICE: (
        "audio",
        {"audio/aac", "audio/mp4", "audio/mpeg", "audio/amr", "audio/ogg", "audio/opus"},
        16 * 1024 * 1024,
    ),
    MediaKind.STICKER: ("sticker", {"image/webp"}, 100 * 1024),
}
_DOCUMENT_TYPES = {
    "text/plain",
    "application/pdf",
    "application/vnd.ms-powerpoint",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_UPLOADABLE = _DOCUMENT_TYPES | {t for _, types, _ in _NATIVE.values() for t in types}
#: Codes worth waiting out: throughput, pair rate, app/account rate limits, temporary errors.
_RATE_CODES = {130429: 2.0, 131056: 6.0, 80007: 30.0, 4: 30.0, 613: 30.0}
_TEMPORARY_CODES = {1, 2, 131000, 131016, 133004}
#: Recently handled webhook items (Meta redelivers whole payloads).
REMEMBERED = 10_000
#: How long a fetched template list answers outreach checks that pass; a check that would
#: refuse asks WhatsApp again (the template may have been approved a minute ago).
TEMPLATES_FRESH_S = 60.0
#: How long start() waits for the numbers' own phone numbers (outreach refuses writing to
#: them); a slow Graph must not hold up inbound messages, so later outreach checks ask again.
LEARN_PHONES_S = 5.0

LastInbound = Callable[[ChatRef], Awaitable[int | None]]


class WhatsAppConnector(TemplateOutreach, ReportsCapture):
    network = SPEC.name
    display_name = SPEC.display_name
    capabilities = SPEC.capabilities

    def __init__(
        self,
        config: WhatsAppConfig,
        *,
        last_inbound: LastInbound | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.last_inbound = last_inbound
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, GraphClient] = {}
        self._webhook = WhatsAppWebhook(config, self._on_payload)
        self._sink: InboundSink | None = None
        #: (account, chat) -> (newest client message id, its time in ms)
        self._latest: dict[tuple[str, str], tuple[str, int]] = {}
        self._closed: set[tuple[str, str]] = set()
        self._done: OrderedDict[str, None] = OrderedDict()
        self._chat_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._translator = Translator({n.phone_number_id for n in config.numbers}, self._download)
        #: phone_number_id -> its own phone number's digits, learnt from Graph.
        self._phones: dict[str, str] = {}
        self._learning: set[asyncio.Future[None]] = set()
        #: waba_id -> (monotonic time fetched, its templates)
        self._templates: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._capture: CaptureListener | None = None

    @property
    def webhook_port(self) -> int | None:
        return self._webhook.port

    async def start(self, sink: InboundSink) -> None:
        self._sink = sink
        self._session = aiohttp.ClientSession()
        for number in self.config.numbers:
            self._clients[number.phone_number_id] = GraphClient(
                self._session, self.config.graph_url, number.phone_number_id, number.access_token
            )
        await self._webhook.start()
        log.info(
            "event=whatsapp_connected numbers=%s graph=%s webhook_path=%s",
            ",".join(self._clients),
            self.config.graph_url,
            self.config.path,
        )
        self._learning = {
            asyncio.ensure_future(self._learn_phone(n.phone_number_id)) for n in self.config.numbers
        }
        if self._learning:
            await asyncio.wait(self._learning, timeout=LEARN_PHONES_S)

    async def stop(self) -> None:
        for task in self._learning:
            task.cancel()
        self._learning = set()
        await self._webhook.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self, account: str) -> GraphClient:
        client = self._clients.get(account)
        if client is None:
            raise DeliveryError(
                f"the WhatsApp number {account} is no longer configured in this bridge", permanent=True
            )
        return client

    async def _download(self, account: str, media_id: str) -> bytes:
        try:
            return await self._client(account).download(media_id)
        except GraphError as e:
            if 400 <= e.status < 500 and e.code not in _RATE_CODES and e.code != 190 and e.status != 401:
                raise MediaUnavailable(f"WhatsApp no longer has the file ({e.details or e.message})") from e
            raise

    # capture health: a webhook that arrived (signed, for one of our numbers) proves Meta reaches us

    def set_capture_listener(self, listener: CaptureListener) -> None:
        self._capture = listener

    def capture_accounts(self) -> tuple[str, ...]:
        return tuple(n.phone_number_id for n in self.config.numbers)

    def capture_label(self, account: str) -> str:
        number = self.config.number(account)
        return (
            f"WhatsApp number {outreach.label(number, self._phones)}"
            if number is not None
            else f"WhatsApp number {account}"
        )

    def _report(self, payload: dict[str, Any], ok: bool, detail: str = "") -> None:
        if self._capture is None:
            return
        try:
            for account in _payload_numbers(payload) & set(self.capture_accounts()):
                self._capture(NETWORK, account, ok, detail)
        except Exception:  # reporting must never stop receiving
            log.exception("event=capture_report_failed")

    async def account_quality(self) -> dict[str, str]:
        """``GET /{phone_number_id}``'s ``quality_rating`` per number (Meta lowers it when
        clients block or report the number; at RED its messaging is limited). A number Graph
        does not answer for is left out: that says nothing about its webhooks."""
        ratings: dict[str, str] = {}
        for account, client in self._clients.items():
            try:
                facts = await client.phone_number("quality_rating")
            except GraphError as e:
                log.warning("event=whatsapp_quality_unknown phone_number_id=%s error=%s", account, e)
                continue
            if isinstance(facts.get("quality_rating"), str) and facts["quality_rating"]:
                ratings[account] = facts["quality_rating"].upper()
        return ratings

    # inbound

    async def _on_payload(self, payload: dict[str, Any]) -> None:
        """Answered 200 (by the webhook) only after every event in it is committed."""
        try:
            await self._handle_payload(payload)
        except Exception as e:
            self._report(
                payload,
                False,
                f"a webhook could not be committed ({type(e).__name__}); Meta delivers it again",
            )
            raise
        self._report(payload, True)

    async def _handle_payload(self, payload: dict[str, Any]) -> None:
        assert self._sink is not None
        translated = self._translator.payload(payload)
        for key, latest in translated.inbound.items():
            current = self._latest.get(key)
            if current is None or current[1] <= latest[1]:
                self._latest[key] = latest
            self._closed.discard(key)
        self._closed |= translated.closed
        for event in translated.events:
            marker = f"{event.chat.account}/{event.chat.chat_id}/{event.message_id}"
            if marker in self._done:
                continue
            lock = self._chat_locks.setdefault((event.chat.account, event.chat.chat_id), asyncio.Lock())
            async with lock:
                await self._sink(event)
            self._done[marker] = None
            while len(self._done) > REMEMBERED:
                self._done.popitem(last=False)

    # outbound

    async def send(self, delivery: Delivery) -> DeliveryReceipt:
        client = self._client(delivery.chat.account)
        kind = delivery.kind
        try:
            if kind is DeliveryKind.READ:
                await client.mark_read(delivery.targets[0])
                return DeliveryReceipt()
            if kind is DeliveryKind.TYPING:
                latest = self._latest.get((delivery.chat.account, delivery.chat.chat_id))
                if latest is not None and await self._window_open(delivery.chat):
                    await client.mark_read(latest[0], typing=True)
                return DeliveryReceipt()
            if kind in (DeliveryKind.EDIT, DeliveryKind.DELETE):
                # The core refuses these before sending (CAPABILITIES has no edit or delete window).
                raise DeliveryError(f"WhatsApp cannot {kind.value} a sent message", permanent=True)
            if kind is DeliveryKind.TEMPLATE:
                return DeliveryReceipt((await client.send(self._template(delivery)),))
            if not await self._window_open(delivery.chat):
                raise DeliveryError(
                    "the client last wrote more than 24 hours ago (or never), and WhatsApp then accepts only approved "
                    "message templates from a business; send one with the bot's template command, e.g. "
                    "!hl template <name> [parameters]",
                    permanent=True,
                )
            if kind is DeliveryKind.REACTION:
                await client.send(
                    {
                        "to": delivery.chat.chat_id,
                        "type": "reaction",
                        "reaction": {"message_id": delivery.targets[0], "emoji": delivery.reaction},
                    }
                )
                return DeliveryReceipt()
            return await self._message(client, delivery)
        except GraphError as e:
            raise _delivery_error(e) from e

    async def _window_open(self, chat: ChatRef) -> bool:
        key = (chat.account, chat.chat_id)
        if key in self._closed:
            return False
        latest = self._latest.get(key)
        last_ms = latest[1] if latest is not None else None
        if last_ms is None and self.last_inbound is not None:
            last_ms = await self.last_inbound(chat)
        return last_ms is not None and self.clock() - last_ms / 1000 < WINDOW_S

    def _template(self, d: Delivery) -> dict[str, Any]:
        template: dict[str, Any] = {
            "name": d.template,
            "language": {"code": d.template_language or self.config.default_language},
        }
        if d.template_params:
            template["components"] = [
                {"type": "body", "parameters": [{"type": "text", "text": p} for p in d.template_params]}
            ]
        return {"to": d.chat.chat_id, "type": "template", "template": template}

    async def _message(self, client: GraphClient, d: Delivery) -> DeliveryReceipt:
        to = d.chat.chat_id
        context = {"context": {"message_id": d.reply_to}} if d.reply_to else {}
        text = matrix_to_whatsapp(d.text) if d.text is not None and d.text.body else ""
        # The signature in bold on the first line, as on Telegram: the client sees who answers.
        header = f"*{d.signature}*" if d.signature else ""
        signed = f"{header}\n{text}" if header and text else (header or text)
        if d.location is not None:
            ids = [
                await client.send(
                    {
                        "to": to,
                        "type": "location",
                        "location": {"latitude": d.location.latitude, "longitude": d.location.longitude},
                        **context,
                    }
                )
            ]
            if d.signature:
                ids.append(
                    await client.send({"to": to, "type": "text", "text": {"body": f"*{d.signature}*"}})
                )
            return DeliveryReceipt(tuple(ids))
        if d.media is not None:
            return await self._media(client, d, signed, context)
        ids = []
        for i, part in enumerate(split_text(signed, MAX_TEXT)):
            ids.append(
                await client.send(
                    {
                        "to": to,
                        "type": "text",
                        "text": {"body": part, "preview_url": False},
                        **(context if i == 0 else {}),
                    }
                )
            )
        return DeliveryReceipt(tuple(ids))

    async def _media(
        self, client: GraphClient, d: Delivery, caption: str, context: dict[str, Any]
    ) -> DeliveryReceipt:
        media = d.media
        assert media is not None
        wa_type, mimetype, note = _media_type(media)
        media_id = await client.upload(media.data, mimetype, media.file_name)
        body: dict[str, Any] = {"id": media_id}
        if wa_type == "document":
            body["filename"] = media.file_name
        separate: str | None = None
        if caption:
            if wa_type in ("audio", "sticker") or len(caption) > MAX_CAPTION:
                separate = caption
            else:
                body["caption"] = caption
        ids = [await client.send({"to": d.chat.chat_id, "type": wa_type, wa_type: body, **context})]
        if separate:
            for part in split_text(separate, MAX_TEXT):
                ids.append(
                    await client.send(
                        {"to": d.chat.chat_id, "type": "text", "text": {"body": part, "preview_url": False}}
                    )
                )
            note = note or (
                "The caption was sent as a separate message: WhatsApp shows no caption on audio and stickers, "
                f"and at most {MAX_CAPTION} characters elsewhere."
            )
        return DeliveryReceipt(tuple(ids), note=note)

    async def checkpoint(self, chat: ChatRef) -> str:
        """Nothing to start from: see ``find_delivered`` (the core does not ask)."""
        return ""

    async def find_delivered(self, delivery: Delivery, checkpoint: str) -> DeliveryReceipt | None:
        """The Cloud API cannot list a chat's messages: after a crash mid-send the bridge cannot
        tell whether the message went out (it is sent again)."""
        return None

    # outreach

    def outreach_chat(self, address: str, from_account: str | None) -> tuple[ChatRef, str]:
        """The chat inbound messages of this client to this number get (``translate``: account
        = phone_number_id, chat = the sender's wa_id), so the client's answer finds the room."""
        number = outreach.pick_number(self.config.numbers, from_account, self._phones)
        wa_id = outreach.wa_id_of(address)
        outreach.refuse_own(wa_id, self.config.numbers, self._phones)
        return ChatRef(NETWORK, number.phone_number_id, wa_id), f"+{wa_id}"

    async def check_template(self, chat: ChatRef, name: str, language: str, params: tuple[str, ...]) -> None:
        number = self.config.number(chat.account)
        if number is None or chat.account not in self._clients:
            raise OutreachError(f"The WhatsApp number {chat.account} is not connected in this bridge.")
        await asyncio.gather(*(self._learn_phone(n.phone_number_id) for n in self.config.numbers))
        outreach.refuse_own(chat.chat_id, self.config.numbers, self._phones)
        if not number.waba_id:
            raise OutreachError(
                f"The templates of WhatsApp number {outreach.label(number, self._phones)} cannot be checked: an admin must set "
                "its waba_id (networks.whatsapp.numbers[].waba_id, the WhatsApp Business Account id in WhatsApp Manager)."
            )
        language = language or self.config.default_language
        cached = self._templates.get(number.waba_id)
        if cached is not None and time.monotonic() - cached[0] < TEMPLATES_FRESH_S:
            try:
                outreach.check(cached[1], name, language, params)
                return
            except OutreachError:
                pass  # refused only on WhatsApp's current list, below
        outreach.check(
            await self._fetch_templates(number.phone_number_id, number.waba_id), name, language, params
        )

    async def _fetch_templates(self, account: str, waba_id: str) -> list[dict[str, Any]]:
        try:
            templates = await self._clients[account].templates(waba_id)
        except GraphError as e:
            reason = "WhatsApp could not be reached" if e.status == 0 else f"WhatsApp answered {e}"
            log.warning("event=whatsapp_templates_failed waba_id=%s error=%s", waba_id, e)
            raise OutreachError(
                f"The message templates could not be checked ({reason}); try again in a moment."
            ) from e
        self._templates[waba_id] = (time.monotonic(), templates)
        return templates

    async def _learn_phone(self, account: str) -> None:
        """Best effort: without it outreach cannot refuse the company's own number, and WhatsApp
        still refuses the send (131021), which the room is told about."""
        client = self._clients.get(account)
        if account in self._phones or client is None:
            return
        try:
            facts = await client.phone_number()
        except GraphError as e:
            log.warning("event=whatsapp_number_unknown phone_number_id=%s error=%s", account, e)
            return
        digits = re.sub(r"\D", "", str(facts.get("display_phone_number") or ""))
        if digits:
            self._phones[account] = digits


def _payload_numbers(payload: dict[str, Any]) -> set[str]:
    """The business numbers (phone_number_id) a webhook payload is for."""
    found: set[str] = set()
    for entry in payload.get("entry") or []:
        for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
            value = change.get("value") if isinstance(change, dict) else None
            metadata = value.get("metadata") if isinstance(value, dict) else None
            if isinstance(metadata, dict) and metadata.get("phone_number_id"):
                found.add(str(metadata["phone_number_id"]))
    return found


def _media_type(media: OutboundMedia) -> tuple[str, str, str]:
    """(WhatsApp message type, mime type to upload as, a note for the employee if it changed).
    What WhatsApp cannot show natively (type or size) goes as a document of the same type."""
    mimetype = media.mimetype.split(";")[0].strip().lower()
    size = len(media.data)
    if size > MAX_UPLOAD_BYTES:
        raise DeliveryError(
            f"the file is {size / 1e6:.1f} MB; WhatsApp accepts at most 100 MB", permanent=True
        )
    if mimetype not in _UPLOADABLE:
        raise DeliveryError(
            f"WhatsApp does not accept files of type {mimetype} (it takes PDF, Office documents, plain text, "
            "JPEG/PNG images, MP4/3GPP video and common audio formats)",
            permanent=True,
        )
    kind = MediaKind.IMAGE if media.kind is MediaKind.STICKER and mimetype != "image/webp" else media.kind
    native = _NATIVE.get(kind)
    if native is None:
        return "document", mimetype, ""
    wa_type, types, limit = native
    if mimetype in types and size <= limit:
        return wa_type, mimetype, ""
    reason = (
        f"over WhatsApp's {_size(limit)} limit for a {wa_type}"
        if mimetype in types
        else f"of a type WhatsApp does not show as a {wa_type} ({mimetype})"
    )
    return "document", mimetype, f"Sent as a document: the file was {reason}."


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MB" if n >= 1024 * 1024 else f"{n // 1024} KB"


def _delivery_error(e: GraphError) -> DeliveryError:
    """Graph errors in the core's terms: wait (rate limits), retry (temporary), or tell."""
    if e.code in _RATE_CODES:
        return DeliveryError(
            f"WhatsApp asks to slow down (error {e.code})", permanent=False, retry_after=_RATE_CODES[e.code]
        )
    if e.status == 0 or e.status >= 500 or e.code in _TEMPORARY_CODES:
        return DeliveryError(f"WhatsApp is not answering properly ({e})", permanent=False)
    if e.code == 190 or e.status == 401:
        # A revoked or expired token is fixed by an admin; messages wait (and say so) meanwhile.
        log.error("event=whatsapp_token_rejected fix='renew networks.whatsapp.numbers[].access_token'")
        return DeliveryError(
            "WhatsApp refused the bridge's access token; an admin must renew it",
            permanent=False,
            retry_after=30.0,
        )
    if e.code == 131047:
        return DeliveryError(
            "the client last wrote more than 24 hours ago; WhatsApp then accepts only approved message templates",
            permanent=True,
        )
    if e.code in (132000, 132001, 132012, 132015, 132016):
        return DeliveryError(f"WhatsApp refused the template: {e.details or e.message}", permanent=True)
    return DeliveryError(f"WhatsApp refused it: {e.details or e.message}", permanent=True)
