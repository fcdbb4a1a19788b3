"""Plumbing shared by the control API: loopback-only access, ``{"error"}`` refusals, JSON
bodies, and long polls that wait on a condition instead of sleeping."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox.changes import Changes
from .state import ClientError, StoredMessage

log = logging.getLogger("sandbox.line.control")

MAX_WAIT = 30.0
PROFILE_KEYS = ("displayName", "pictureUrl", "statusMessage", "language")
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


def guard(handler: Handler) -> Handler:
    """Loopback callers only, and every refusal as JSON ``{"error": ...}``."""

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


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ClientError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise ClientError("the body must be a JSON object")
    return body


def profile_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in PROFILE_KEYS if k in body}


def timeout_param(request: web.Request) -> float:
    try:
        return max(0.0, min(float(request.query.get("timeout", "0")), MAX_WAIT))
    except ValueError:
        raise ClientError('"timeout" must be a number of seconds') from None


async def long_poll(
    changes: Changes, request: web.Request, newer: Callable[[], list[StoredMessage]]
) -> list[StoredMessage]:
    """``newer()`` once it has a message and none of them still fetches media, or after
    ``?timeout=`` seconds (0: at once)."""
    timeout = timeout_param(request)

    def settled() -> bool:
        found = newer()
        return bool(found) and not any(m.media_pending for m in found)

    if timeout > 0:
        await changes.wait_for(settled, timeout)
    return newer()
