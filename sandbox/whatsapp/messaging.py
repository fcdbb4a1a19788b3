"""The conversation rules shared by the Graph API (the business) and the control API (the
client's phone): who may send what when, what each side sees, and which webhook each event
produces.

Business sends are accepted synchronously and settled right after: inside the 24-hour customer
service window (or for a template) the client gets the message and the business gets ``sent``
then ``delivered`` statuses; outside it a free-form message fails with a ``failed`` status
carrying error 131047. Messages sent with a media ``link`` are settled once the sandbox has
fetched the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .errors import (
    RE_ENGAGEMENT_DETAILS,
    GraphError,
    cloud_error,
    invalid_parameter,
    missing_parameter,
    status_error,
)
from .ids import conversation_id, wamid
from .media import UPLOAD_LIMITS, MediaStore, StoredMedia, base_mime, check_sendable
from .outbound import OutboundRequest, check_reaction_target, parse_send
from .payloads import (
    edit_object,
    inbound_object,
    message_payload,
    revoke_object,
    status_object,
    status_payload,
)
from .ratelimit import ThroughputLimiter
from .state import (
    EDIT_WINDOW_SECONDS,
    REVOKE_WINDOW_SECONDS,
    SERVICE_WINDOW_SECONDS,
    TYPING_INDICATOR_SECONDS,
    Chat,
    Client,
    ClientError,
    SandboxNumber,
    SandboxState,
    StoredMessage,
)
from .templates import TemplateCatalog
from .webhooks import WebhookDispatcher

log = logging.getLogger("sandbox.whatsapp.messaging")

LINK_FETCH_TIMEOUT = 10.0
EDITABLE_TYPES = ("text", "image", "video", "document")  # text, and media with a caption

Fetcher = Callable[[str], Awaitable[tuple[bytes, str]]]


class Messaging:
    def __init__(
        self,
        state: SandboxState,
        media: MediaStore,
        catalog: TemplateCatalog,
        webhooks: WebhookDispatcher,
        limiter: ThroughputLimiter,
    ) -> None:
        self.state = state
        self.media = media
        self.catalog = catalog
        self.webhooks = webhooks
        self.limiter = limiter
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ================================================================== business side

    def business_send(self, number: SandboxNumber, body: Any) -> dict[str, Any]:
        """``POST /{phone_number_id}/messages`` (a send, or a mark-as-read)."""
        if isinstance(body, dict) and "status" in body:
            return self.mark_read(number, body)
        request = parse_send(body, self.catalog, self.media)
        if request.wa_id == number.digits:
            raise cloud_error(131021, "The recipient phone number is the sender's own number.")
        refused = self.limiter.check(number.phone_number_id, request.wa_id)
        if refused is not None:
            raise refused
        client = self.state.clients.get(request.wa_id)
        if client is None:
            # A business may start a chat (with a template); the profile name comes later.
            client = self.state.clients[request.wa_id] = Client(request.wa_id, "")
        chat = self.state.chat(number, client)
        context_id, context_from = self._reply_context(chat, request.context_id)
        if request.type == "reaction":
            target = chat.by_id.get(request.content["message_id"])
            refused = check_reaction_target(
                target.sender if target else None,
                target.type if target else None,
                request.content["message_id"],
            )
            if refused is not None:
                raise refused
        message = chat.add(
            StoredMessage(
                id=wamid(request.wa_id),
                seq=chat.next_seq,
                sender="business",
                type=request.type,
                timestamp=self.state.now(),
                content=request.content,
                context_id=context_id,
                context_from=context_from,
                status="accepted",
                media_id=request.media_id,
                free_form=request.free_form,
                biz_opaque_callback_data=request.biz_opaque_callback_data,
            )
        )
        answer_message: dict[str, Any] = {"id": message.id}
        if request.template is not None:
            answer_message["message_status"] = "accepted"  # pacing status, templates only
        log.info(
            "event=business_send phone_number_id=%s type=%s wamid=%s",
            number.phone_number_id,
            request.type,
            message.id,
        )
        if request.link is not None:
            self._spawn(self._settle_link(chat, message, request))
        else:
            self._settle(chat, message, request)
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": request.to_input, "wa_id": request.wa_id}],
            "messages": [answer_message],
        }

    @staticmethod
    def _reply_context(chat: Chat, context_id: str | None) -> tuple[str | None, str | None]:
        if context_id is None:
            return None, None
        target = chat.by_id.get(context_id)
        if target is None:
            # guess: Meta's handling of a context id it does not know is undocumented; the
            # sandbox sends the message without the quote, as a phone shows a lost reply.
            log.info("event=reply_context_unknown wamid=%s", context_id)
            return None, None
        sender = chat.number.digits if target.sender == "business" else chat.client.wa_id
        return context_id, sender

    def _settle(self, chat: Chat, message: StoredMessage, request: OutboundRequest) -> None:
        now = self.state.now()
        if message.free_form and not chat.window_open(now):
            self._fail(chat, message, [status_error(131047, RE_ENGAGEMENT_DETAILS)])
            return
        category = request.template.template.category.lower() if request.template else "service"
        # guess: per-message pricing makes service messages, and utility templates sent inside
        # an open customer service window, free; everything else is billed.
        free = category == "service" or (category == "utility" and chat.window_open(now))
        message.extra.update(category=category, free=free)
        self._open_conversation(chat, now)
        chat.typing_until = None  # the next message dismisses the typing indicator
        if message.type == "reaction":
            target = chat.by_id[message.content["message_id"]]
            if message.content["emoji"]:
                target.reactions["business"] = message.content["emoji"]
            else:
                target.reactions.pop("business", None)
            # Meta triggers only a "sent" status for reaction messages.
            message.status = "sent"
            self._emit_status(chat, message, "sent", now)
        else:
            message.status = "delivered"
            self._emit_status(chat, message, "sent", now)
            self._emit_status(chat, message, "delivered", now)
        self.state.changes.notify()

    def _fail(self, chat: Chat, message: StoredMessage, errors: list[dict[str, Any]]) -> None:
        message.status = "failed"
        message.errors = errors
        self._emit_status(chat, message, "failed", self.state.now(), errors=errors)
        self.state.changes.notify()

    def _open_conversation(self, chat: Chat, now: int) -> None:
        if chat.conversation_id is None or now >= chat.conversation_expires:
            chat.conversation_id = conversation_id()
            chat.conversation_expires = now + SERVICE_WINDOW_SECONDS

    async def _settle_link(self, chat: Chat, message: StoredMessage, request: OutboundRequest) -> None:
        assert request.link is not None
        try:
            data, mime_type = await fetch_link(request.link, request.type)
        except LinkFetchError as exc:
            self._fail(chat, message, [status_error(131053, f"Downloading media from weblink failed: {exc}")])
            return
        filename = message.content.get("filename") if isinstance(message.content, dict) else None
        stored = self.media.add_fetched(chat.number.phone_number_id, data, mime_type, filename)
        try:
            check_sendable(request.type, stored)
        except GraphError as exc:
            self._fail(chat, message, [status_error(131053, exc.details or exc.message)])
            return
        message.media_id = stored.id
        self._settle(chat, message, request)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def mark_read(self, number: SandboxNumber, body: dict[str, Any]) -> dict[str, Any]:
        """``{"messaging_product": "whatsapp", "status": "read", "message_id": ...,
        "typing_indicator"?: {"type": "text"}}``: the business read the chat up to that
        message (and optionally shows "typing…")."""
        if body.get("messaging_product") is None:
            raise missing_parameter("messaging_product")
        if body.get("messaging_product") != "whatsapp":
            raise invalid_parameter("Param messaging_product must be one of {WHATSAPP}.")
        if body.get("status") != "read":
            raise invalid_parameter("Param status must be one of {READ}.")
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise missing_parameter("message_id")
        found = self._find_client_message(number, message_id)
        if found is None:
            # guess: Meta's error for marking an unknown message read is undocumented
            raise cloud_error(131009, f"Message {message_id} is not a message this number received.")
        chat, target = found
        typing = body.get("typing_indicator")
        if typing is not None:
            if not isinstance(typing, dict) or typing.get("type") != "text":
                raise invalid_parameter("Param typing_indicator['type'] must be one of {TEXT}.")
            chat.typing_until = self.state.now() + TYPING_INDICATOR_SECONDS
        for message in chat.messages:
            if message.seq > target.seq:
                break
            if message.sender == "client":
                message.read_by_business = True
        self.state.changes.notify()
        return {"success": True}

    def _find_client_message(
        self, number: SandboxNumber, message_id: str
    ) -> tuple[Chat, StoredMessage] | None:
        for (number_id, _), chat in self.state.chats.items():
            if number_id != number.phone_number_id:
                continue
            message = chat.by_id.get(message_id)
            if message is not None and message.sender == "client":
                return chat, message
        return None

    # ================================================================== client side

    def client_sends(
        self,
        chat: Chat,
        kind: str,
        content: Any,
        *,
        reply_to: str | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> StoredMessage:
        """Something the client's phone sends: stored, webhook queued, service window opened."""
        context_id = context_from = None
        if reply_to is not None:
            target = chat.by_id.get(reply_to)
            if target is None or not target.visible:
                raise ClientError("reply_to is not a message of this chat", 404)
            context_id = reply_to
            context_from = chat.number.digits if target.sender == "business" else chat.client.wa_id
        if kind == "reaction":
            self._apply_client_reaction(chat, content)
        now = self.state.now()
        message = chat.add(
            StoredMessage(
                id=wamid(chat.client.wa_id),
                seq=chat.next_seq,
                sender="client",
                type=kind,
                timestamp=now,
                content=content,
                context_id=context_id,
                context_from=context_from,
                extra={"errors": errors} if errors else {},
            )
        )
        # guess: every inbound message (reactions included) opens or refreshes the window;
        # Meta says the window starts "whenever a WhatsApp user messages you".
        chat.last_client_message_at = now
        self._emit_message(chat, inbound_object(chat, message), message.type)
        self.state.changes.notify()
        return message

    @staticmethod
    def _apply_client_reaction(chat: Chat, content: dict[str, Any]) -> None:
        target = chat.by_id.get(content["message_id"])
        if target is None or not target.visible:
            raise ClientError("reaction.message_id is not a message of this chat", 404)
        if target.sender != "business":
            # Meta's reaction webhook covers reactions to messages the business sent.
            raise ClientError("clients react to the business's messages only", 403)
        if target.type == "reaction":
            raise ClientError("a reaction cannot be reacted to", 409)
        if content.get("emoji"):
            target.reactions["client"] = content["emoji"]
        else:
            target.reactions.pop("client", None)

    def client_edits(self, chat: Chat, message: StoredMessage, body: dict[str, Any]) -> str:
        """The client edits its own text (or a media caption) within 15 minutes."""
        now = self._check_own(message, EDIT_WINDOW_SECONDS, "edited", "15 minutes")
        if message.type not in EDITABLE_TYPES:
            raise ClientError(f"a {message.type} message cannot be edited", 409)
        field = "body" if message.type == "text" else "caption"
        new_text = body.get("text", body.get("caption"))
        if not isinstance(new_text, str) or not new_text:
            raise ClientError('"text" (the new text or caption) is required')
        assert isinstance(message.content, dict)
        if message.type != "text" and "caption" not in message.content:
            raise ClientError("only media with a caption can be edited", 409)
        if message.content.get(field) == new_text:
            raise ClientError("the new text is the same as the current one", 409)
        message.content[field] = new_text
        edit_id = wamid(chat.client.wa_id)
        message.edits.append({"id": edit_id, "timestamp": now, field: new_text})
        self._emit_message(chat, edit_object(chat, message, edit_id, now), "edit")
        self.state.changes.notify()
        return edit_id

    def client_revokes(self, chat: Chat, message: StoredMessage) -> str:
        """The client deletes its own message for everyone within two days."""
        now = self._check_own(message, REVOKE_WINDOW_SECONDS, "revoked", "two days")
        message.revoked = True
        revoke_id = wamid(chat.client.wa_id)
        self._emit_message(chat, revoke_object(chat, message, revoke_id, now), "revoke")
        self.state.changes.notify()
        return revoke_id

    def _check_own(self, message: StoredMessage, window: int, verb: str, limit: str) -> int:
        if message.sender != "client":
            raise ClientError(f"a client can have only its own messages {verb}", 403)
        if message.revoked:
            raise ClientError("that message was deleted", 409)
        now = self.state.now()
        if now - message.timestamp > window:
            raise ClientError(f"messages can be {verb} within {limit} only", 409)
        return now

    def client_reads(self, chat: Chat, up_to: str | None) -> list[str]:
        """The client opens the chat: delivered business messages up to ``up_to`` (default:
        all) become read, and the business gets a ``read`` status for each."""
        limit = len(chat.messages)
        if up_to is not None:
            target = chat.by_id.get(up_to)
            if target is None or target.sender != "business":
                raise ClientError('"up_to" is not a business message of this chat', 404)
            limit = target.seq
        now = self.state.now()
        read: list[str] = []
        for message in chat.messages[:limit]:
            if message.sender == "business" and message.status == "delivered":
                message.status = "read"
                self._emit_status(chat, message, "read", now)
                read.append(message.id)
        self.state.changes.notify()
        return read

    # ================================================================== webhooks

    def _emit_message(self, chat: Chat, obj: dict[str, Any], kind: str) -> None:
        payload = message_payload(self.state.waba_id, chat.number, chat.client, obj)
        self.webhooks.enqueue(
            payload,
            "message",
            {"type": kind, "id": obj["id"], "wa_id": chat.client.wa_id},
            self.state.now(),
        )

    def _emit_status(
        self,
        chat: Chat,
        message: StoredMessage,
        status: str,
        timestamp: int,
        *,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        obj = status_object(
            chat,
            message,
            status,
            timestamp,
            errors=errors,
            category=message.extra.get("category", "service"),
            free=message.extra.get("free", True),
        )
        self.webhooks.enqueue(
            status_payload(self.state.waba_id, chat.number, obj),
            "status",
            {"status": status, "id": message.id, "wa_id": chat.client.wa_id},
            timestamp,
        )


class LinkFetchError(Exception):
    pass


async def fetch_link(url: str, kind: str) -> tuple[bytes, str]:
    """Download a media ``link`` like Meta does before delivering: bounded size, a MIME type
    from the response (or the URL's extension)."""
    limit = max(UPLOAD_LIMITS.values())
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=LINK_FETCH_TIMEOUT)) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                raise LinkFetchError(f"HTTP {response.status}")
            data = await response.content.read(limit + 1)
            if len(data) > limit:
                raise LinkFetchError("the file is too large")
            header = response.headers.get("Content-Type", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LinkFetchError(f"{type(exc).__name__}") from None
    mime = base_mime(header) if header else ""
    if not mime or mime == "application/octet-stream":
        mime = mimetypes.guess_type(url)[0] or "application/octet-stream"
    if kind == "audio" and header.lower().startswith("audio/ogg"):
        mime = header
    return data, mime


def media_view(media: StoredMedia | None) -> dict[str, Any]:
    """The file facts a phone shows for a business media message."""
    if media is None:
        return {}
    view: dict[str, Any] = {
        "media_id": media.id,
        "mime_type": media.mime_type,
        "sha256": media.sha256_hex,
        "file_size": media.file_size,
    }
    if base_mime(media.mime_type) == "image/webp":
        view["animated"] = media.animated
    return view
