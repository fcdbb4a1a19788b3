"""The Messaging API's HTTP surface: routing, the Bearer check, rate limits, faults, and LINE's
response headers around every endpoint handler.

Every bot endpoint needs ``Authorization: Bearer <channel access token>``; without the header
LINE answers 401 ``Authorization header required. Must follow the scheme, 'Authorization: Bearer
<ACCESS TOKEN>'``, with another token 401 ``Authentication failed. Confirm that the access token
in the authorization header is valid.`` Every answer carries ``X-Line-Request-Id`` ("Response
headers"). ``X-Line-Retry-Key`` is only for push, multicast, narrowcast and broadcast; on
another endpoint "your request will be rejected with status code 400" ("Retry failed API
requests").
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import ids
from .errors import LineError, internal_error, not_found, rate_limited, unauthorized
from .faults import FaultPlan
from .ratelimit import RateLimiter

log = logging.getLogger("sandbox.line.api")

Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]
RETRY_KEY_ENDPOINTS = frozenset(
    {
        "POST /v2/bot/message/push",
        "POST /v2/bot/message/multicast",
        "POST /v2/bot/message/narrowcast",
        "POST /v2/bot/message/broadcast",
    }
)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def line_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


class BotApiRouter:
    """Wraps endpoint handlers with LINE's common behaviour and registers them."""

    def __init__(self, token: str, limiter: RateLimiter, faults: FaultPlan) -> None:
        self.token = token
        self.limiter = limiter
        self.faults = faults

    def add(self, app: web.Application, method: str, path: str, handler: Handler) -> None:
        app.router.add_route(method, path, self._guard(f"{method} {path}", handler))

    def add_fallback(self, app: web.Application) -> None:
        async def unknown(request: web.Request, request_id: str) -> web.StreamResponse:
            raise not_found()  # guess: LINE's body for a path it does not serve

        guarded = self._guard("* /v2/...", unknown, limited=False)
        app.router.add_route("*", "/v2/{rest:.*}", guarded)

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if header is None:
            raise unauthorized(header_present=False)
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized(header_present=False)
        if not hmac.compare_digest(value.strip().encode(), self.token.encode()):
            raise unauthorized(header_present=True)

    def _guard(
        self, endpoint: str, handler: Handler, *, limited: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            started = time.monotonic()
            request_id = ids.request_id()
            try:
                self._authorize(request)
                if limited and not self.limiter.allow(endpoint):
                    raise rate_limited()
                if "X-Line-Retry-Key" in request.headers and endpoint not in RETRY_KEY_ENDPOINTS:
                    # guess: the status is documented, the message text is not
                    raise LineError(400, "The retry key is not supported for this API")
                fault = self.faults.take(endpoint)
                if fault is not None and not fault[1]:
                    raise fault[0]
                response = await handler(request, request_id)
                if fault is not None:
                    log.info(
                        "event=fault_injected endpoint=%r status=%d after=true", endpoint, fault[0].status
                    )
                    raise fault[0]
            except LineError as exc:
                response = line_json(exc.body(), exc.status, exc.headers)
            except Exception:  # a sandbox bug must answer in LINE's shape, not crash
                log.exception("event=bot_api_crash endpoint=%r", endpoint)
                exc = internal_error()
                response = line_json(exc.body(), exc.status)
            response.headers["X-Line-Request-Id"] = request_id
            log.info(
                "event=bot_api_call endpoint=%r path=%s status=%d request_id=%s duration_ms=%.1f",
                endpoint,
                request.path,
                response.status,
                request_id,
                (time.monotonic() - started) * 1000,
            )
            return response

        return guarded
