"""Test knobs: ``/control/...`` (see sandbox/line/README.md) — the clock, the quota, the
console's webhook settings, raw and redelivered webhooks, faults, rate limits, content expiry,
and views of everything the account sent and every webhook request made."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from .control_common import guard, json_response, read_json
from .faults import FaultPlan
from .ratelimit import RateLimiter
from .state import ClientError, SandboxState
from .views import message_view
from .webhook import WebhookDispatcher, encode, signature, valid_endpoint

log = logging.getLogger("sandbox.line.control")


def _non_negative_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ClientError(f'"{key}" must be a non-negative integer')
    return value


class KnobsControl:
    def __init__(
        self,
        state: SandboxState,
        webhooks: WebhookDispatcher,
        faults: FaultPlan,
        limiter: RateLimiter,
        channel_secret: str,
    ) -> None:
        self.state = state
        self.webhooks = webhooks
        self.faults = faults
        self.limiter = limiter
        self.channel_secret = channel_secret

    def add_routes(self, app: web.Application) -> None:
        routes = [
            ("GET", "/control/state", self.get_state),
            ("POST", "/control/clock", self.clock),
            ("POST", "/control/quota", self.quota),
            ("POST", "/control/webhook", self.webhook),
            ("POST", "/control/events", self.raw_events),
            ("POST", "/control/redeliver", self.redeliver),
            ("GET", "/control/deliveries", self.deliveries),
            ("POST", "/control/faults", self.set_faults),
            ("POST", "/control/rate-limits", self.rate_limits),
            ("DELETE", "/control/content/{message_id}", self.delete_content),
            ("GET", "/control/outbox", self.outbox),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, guard(handler))

    async def get_state(self, request: web.Request) -> web.Response:
        return json_response(
            {
                **self.state.summary(),
                "webhook": {
                    "endpoint": self.webhooks.endpoint,
                    "active": self.webhooks.active,
                    "redelivery": self.webhooks.redelivery,
                    "pending": self.webhooks.pending,
                },
                "faults": self.faults.describe(),
                "rateLimits": self.limiter.enabled,
            }
        )

    async def clock(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        seconds = body.get("advance_seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ClientError('"advance_seconds" must be a non-negative number')
        now = self.state.clock.advance(float(seconds))
        self.state.changes.notify()
        log.info("event=clock_advanced seconds=%s now=%.3f", seconds, now)
        return json_response({"now": now, "offset_seconds": self.state.clock.offset})

    async def quota(self, request: web.Request) -> web.Response:
        """``{"limit": n | null, "usage"?: n}``: the monthly target limit (null: none) and the
        number of messages already counted this month."""
        body = await read_json(request)
        if "limit" in body:
            limit = body["limit"]
            if limit is not None:
                limit = _non_negative_int(body, "limit")
            self.state.quota_limit = limit
        usage = _non_negative_int(body, "usage")
        if usage is not None:
            self.state.usage = usage
        return json_response({**self.state.quota(), "totalUsage": self.state.usage})

    async def webhook(self, request: web.Request) -> web.Response:
        """The console's settings: ``endpoint`` (Webhook URL; null clears), ``active`` (Use
        webhook), ``redelivery`` (Webhook redelivery)."""
        body = await read_json(request)
        if "endpoint" in body:
            endpoint = body["endpoint"]
            if endpoint is not None and not valid_endpoint(endpoint):
                raise ClientError(
                    "not a valid webhook URL (HTTPS, or http to 127.0.0.1/localhost; ≤ 500 characters)"
                )
            self.webhooks.endpoint = endpoint
        for key in ("active", "redelivery"):
            if key in body:
                if not isinstance(body[key], bool):
                    raise ClientError(f'"{key}" must be true or false')
                setattr(self.webhooks, key, body[key])
        return json_response(
            {
                "endpoint": self.webhooks.endpoint,
                "active": self.webhooks.active,
                "redelivery": self.webhooks.redelivery,
            }
        )

    async def raw_events(self, request: web.Request) -> web.Response:
        """POST a hand-made webhook now: ``{"events": [...]}`` (wrapped with this bot's
        ``destination``), ``{"payload": {...}}`` or ``{"body": "<any text>"}`` as it is; signed
        with the channel secret unless ``"signature": "<value>"`` or ``"sign": false``."""
        body = await read_json(request)
        if "events" in body:
            if not isinstance(body["events"], list):
                raise ClientError('"events" must be a list')
            raw = encode(
                {"destination": body.get("destination", self.state.bot.user_id), "events": body["events"]}
            )
        elif "payload" in body:
            raw = encode(body["payload"])
        elif isinstance(body.get("body"), str):
            raw = body["body"].encode("utf-8")
        else:
            raise ClientError('give "events", "payload" or "body"')
        sig: str | None = signature(self.channel_secret, raw)
        if "signature" in body:
            if not isinstance(body["signature"], str):
                raise ClientError('"signature" must be a string')
            sig = body["signature"]
        if body.get("sign", True) is False:
            sig = None
        try:
            delivery = await self.webhooks.send_raw(raw, sig)
        except LookupError as exc:
            raise ClientError(str(exc), 409) from None
        return json_response({"index": delivery.index, "status": delivery.status, "result": delivery.result})

    async def redeliver(self, request: web.Request) -> web.Response:
        """Send events again with ``isRedelivery: true``: ``{"webhookEventIds": [...]}`` or
        ``{"since": <delivery index>}`` (the events of deliveries from that index on)."""
        body = await read_json(request)
        event_ids = body.get("webhookEventIds")
        if event_ids is None:
            since = _non_negative_int(body, "since") or 1
            event_ids = list(
                dict.fromkeys(
                    e
                    for d in self.webhooks.log
                    if d.index >= since and d.kind == "events"
                    for e in d.event_ids
                )
            )
        if not isinstance(event_ids, list) or not all(isinstance(e, str) for e in event_ids):
            raise ClientError('"webhookEventIds" must be a list of ids')
        unknown = [e for e in event_ids if e not in self.webhooks.events]
        if unknown:
            raise ClientError(f"unknown webhookEventIds: {', '.join(unknown)}", 404)
        return json_response({"redelivered": self.webhooks.redeliver(event_ids)})

    async def deliveries(self, request: web.Request) -> web.Response:
        include = request.query.get("payloads", "1") not in ("0", "false", "no")
        return json_response(self.webhooks.describe(include_payload=include))

    async def set_faults(self, request: web.Request) -> web.Response:
        return json_response(self.faults.configure(await read_json(request)))

    async def rate_limits(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body.get("enabled"), bool):
            raise ClientError('"enabled" must be true or false')
        self.limiter.enabled = body["enabled"]
        return json_response({"enabled": self.limiter.enabled})

    async def delete_content(self, request: web.Request) -> web.Response:
        """LINE deletes content "after a certain period": Get content answers 404 from now on."""
        message = self.state.messages.get(request.match_info["message_id"])
        if message is None or message.from_account or message.data is None:
            raise ClientError("no content for that message", 404)
        message.content_deleted = True
        return json_response({"messageId": message.id, "contentDeleted": True})

    async def outbox(self, request: web.Request) -> web.Response:
        """Everything the account sent, delivered or not, and every loading request."""
        sent = [
            message_view(m) | {"chatId": m.chat_id} for m in self.state.messages.values() if m.from_account
        ]
        loading = [
            {"chatId": c.chat_id, **entry} for c in self.state.chats.values() for entry in c.loading_log
        ]
        return json_response(json.loads(json.dumps({"messages": sent, "loading": loading})))
