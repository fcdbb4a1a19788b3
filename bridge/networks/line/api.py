"""The Messaging API calls the connector makes, on line-bot-sdk's async client.

Two clients, because LINE serves content from a host of its own (``api-data.line.me``) and both
hosts must be configurable (the emulator stands in for both). Every failure comes out as one
:class:`LineError` carrying the HTTP status and LINE's own message, so the connector decides
between retrying, waiting and telling the employee on facts, not on exception classes. The
access token stays inside the SDK's client; nothing here logs a request or a response body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from linebot.v3.messaging import (
    ApiException,
    AsyncApiClient,
    AsyncMessagingApi,
    AsyncMessagingApiBlob,
    Configuration,
    MarkMessagesAsReadByTokenRequest,
    PushMessageRequest,
    ReplyMessageRequest,
    SetWebhookEndpointRequest,
    ShowLoadingAnimationRequest,
    TestWebhookEndpointRequest,
)

from bridge.networks.line.config import LineConfig

log = logging.getLogger("houseline.line.api")

#: LINE answers API calls well within this; content downloads (up to a few hundred MB) get more.
TIMEOUT_S = 30
CONTENT_TIMEOUT_S = 300

T = TypeVar("T")


@dataclass
class LineError(Exception):
    """An error answer of the Messaging API, or a failure to reach it (``status`` 0) or to read
    its answer (``status`` -1)."""

    status: int
    message: str
    details: tuple[str, ...] = ()
    #: The error body as LINE sent it (a 409 to a retried push lists the messages it became).
    body: dict[str, Any] = field(default_factory=dict, repr=False)
    retry_after: float | None = None

    def __str__(self) -> str:
        details = f" ({'; '.join(self.details)})" if self.details else ""
        return f"HTTP {self.status}: {self.message}{details}"


@dataclass(frozen=True)
class Sent:
    """A message a push or reply became: its id and the token that lets a later reply quote it."""

    id: str
    quote_token: str = ""


@dataclass(frozen=True)
class BotInfo:
    user_id: str
    basic_id: str
    display_name: str


@dataclass(frozen=True)
class LineProfile:
    """What a profile endpoint says of a person; LINE leaves out what the user did not set."""

    display_name: str
    language: str | None = None
    #: On LINE's CDN, readable without a token; a new picture gets a new URL.
    picture_url: str | None = None


class LineApi:
    def __init__(self, config: LineConfig) -> None:
        self._api_client = AsyncApiClient(
            Configuration(host=config.api_url, access_token=config.channel_access_token)
        )
        self._data_client = AsyncApiClient(
            Configuration(host=config.data_url, access_token=config.channel_access_token)
        )
        self.api = AsyncMessagingApi(self._api_client)
        self.blob = AsyncMessagingApiBlob(self._data_client)

    async def close(self) -> None:
        await self._api_client.close()
        await self._data_client.close()

    # the account

    async def bot_info(self) -> BotInfo:
        info = await _call(lambda: self.api.get_bot_info(_request_timeout=TIMEOUT_S))
        return BotInfo(info.user_id, info.basic_id, info.display_name)

    async def set_webhook(self, url: str) -> None:
        request = SetWebhookEndpointRequest(endpoint=url)
        await _call(lambda: self.api.set_webhook_endpoint(request, _request_timeout=TIMEOUT_S))

    async def webhook(self) -> tuple[str, bool]:
        """The URL LINE delivers to, and whether webhooks are switched on at all."""
        info = await _call(lambda: self.api.get_webhook_endpoint(_request_timeout=TIMEOUT_S))
        return info.endpoint, info.active

    async def test_webhook(self, url: str) -> tuple[bool, str]:
        """LINE posts a test webhook to ``url``: whether it was answered 2xx, and why not."""
        request = TestWebhookEndpointRequest(endpoint=url)
        answer = await _call(lambda: self.api.test_webhook_endpoint(request, _request_timeout=TIMEOUT_S))
        return bool(answer.success), f"{answer.status_code} {answer.reason}: {answer.detail}"[:200]

    # people and chats

    async def profile(self, user_id: str) -> LineProfile:
        """A friend's profile (404 for someone who is not a friend)."""
        profile = await _call(lambda: self.api.get_profile(user_id, _request_timeout=TIMEOUT_S))
        return LineProfile(profile.display_name, profile.language, profile.picture_url)

    async def member_profile(self, kind: str, chat_id: str, user_id: str) -> LineProfile:
        """A group or multi-person chat member's profile (they need not be a friend); it has no
        language."""
        get = self.api.get_group_member_profile if kind == "group" else self.api.get_room_member_profile
        profile = await _call(lambda: get(chat_id, user_id, _request_timeout=TIMEOUT_S))
        return LineProfile(profile.display_name, picture_url=profile.picture_url)

    async def group_name(self, group_id: str) -> str:
        return (
            await _call(lambda: self.api.get_group_summary(group_id, _request_timeout=TIMEOUT_S))
        ).group_name

    async def member_count(self, kind: str, chat_id: str) -> int:
        """Members besides the account: a push to a group counts once per member."""
        get = self.api.get_group_member_count if kind == "group" else self.api.get_room_member_count
        return int((await _call(lambda: get(chat_id, _request_timeout=TIMEOUT_S))).count)

    # quota

    async def quota(self) -> int | None:
        """This month's message limit; None when the plan sets none."""
        quota = await _call(lambda: self.api.get_message_quota(_request_timeout=TIMEOUT_S))
        kind = getattr(quota.type, "value", quota.type)
        return int(quota.value) if kind == "limited" and quota.value is not None else None

    async def consumption(self) -> int:
        return int(
            (
                await _call(lambda: self.api.get_message_quota_consumption(_request_timeout=TIMEOUT_S))
            ).total_usage
        )

    # sending

    async def reply(self, token: str, messages: list[Any]) -> list[Sent]:
        request = ReplyMessageRequest(reply_token=token, messages=messages)
        answer = await _call(lambda: self.api.reply_message(request, _request_timeout=TIMEOUT_S))
        return [Sent(m.id, m.quote_token or "") for m in answer.sent_messages]

    async def push(self, to: str, messages: list[Any], retry_key: str) -> list[Sent]:
        """With ``retry_key``: the same request again is not executed twice; LINE answers 409
        and lists what the first became (``sent_from``)."""
        request = PushMessageRequest(to=to, messages=messages)
        answer = await _call(
            lambda: self.api.push_message(request, x_line_retry_key=retry_key, _request_timeout=TIMEOUT_S)
        )
        return [Sent(m.id, m.quote_token or "") for m in answer.sent_messages]

    async def loading(self, user_id: str, seconds: int) -> None:
        request = ShowLoadingAnimationRequest(chat_id=user_id, loading_seconds=seconds)
        await _call(lambda: self.api.show_loading_animation(request, _request_timeout=TIMEOUT_S))

    async def mark_read(self, token: str) -> None:
        request = MarkMessagesAsReadByTokenRequest(mark_as_read_token=token)
        await _call(lambda: self.api.mark_messages_as_read_by_token(request, _request_timeout=TIMEOUT_S))

    # content

    async def preparation(self, message_id: str) -> str:
        """A video's or audio's state on LINE's side: processing, succeeded or failed."""
        answer = await _call(
            lambda: self.blob.get_message_content_transcoding_by_message_id(
                message_id, _request_timeout=TIMEOUT_S
            )
        )
        return str(getattr(answer.status, "value", answer.status))

    async def content(self, message_id: str) -> bytes:
        data = await _call(
            lambda: self.blob.get_message_content(message_id, _request_timeout=CONTENT_TIMEOUT_S)
        )
        if data is None:  # 202: LINE has not finished preparing it
            raise LineError(202, "LINE is still preparing the file")
        return bytes(data)


def sent_from(error: LineError) -> list[Sent] | None:
    """The messages an earlier push with the same retry key became (a 409's ``sentMessages``),
    or None if the answer does not list them."""
    listed = error.body.get("sentMessages")
    if error.status != 409 or not isinstance(listed, list):
        return None
    sent = [
        Sent(str(m["id"]), str(m.get("quoteToken") or ""))
        for m in listed
        if isinstance(m, dict) and isinstance(m.get("id"), (str, int))
    ]
    return sent or None


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    """Makes and awaits one SDK call, turning whatever it raises into a LineError (the SDK
    checks arguments when the call is made, before anything is awaited)."""
    try:
        return await make()
    except ApiException as e:
        raise _api_error(e) from None
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise LineError(0, f"could not reach LINE ({type(e).__name__})") from None
    except ValueError as e:  # the SDK's models refused LINE's answer (pydantic)
        raise LineError(-1, f"LINE's answer could not be read ({type(e).__name__})") from None


def _api_error(e: ApiException) -> LineError:
    status = int(e.status or 0)
    body: dict[str, Any] = {}
    raw = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else e.body
    try:
        parsed = json.loads(raw) if raw else {}
        body = parsed if isinstance(parsed, dict) else {}
    except ValueError:
        pass
    message = body.get("message") if isinstance(body.get("message"), str) else (e.reason or f"HTTP {status}")
    details = tuple(
        f"{d.get('property')}: {d.get('message')}" if d.get("property") else str(d.get("message"))
        for d in body.get("details") or []
        if isinstance(d, dict) and d.get("message")
    )
    return LineError(status, str(message)[:300], details[:5], body, _retry_after(e))


def _retry_after(e: ApiException) -> float | None:
    headers = e.headers or {}
    try:
        value = headers.get("Retry-After")
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None
