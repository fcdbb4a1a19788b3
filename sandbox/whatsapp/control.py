"""The control API: plays the client's phone (``/client/{wa_id}/...``) and offers test knobs
(``/control/...``): webhook subscription, injected faults, the clock, redelivery and the
delivery log. See sandbox/whatsapp/README.md for every endpoint.

It has no authentication because it stands for people's own devices and the test harness; it
answers loopback callers only, whatever address the server is bound to.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox.changes import Changes
from .faults import FaultPlan
from .inbound import parse_content, read_body, read_json
from .media import MEDIA_KINDS, MediaStore
from .messaging import Messaging
from .state import Chat, ClientError, SandboxState, StoredMessage, check_wa_id
from .views import message_view, typing
from .webhooks import WebhookDispatcher, WebhookSubscriptionError

log = logging.getLogger("sandbox.whatsapp.control")

MAX_WAIT = 30.0
#: The ratings Graph's phone number node reports (UNKNOWN: not rated yet).
QUALITY_RATINGS = ("GREEN", "YELLOW", "RED", "UNKNOWN")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def is_loopback(remote: str | None) -> bool:
    if remote is None:
        return True  # unix sockets and in-process test clients
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class ControlApi:
    def __init__(
        self,
        state: SandboxState,
        media: MediaStore,
        messaging: Messaging,
        webhooks: WebhookDispatcher,
        faults: FaultPlan,
    ) -> None:
        self.state = state
        self.media = media
        self.messaging = messaging
        self.webhooks = webhooks
        self.faults = faults

    @property
    def changes(self) -> Changes:
        return self.state.changes

    def add_routes(self, app: web.Application) -> None:
        routes = [
            ("POST", "/client/{wa_id}/messages", self.post_message),
            ("GET", "/client/{wa_id}/messages", self.get_messages),
            ("GET", "/client/{wa_id}/history", self.get_history),
            ("GET", "/client/{wa_id}/media/{media_id}", self.get_media),
            ("POST", "/client/{wa_id}/messages/{wamid}/edit", self.edit),
            ("POST", "/client/{wa_id}/messages/{wamid}/revoke", self.revoke),
            ("POST", "/client/{wa_id}/read", self.read),
            ("POST", "/control/webhook", self.subscribe),
            ("POST", "/control/faults", self.set_faults),
            ("POST", "/control/clock", self.set_clock),
            ("POST", "/control/numbers/{phone_number_id}/quality", self.set_quality),
            ("POST", "/control/redeliver", self.redeliver),
            ("GET", "/control/deliveries", self.deliveries),
            ("GET", "/control/state", self.get_state),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, self._guard(handler))

    def _guard(self, handler: Handler) -> Handler:
        """Loopback only, and every refusal as JSON ``{"error": ...}``."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if not is_loopback(request.remote):
                return json_response({"error": "the control API answers loopback callers only"}, 403)
            try:
                return await handler(request)
            except ClientError as exc:
                return json_response({"error": str(exc)}, exc.status)
            except Exception:  # a sandbox bug must answer in JSON, not crash
                log.exception("event=control_crash path=%s", request.path)
                return json_response({"error": "internal sandbox error"}, 500)

        return guarded

    # ------------------------------------------------------------------ helpers

    def _chat(self, request: web.Request, to: Any = None) -> Chat:
        wa_id = request.match_info["wa_id"]
        number = self.state.number_for(to if to is not None else request.query.get("to"))
        return self.state.existing_chat(number, wa_id)

    def _maybe_chat(self, request: web.Request) -> tuple[str, str]:
        wa_id = request.match_info["wa_id"]
        check_wa_id(wa_id)
        number = self.state.number_for(request.query.get("to"))
        return number.phone_number_id, wa_id

    @staticmethod
    def _timeout(request: web.Request) -> float:
        try:
            return max(0.0, min(float(request.query.get("timeout", "0")), MAX_WAIT))
        except ValueError:
            raise ClientError('"timeout" must be a number of seconds') from None

    def _own_message(self, request: web.Request, chat: Chat) -> StoredMessage:
        message = chat.by_id.get(request.match_info["wamid"])
        if message is None or not message.visible:
            raise ClientError("no such message in this chat", 404)
        return message

    async def _long_poll(
        self, request: web.Request, pick: Callable[[StoredMessage], bool]
    ) -> tuple[Chat | None, list[StoredMessage]]:
        """Messages ``pick`` accepts after ``?after=``, waiting up to ``?timeout=`` for one."""
        key = self._maybe_chat(request)
        after = request.query.get("after") or None
        timeout = self._timeout(request)

        def newer() -> list[StoredMessage]:
            chat = self.state.chats.get(key)
            return [] if chat is None else [m for m in chat.after(after) if pick(m)]

        if timeout > 0:
            await self.changes.wait_for(lambda: bool(newer()), timeout)
        return self.state.chats.get(key), newer()

    # ------------------------------------------------------------------ the client's phone

    async def post_message(self, request: web.Request) -> web.Response:
        """The client sends text, a location, contacts, a reaction, an unsupported type, or a
        file (multipart); the business gets a ``messages`` webhook and the window opens."""
        wa_id = request.match_info["wa_id"]
        check_wa_id(wa_id)
        body = await read_body(request)
        number = self.state.number_for(body.values.get("to"))
        self.state.check_name(wa_id, body.values.get("name"))
        content = parse_content(body, self.media, number.phone_number_id)
        client = self.state.client_named(wa_id, body.values.get("name"))
        chat = self.state.chat(number, client)
        reply_to = body.values.get("reply_to") or None
        if reply_to is not None and not isinstance(reply_to, str):
            raise ClientError('"reply_to" must be a message id')
        message = self.messaging.client_sends(
            chat, content.kind, content.content, reply_to=reply_to, errors=content.errors
        )
        answer: dict[str, Any] = {"id": message.id, "seq": message.seq}
        if content.kind in MEDIA_KINDS and isinstance(message.content, dict):
            answer["media_id"] = message.content["id"]
        return json_response(answer)

    async def get_messages(self, request: web.Request) -> web.Response:
        """What the client received from the business, oldest first (``?after=<wamid or
        seq>&timeout=<s>&to=<phone_number_id>``)."""
        chat, messages = await self._long_poll(request, lambda m: m.sender == "business" and m.visible)
        return json_response(
            {
                "messages": [message_view(chat, m, self.media) for m in messages] if chat else [],
                "typing": typing(chat, self.state.now()),
            }
        )

    async def get_history(self, request: web.Request) -> web.Response:
        """Both directions, with ``sender``."""
        chat, messages = await self._long_poll(request, lambda m: m.visible)
        return json_response(
            {
                "messages": [message_view(chat, m, self.media, with_sender=True) for m in messages]
                if chat
                else [],
                "typing": typing(chat, self.state.now()),
                "window_open": bool(chat and chat.window_open(self.state.now())),
            }
        )

    async def get_media(self, request: web.Request) -> web.Response:
        """The bytes of a media that appeared in the client's chat (either direction)."""
        chat = self._chat(request)
        media_id = request.match_info["media_id"]
        in_chat = any(
            m.media_id == media_id
            or (m.sender == "client" and isinstance(m.content, dict) and m.content.get("id") == media_id)
            for m in chat.messages
        )
        media = self.media.stored(media_id)
        if not in_chat or media is None:
            raise ClientError("no such media in this chat", 404)
        return web.Response(body=media.data, content_type=media.mime_type.split(";")[0])

    async def edit(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        chat = self._chat(request, body.get("to"))
        message = self._own_message(request, chat)
        edit_id = self.messaging.client_edits(chat, message, body)
        return json_response({"id": edit_id, "original_message_id": message.id})

    async def revoke(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        chat = self._chat(request, body.get("to"))
        message = self._own_message(request, chat)
        revoke_id = self.messaging.client_revokes(chat, message)
        return json_response({"id": revoke_id, "original_message_id": message.id})

    async def read(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        chat = self._chat(request, body.get("to"))
        up_to = body.get("up_to")
        if up_to is not None and not isinstance(up_to, str):
            raise ClientError('"up_to" must be a message id')
        return json_response({"read": self.messaging.client_reads(chat, up_to)})

    # ------------------------------------------------------------------ test knobs

    async def subscribe(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        url, token = body.get("url"), body.get("verify_token")
        if not isinstance(url, str) or not url or not isinstance(token, str):
            raise ClientError('"url" and "verify_token" are required strings')
        try:
            await self.webhooks.subscribe(url, token)
        except WebhookSubscriptionError as exc:
            return json_response({"error": str(exc)}, 502)
        return json_response({"subscribed": True})

    async def set_faults(self, request: web.Request) -> web.Response:
        return json_response(self.faults.configure(await read_json(request)))

    async def set_clock(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        seconds = body.get("advance_seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ClientError('"advance_seconds" must be a non-negative number')
        now = self.state.clock.advance(float(seconds))
        self.changes.notify()
        log.info("event=clock_advanced seconds=%s now=%d", seconds, now)
        return json_response({"now": now, "offset_seconds": self.state.clock.offset})

    async def set_quality(self, request: web.Request) -> web.Response:
        """Meta rates each number GREEN, YELLOW or RED from client feedback (blocks, reports);
        the bridge's capture health reads it from ``GET /{phone_number_id}``."""
        number = self.state.number_for(request.match_info["phone_number_id"])
        rating = (await read_json(request)).get("quality_rating")
        if rating not in QUALITY_RATINGS:
            raise ClientError(f'"quality_rating" must be one of {", ".join(QUALITY_RATINGS)}')
        self.state.quality[number.phone_number_id] = rating
        log.info("event=quality_set phone_number_id=%s rating=%s", number.phone_number_id, rating)
        return json_response(self.state.describe_number(number))

    async def redeliver(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        since = body.get("since", 1)
        if not isinstance(since, int) or isinstance(since, bool) or since < 1:
            raise ClientError('"since" must be a delivery index (>= 1)')
        return json_response({"redelivered": self.webhooks.redeliver(since)})

    async def deliveries(self, request: web.Request) -> web.Response:
        include = request.query.get("payloads", "1") not in ("0", "false", "no")
        return json_response(self.webhooks.describe(include_payload=include))

    async def get_state(self, request: web.Request) -> web.Response:
        return json_response(
            {
                **self.state.summary(),
                "media": self.media.count,
                "faults": self.faults.describe(),
                "webhook": {
                    "url": self.webhooks.subscription.url if self.webhooks.subscription else None,
                    "pending": self.webhooks.pending,
                },
            }
        )
