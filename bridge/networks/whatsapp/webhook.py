"""The public endpoint Meta delivers WhatsApp webhooks to.

The signature is checked on the raw bytes before anything is parsed (the endpoint is public; a
forged request must cost neither parsing nor a place in the queue, and re-serialised JSON would
not match Meta's escaping). A payload is answered 200 only after ``handle`` returned, i.e. after
the core committed it; any failure answers 500 and Meta delivers it again later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.listener import listen
from bridge.networks.whatsapp.config import WhatsAppConfig

log = logging.getLogger("houseline.whatsapp.webhook")

SIGNATURE_HEADER = "X-Hub-Signature-256"
#: Meta batches at most a few hundred small updates per POST; media come as ids.
MAX_BODY = 3 * 1024 * 1024

PayloadHandler = Callable[[dict[str, Any]], Awaitable[None]]


def signature_valid(app_secret: str, body: bytes, header: str | None) -> bool:
    """``sha256=<hex>`` of HMAC-SHA256(app secret, raw body), compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())


class WhatsAppWebhook:
    def __init__(self, config: WhatsAppConfig, handle: PayloadHandler) -> None:
        self.config = config
        self.handle = handle
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get(self.config.path, self._verify)
        app.router.add_post(self.config.path, self._deliver)
        self._runner, self.port = await listen(app, self.config.listen_host, self.config.listen_port)
        log.info(
            "event=whatsapp_webhook_listening host=%s port=%s path=%s",
            self.config.listen_host,
            self.port,
            self.config.path,
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _verify(self, request: web.Request) -> web.Response:
        """Meta's subscription handshake: echo the challenge if the verify token matches."""
        q = request.query
        token = q.get("hub.verify_token", "")
        if q.get("hub.mode") == "subscribe" and hmac.compare_digest(
            token.encode(), self.config.verify_token.encode()
        ):
            log.info("event=whatsapp_webhook_verified")
            return web.Response(text=q.get("hub.challenge", ""), content_type="text/plain")
        log.warning("event=whatsapp_webhook_verify_refused mode=%r", q.get("hub.mode", "")[:20])
        return web.Response(status=403, text="verify token mismatch")

    async def _deliver(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            log.warning("event=whatsapp_webhook_refused reason=too_large")
            return web.json_response({"error": "body too large"}, status=413)
        if not signature_valid(self.config.app_secret, body, request.headers.get(SIGNATURE_HEADER)):
            log.warning(
                "event=whatsapp_webhook_refused reason=bad_signature has_header=%s",
                SIGNATURE_HEADER in request.headers,
            )
            return web.json_response({"error": "invalid signature"}, status=403)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            log.warning("event=whatsapp_webhook_refused reason=not_json")
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
            log.warning("event=whatsapp_webhook_refused reason=bad_shape")
            return web.json_response({"error": "expected an object with an 'entry' list"}, status=400)
        if payload.get("object") != "whatsapp_business_account":
            # Another product's webhook on the same app: acknowledged, nothing to do.
            log.info("event=whatsapp_webhook_ignored object=%r", str(payload.get("object"))[:40])
            return web.json_response({})
        try:
            await self.handle(payload)
        except Exception:
            log.exception("event=whatsapp_webhook_failed action=meta_redelivers")
            return web.json_response({"error": "not handled; deliver again"}, status=500)
        return web.json_response({})
