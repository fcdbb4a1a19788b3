"""Plumbing shared by the control API's parts (client phones, business accounts, groups, test
knobs): loopback-only access, JSON errors, bounded waits, file downloads.

The control API has no authentication because it stands for people's own devices; it answers
loopback callers only, whatever address the server is bound to.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .errors import ApiError
from .params import loads_utf8, read_limited
from .state import ClientError, Conversation, SandboxState

log = logging.getLogger("sandbox.telegram.control")

ControlHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_CONTROL_BODY = 1024 * 1024
MAX_CLIENT_WAIT = 30.0
_FILE_FIELDS = ("document", "video", "animation", "audio", "voice", "video_note", "sticker")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda value: json.dumps(value, ensure_ascii=False))


def error_response(message: str, status: int = 400) -> web.Response:
    return json_response({"error": message}, status=status)


def is_loopback(remote: str | None) -> bool:
    if remote is None:
        return True  # unix sockets and in-process test clients
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def path_int(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise ClientError(f"{name} in the path must be an integer") from None


def user_id_of(request: web.Request, name: str = "user_id") -> int:
    user_id = path_int(request, name)
    if user_id <= 0:
        raise ClientError("telegram user ids in the path must be positive integers")
    return user_id


def sent_answer(message: dict[str, Any]) -> dict[str, Any]:
    """``{"message_id", "chat_id"}`` plus the file_ids the message carries, for tests."""
    answer: dict[str, Any] = {
        "message_id": message["message_id"],
        "chat_id": message["chat"]["id"],
    }
    if "photo" in message:
        answer["file_id"] = message["photo"][-1]["file_id"]
        answer["file_ids"] = [size["file_id"] for size in message["photo"]]
    else:
        for kind in _FILE_FIELDS:
            if kind in message:
                answer["file_id"] = message[kind]["file_id"]
                break
    return answer


def chat_action(chat: Conversation | None) -> dict[str, Any] | None:
    if chat is None or chat.action is None or chat.action.expires_at <= time.monotonic():
        return None
    return {"action": chat.action.action, "date": chat.action.date}


class ControlBase:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def _guard(self, handler: ControlHandler) -> ControlHandler:
        """Loopback only, and every refusal as a JSON ``{"error": ...}``."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            if not is_loopback(request.remote):
                return error_response("the control API answers loopback callers only", 403)
            try:
                return await handler(request)
            except ClientError as exc:
                return error_response(str(exc), exc.status)
            except ApiError as exc:  # body size limits from read_limited
                return error_response(exc.description, exc.error_code)
            except Exception:  # a sandbox bug must answer in JSON, not crash
                log.exception("event=control_api_crash path=%s", request.path)
                return error_response("internal sandbox error", 500)

        return guarded

    @staticmethod
    async def _body(request: web.Request, limit: int = MAX_CONTROL_BODY) -> dict[str, Any]:
        raw = await read_limited(request, limit)
        if not raw.strip():
            return {}
        try:
            body = loads_utf8(raw)
        except ValueError:
            raise ClientError("body must be valid JSON in UTF-8") from None
        if not isinstance(body, dict):
            raise ClientError("body must be a JSON object")
        return body

    @staticmethod
    def _after_timeout(request: web.Request) -> tuple[int, float]:
        """``?after=<message_id>&timeout=<seconds>`` of the GET endpoints."""
        try:
            after = int(request.query.get("after", "0"))
            timeout = min(float(request.query.get("timeout", "0")), MAX_CLIENT_WAIT)
        except ValueError:
            raise ClientError('"after" must be an integer and "timeout" a number') from None
        return after, timeout

    async def _wait(self, found: Callable[[], list[Any]], timeout: float) -> None:
        """Wait (bounded) until ``found()`` is non-empty, so callers wait on a condition."""
        if timeout > 0:
            await self.state.outbox.wait_for(lambda: bool(found()) or self.state.updates.closed, timeout)

    def _file_response(self, chat: Conversation | None, file_id: str) -> web.Response:
        """The bytes a chat member downloads (any size: apps are not bound by getFile's 20 MB
        limit); only for files that appeared in that chat."""
        stored = self.state.files_by_id.get(file_id)
        if stored is None or chat is None or file_id not in chat.file_ids:
            raise ClientError("no such file in this chat", status=404)
        return web.Response(body=stored.content, content_type=stored.mime_type or "application/octet-stream")
