"""The public endpoint LINE delivers webhooks to, and where LINE fetches the bridge's media.

``X-Line-Signature`` (base64 HMAC-SHA256 of the body under the channel secret) is checked on
the raw bytes before anything is parsed, with line-bot-sdk's validator: the endpoint is public,
and a forged request must cost neither a JSON parse nor a place in the queue. A payload is
answered 200 only after ``handle`` returned, i.e. after the core committed every event in it;
a failure answers 500 and LINE (with webhook redelivery on) delivers it again, which
:class:`HandledEvents` and the core's message map then recognise.

The same listener serves outbound media (``GET {media_path}/<token>.<ext>``, see
bridge.networks.line.media): LINE downloads from the address it was given, so it must be as
reachable as the webhook, and the reverse proxy in front of one serves the other.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from linebot.v3 import SignatureValidator

from bridge.listener import listen
from bridge.networks.line.config import LineConfig
from bridge.networks.line.media import PREVIEW_NAME, MediaStore, content_type, placeholder_png

log = logging.getLogger("houseline.line.webhook")

SIGNATURE_HEADER = "X-Line-Signature"
#: LINE batches events into one POST; each is small (media come as ids), so this is ample.
MAX_BODY = 2 * 1024 * 1024
#: Webhook events remembered as handled (redeliveries come within hours, not months).
REMEMBERED = 20_000

PayloadHandler = Callable[[dict[str, Any]], Awaitable[None]]


class HandledEvents:
    """The ``webhookEventId`` of every event the core committed, most recent last (bounded):
    a redelivered event (``deliveryContext.isRedelivery``) already in it is not handed over
    again. The core's message map catches what this has forgotten."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, webhook_event_id: object) -> bool:
        return webhook_event_id in self._ids

    def add(self, webhook_event_id: str) -> None:
        self._ids[webhook_event_id] = None
        self._ids.move_to_end(webhook_event_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


def signature_valid(validator: SignatureValidator, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is LINE's signature of ``body``. LINE signs UTF-8 JSON text, so a
    body that is not UTF-8 cannot carry a valid signature; nothing here raises."""
    if not header or len(header) > 200:
        return False
    try:
        return bool(validator.validate(body.decode("utf-8"), header.strip()))
    except (UnicodeError, ValueError, TypeError):
        return False


class LineWebhook:
    def __init__(self, config: LineConfig, handle: PayloadHandler, media: MediaStore) -> None:
        self.config = config
        self.handle = handle
        self.media = media
        self._validator = SignatureValidator(config.channel_secret)
        self._preview = placeholder_png()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(self.config.path, self._deliver)
        app.router.add_get(f"{self.config.media_path}/{{name}}", self._serve)
        self._runner, self.port = await listen(app, self.config.listen_host, self.config.listen_port)
        log.info(
            "event=line_webhook_listening host=%s port=%s path=%s media_path=%s",
            self.config.listen_host,
            self.port,
            self.config.path,
            self.config.media_path,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _deliver(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            log.warning("event=line_webhook_refused reason=too_large")
            return web.json_response({"error": "body too large"}, status=413)
        if not signature_valid(self._validator, body, request.headers.get(SIGNATURE_HEADER)):
            log.warning(
                "event=line_webhook_refused reason=bad_signature has_header=%s",
                SIGNATURE_HEADER in request.headers,
            )
            return web.json_response({"error": "invalid signature"}, status=403)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            log.warning("event=line_webhook_refused reason=not_json")
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
            log.warning("event=line_webhook_refused reason=bad_shape")
            return web.json_response({"error": "expected an object with an 'events' list"}, status=400)
        try:
            await self.handle(payload)
        except Exception:
            log.exception("event=line_webhook_failed action=line_redelivers_if_enabled")
            return web.json_response({"error": "not handled; deliver again"}, status=500)
        return web.json_response({})

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        """A stored outbound file, to LINE (or anyone holding its unguessable address)."""
        name = request.match_info.get("name", "")
        if name == PREVIEW_NAME:
            return web.Response(body=self._preview, content_type="image/png")
        path = self.media.path(name)
        if path is None:
            return web.Response(status=404, text="not found")
        return web.FileResponse(
            path, headers={"Content-Type": content_type(name), "Cache-Control": "private"}
        )
