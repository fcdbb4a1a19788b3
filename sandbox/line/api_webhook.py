"""Webhook settings: ``PUT``/``GET /v2/bot/channel/webhook/endpoint`` and ``POST
/v2/bot/channel/webhook/test`` (reference, "Webhook settings").

- PUT ``{"endpoint"}``: "a valid HTTPS URL", "500 characters or less" (plus http:// to
  127.0.0.1/localhost in the sandbox); 200 ``{}``; otherwise 400 ``Invalid webhook endpoint URL``.
- GET: ``{"endpoint", "active"}``; 404 ``Webhook endpoint not found`` when none is set.
- Test: with ``endpoint`` that URL, without it the one set (404 if none); sends ``{"destination",
  "events": []}`` and answers ``{"success", "timestamp", "statusCode", "reason", "detail"}``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .api import BotApiRouter, line_json
from .errors import (
    INVALID_WEBHOOK_URL,
    MUST_BE_SPECIFIED,
    WEBHOOK_NOT_FOUND,
    LineError,
    detail,
    not_found,
    request_body_errors,
)
from .jsonbody import read_body
from .webhook import WebhookDispatcher, valid_endpoint

log = logging.getLogger("sandbox.line.api")


class WebhookApi:
    def __init__(self, webhooks: WebhookDispatcher) -> None:
        self.webhooks = webhooks

    def add_routes(self, app: web.Application, router: BotApiRouter) -> None:
        router.add(app, "PUT", "/v2/bot/channel/webhook/endpoint", self.set_endpoint)
        router.add(app, "GET", "/v2/bot/channel/webhook/endpoint", self.get_endpoint)
        router.add(app, "POST", "/v2/bot/channel/webhook/test", self.test)

    async def set_endpoint(self, request: web.Request, request_id: str) -> web.Response:
        body = await read_body(request)
        endpoint = body.data.get("endpoint")
        if endpoint is None:
            raise request_body_errors(
                [detail("endpoint", MUST_BE_SPECIFIED)]
            )  # guess: detail for a missing URL
        if not isinstance(endpoint, str):
            raise body.invalid("endpoint")
        if not valid_endpoint(endpoint):
            raise LineError(400, INVALID_WEBHOOK_URL)
        self.webhooks.endpoint = endpoint
        log.info("event=webhook_endpoint_set endpoint=%s", endpoint)
        return line_json({})

    async def get_endpoint(self, request: web.Request, request_id: str) -> web.Response:
        if self.webhooks.endpoint is None:
            raise not_found(WEBHOOK_NOT_FOUND)
        return line_json({"endpoint": self.webhooks.endpoint, "active": self.webhooks.active})

    async def test(self, request: web.Request, request_id: str) -> web.Response:
        body = await read_body(request, allow_empty=True)
        endpoint = body.data.get("endpoint")
        if endpoint is None:
            if self.webhooks.endpoint is None:
                raise not_found(WEBHOOK_NOT_FOUND)
            endpoint = self.webhooks.endpoint
        elif not isinstance(endpoint, str):
            raise body.invalid("endpoint")
        elif not valid_endpoint(endpoint):
            raise LineError(400, INVALID_WEBHOOK_URL)
        return line_json(await self.webhooks.test(endpoint))
