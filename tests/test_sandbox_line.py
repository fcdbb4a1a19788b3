"""The LINE Messaging API sandbox, driven the way the bridge drives LINE: plain HTTP against
``/v2/bot/...`` with a Bearer token, and a tiny aiohttp receiver playing the bridge's webhook.

Every wait is on a condition (the receiver's log, or the control API's ``?timeout=`` long poll)
and bounded; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sandbox.line import LineSandbox, signature

TOKEN = "line-sandbox-test-token"
SECRET = "line-sandbox-channel-secret"
BOUND = 5.0

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(200)) * 3
WEBP = b"RIFF\x00\x10\x00\x00WEBPVP8 " + b"\x00" * 200
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 400


# --------------------------------------------------------------------------- the bridge's side


class Receiver:
    """Plays the bridge's webhook endpoint and a media host for the account's image URLs."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []  # {"raw", "headers", "json", "answered"}
        self.fail_next = 0
        self.delay_next = 0.0
        self.served: dict[str, tuple[bytes, str]] = {}
        self.fetches: list[str] = []
        self._changed = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._post)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.delay_next > 0:
            delay, self.delay_next = self.delay_next, 0.0
            self.posts.append(
                {"raw": raw, "headers": dict(request.headers), "json": None, "answered": "slow"}
            )
            self._changed.set()
            await asyncio.sleep(delay)
            return web.Response(status=200)
        if self.fail_next > 0:
            self.fail_next -= 1
            self.posts.append({"raw": raw, "headers": dict(request.headers), "json": None, "answered": 500})
            self._changed.set()
            return web.Response(status=500)
        try:
            parsed = json.loads(raw)
        except ValueError:  # what a bridge does with a body that is not JSON
            self.posts.append({"raw": raw, "headers": dict(request.headers), "json": None, "answered": 400})
            self._changed.set()
            return web.Response(status=400)
        self.posts.append({"raw": raw, "headers": dict(request.headers), "json": parsed, "answered": 200})
        self._changed.set()
        return web.Response(status=200)

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.fetches.append(name)
        found = self.served.get(name)
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[0], content_type=found[1])

    @property
    def accepted(self) -> list[dict[str, Any]]:
        return [p for p in self.posts if p["answered"] == 200]

    def events(self) -> list[dict[str, Any]]:
        return [e for p in self.accepted for e in p["json"]["events"]]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = BOUND) -> Any:
        async def loop() -> Any:
            while True:
                self._changed.clear()
                found = predicate()
                if found:
                    return found
                await self._changed.wait()

        return await asyncio.wait_for(loop(), timeout)

    async def event(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        return await self.wait_for(lambda: next((e for e in self.events() if match(e)), None))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40)) as session:
        yield session


def make_sandbox(**kwargs: Any) -> LineSandbox:
    options: dict[str, Any] = {"rate_limits": False, "webhook_retry_interval": 0.1}
    options.update(kwargs)
    return LineSandbox(TOKEN, SECRET, **options)


@pytest.fixture
async def bare() -> AsyncIterator[LineSandbox]:
    sb = make_sandbox()
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
async def sandbox(bare: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession) -> LineSandbox:
    """A sandbox whose webhook the "bridge" registered, as it does at start."""
    status, body, _ = await api(
        http, bare, "PUT", "/v2/bot/channel/webhook/endpoint", json={"endpoint": f"{receiver.url}/webhook"}
    )
    assert (status, body) == (200, {})
    return bare


# --------------------------------------------------------------------------- helpers


async def api(
    http: aiohttp.ClientSession,
    sb: LineSandbox,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, Any]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with http.request(method, f"{sb.url}{path}", headers=sent, **kwargs) as response:
        raw = await response.read()
        is_json = response.content_type == "application/json"
        return response.status, json.loads(raw) if is_json else raw, response.headers


async def push(
    http: aiohttp.ClientSession, sb: LineSandbox, to: str, *messages: dict[str, Any], key: str | None = None
) -> tuple[int, Any, Any]:
    headers = {"X-Line-Retry-Key": key} if key else None
    return await api(
        http, sb, "POST", "/v2/bot/message/push", json={"to": to, "messages": list(messages)}, headers=headers
    )


async def control(
    http: aiohttp.ClientSession, sb: LineSandbox, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, f"{sb.url}{path}", **kwargs) as response:
        return response.status, await response.json()


async def ok(http: aiohttp.ClientSession, sb: LineSandbox, method: str, path: str, **kwargs: Any) -> Any:
    status, body = await control(http, sb, method, path, **kwargs)
    assert status == 200, body
    return body


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def verify(post: dict[str, Any]) -> bool:
    """What the bridge must do: HMAC-SHA256 of the raw body with the channel secret, base64."""
    expected = base64.b64encode(hmac.new(SECRET.encode(), post["raw"], hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, post["headers"].get("x-line-signature", ""))


async def friend(http: aiohttp.ClientSession, sb: LineSandbox, alias: str = "alice") -> dict[str, Any]:
    return await ok(
        http, sb, "POST", f"/client/{alias}/follow", json={"displayName": alias.title(), "language": "en"}
    )


async def received(
    http: aiohttp.ClientSession, sb: LineSandbox, alias: str, count: int = 1, after: str = ""
) -> list[dict[str, Any]]:
    body = await ok(http, sb, "GET", f"/client/{alias}/messages?timeout={BOUND}&after={after}")
    assert len(body["messages"]) >= count, body
    return body["messages"]


# --------------------------------------------------------------------------- auth and headers


async def test_bearer_token_is_required_with_lines_401_bodies(
    bare: LineSandbox, http: aiohttp.ClientSession
) -> None:
    status, body, headers = await api(http, bare, "GET", "/v2/bot/info", token=None)
    assert status == 401
    assert body == {
        "message": "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'"
    }
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["X-Line-Request-Id"])
    status, body, _ = await api(http, bare, "GET", "/v2/bot/info", token="wrong")
    assert (status, body) == (
        401,
        {
            "message": "Authentication failed. Confirm that the access token in the authorization header is valid."
        },
    )
    status, body, _ = await api(http, bare, "GET", "/v2/bot/info")
    assert status == 200
    assert body["userId"] == bare.bot_user_id and re.fullmatch(r"U[0-9a-f]{32}", body["userId"])
    assert re.fullmatch(r"@\d{3}[a-z]{5}", body["basicId"])
    assert (body["chatMode"], body["markAsReadMode"]) == ("bot", "auto")


# --------------------------------------------------------------------------- webhook settings


async def test_webhook_endpoint_set_get_and_test(
    bare: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    path = "/v2/bot/channel/webhook/endpoint"
    assert (await api(http, bare, "GET", path))[:2] == (404, {"message": "Webhook endpoint not found"})
    assert (await api(http, bare, "POST", "/v2/bot/channel/webhook/test", json={}))[:2] == (
        404,
        {"message": "Webhook endpoint not found"},
    )
    for bad in ("http://example.com/hook", "ftp://127.0.0.1/x", "https://" + "a" * 500 + ".com"):
        assert (await api(http, bare, "PUT", path, json={"endpoint": bad}))[:2] == (
            400,
            {"message": "Invalid webhook endpoint URL"},
        )
    url = f"{receiver.url}/webhook"
    assert (await api(http, bare, "PUT", path, json={"endpoint": url}))[:2] == (200, {})
    assert (await api(http, bare, "GET", path))[:2] == (200, {"endpoint": url, "active": True})

    status, body, _ = await api(http, bare, "POST", "/v2/bot/channel/webhook/test", json={})
    assert status == 200
    assert body["success"] is True and (body["statusCode"], body["reason"], body["detail"]) == (
        200,
        "OK",
        "200",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])
    post = await receiver.wait_for(lambda: receiver.accepted)
    assert post[0]["json"] == {"destination": bare.bot_user_id, "events": []} and verify(post[0])

    receiver.fail_next = 1
    status, body, _ = await api(http, bare, "POST", "/v2/bot/channel/webhook/test", json={"endpoint": url})
    assert (body["success"], body["statusCode"], body["reason"], body["detail"]) == (
        False,
        500,
        "ERROR_STATUS_CODE",
        "500",
    )


# --------------------------------------------------------------------------- webhooks


async def test_follow_and_message_events_have_lines_shape_and_a_valid_signature(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    followed = await friend(http, sandbox)
    sent = await ok(
        http,
        sandbox,
        "POST",
        "/client/alice/messages",
        json={
            "text": "Hi (love) @Houseline",
            "emojis": [{"index": 3, "length": 6, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}],
            "mention": [{"index": 10, "length": 10, "userId": sandbox.bot_user_id}],
        },
    )
    follow = await receiver.event(lambda e: e["type"] == "follow")
    message = await receiver.event(lambda e: e["type"] == "message")
    user_id = followed["userId"]
    assert re.fullmatch(r"U[0-9a-f]{32}", user_id)
    assert follow["follow"] == {"isUnblocked": False} and follow["replyToken"] == followed["replyToken"]
    for event in (follow, message):
        assert event["mode"] == "active" and isinstance(event["timestamp"], int)
        assert event["source"] == {"type": "user", "userId": user_id}
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", event["webhookEventId"])
        assert event["deliveryContext"] == {"isRedelivery": False}
        assert re.fullmatch(r"[0-9a-f]{32}", event["replyToken"])
    body = message["message"]
    assert body["id"] == sent["id"] and re.fullmatch(r"\d{18}", body["id"])
    assert body["type"] == "text" and body["quoteToken"] == sent["quoteToken"]
    assert body["emojis"] == [
        {"index": 3, "length": 6, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"}
    ]
    assert body["mention"] == {
        "mentionees": [
            {"index": 10, "length": 10, "type": "user", "userId": sandbox.bot_user_id, "isSelf": True}
        ]
    }
    assert all(p["json"]["destination"] == sandbox.bot_user_id for p in receiver.accepted)
    assert all(verify(p) for p in receiver.posts)
    tampered = dict(receiver.accepted[0], raw=receiver.accepted[0]["raw"] + b" ")
    assert not verify(tampered)


async def test_several_events_in_one_request_and_every_signature_verifies(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await friend(http, sandbox)
    sent = await ok(http, sandbox, "POST", "/client/alice/messages", json={"images": [b64(PNG), b64(JPEG)]})
    post = await receiver.wait_for(
        lambda: next((p for p in receiver.accepted if len(p["json"]["events"]) == 2), None)
    )
    first, second = post["json"]["events"]
    assert [first["message"]["imageSet"]["index"], second["message"]["imageSet"]["index"]] == [1, 2]
    assert first["message"]["imageSet"]["id"] == second["message"]["imageSet"]["id"]
    assert first["message"]["imageSet"]["total"] == 2 and first["message"]["contentProvider"] == {
        "type": "line"
    }
    assert [m["id"] for m in sent["messages"]] == [first["message"]["id"], second["message"]["id"]]
    await ok(
        http,
        sandbox,
        "POST",
        "/client/alice/messages",
        json={"sticker": {"packageId": "446", "stickerId": "1988", "keywords": ["hi"]}},
    )
    await ok(
        http,
        sandbox,
        "POST",
        "/client/alice/messages",
        json={"location": {"latitude": 35.67966, "longitude": 139.73669, "title": "Office"}},
    )
    await ok(http, sandbox, "POST", "/client/alice/messages", json={"video": b64(MP4), "duration": 60000})
    await ok(
        http,
        sandbox,
        "POST",
        "/client/alice/messages",
        json={"audio": b64(b"\x00\x00\x00\x18ftypM4A "), "duration": 1500},
    )
    await ok(http, sandbox, "POST", "/client/bob/messages", json={"text": "from a non-friend"})
    await receiver.wait_for(lambda: len(receiver.events()) >= 8)
    assert all(verify(p) for p in receiver.posts)
    sticker = next(e["message"] for e in receiver.events() if e.get("message", {}).get("type") == "sticker")
    assert (
        sticker["stickerResourceType"] == "STATIC"
        and sticker["keywords"] == ["hi"]
        and "quoteToken" in sticker
    )
    location = next(e["message"] for e in receiver.events() if e.get("message", {}).get("type") == "location")
    assert (location["title"], location["latitude"], location["longitude"]) == ("Office", 35.67966, 139.73669)
    assert "address" not in location and "quoteToken" not in location
    video = next(e["message"] for e in receiver.events() if e.get("message", {}).get("type") == "video")
    assert (video["duration"], video["contentProvider"]) == (
        60000,
        {"type": "line"},
    ) and "quoteToken" in video
    audio = next(e["message"] for e in receiver.events() if e.get("message", {}).get("type") == "audio")
    assert audio["duration"] == 1500 and "quoteToken" not in audio
    status, _, headers = await api(http, sandbox, "GET", f"/v2/bot/message/{audio['id']}/content")
    assert (status, headers["Content-Type"]) == (200, "audio/x-m4a")


async def test_failed_and_slow_webhooks_are_redelivered_with_the_same_event_id(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    sb = make_sandbox(webhook_timeout=0.3)
    await sb.start()
    try:
        await api(
            http, sb, "PUT", "/v2/bot/channel/webhook/endpoint", json={"endpoint": f"{receiver.url}/webhook"}
        )
        receiver.fail_next = 1
        await friend(http, sb)
        event = await receiver.event(lambda e: e["type"] == "follow")
        assert event["deliveryContext"] == {"isRedelivery": True}
        failed = json.loads(receiver.posts[0]["raw"])["events"][0]
        assert failed["deliveryContext"] == {"isRedelivery": False}
        assert (failed["webhookEventId"], failed["replyToken"], failed["timestamp"]) == (
            event["webhookEventId"],
            event["replyToken"],
            event["timestamp"],
        )
        assert all(verify(p) for p in receiver.posts)
        # no answer within the timeout counts as a failure too
        receiver.delay_next = 1.0
        sent = await ok(http, sb, "POST", "/client/alice/messages", json={"text": "slow"})
        again = await receiver.event(lambda e: e.get("message", {}).get("id") == sent["id"])
        assert again["deliveryContext"] == {"isRedelivery": True}
        log = sb.deliveries(include_payload=False)
        assert any(d["result"] == "timeout" for d in log) and any(d["status"] == 500 for d in log)
        # a redelivered reply token works within the minute after the redelivery
        status, _, _ = await api(
            http,
            sb,
            "POST",
            "/v2/bot/message/reply",
            json={"replyToken": event["replyToken"], "messages": [text("welcome")]},
        )
        assert status == 200
    finally:
        await sb.stop()


async def test_manual_redelivery_and_the_20_minute_cap_on_redelivered_reply_tokens(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await friend(http, sandbox)
    sent = await ok(http, sandbox, "POST", "/client/alice/messages", json={"text": "hello"})
    first = await receiver.event(lambda e: e["type"] == "message")
    sandbox.advance_clock(21 * 60)
    assert (
        await ok(
            http, sandbox, "POST", "/control/redeliver", json={"webhookEventIds": [first["webhookEventId"]]}
        )
    ) == {"redelivered": 1}
    again = await receiver.event(lambda e: e["type"] == "message" and e["deliveryContext"]["isRedelivery"])
    assert again["webhookEventId"] == first["webhookEventId"] and again["replyToken"] == sent["replyToken"]
    status, body, _ = await api(
        http,
        sandbox,
        "POST",
        "/v2/bot/message/reply",
        json={"replyToken": sent["replyToken"], "messages": [text("late")]},
    )
    assert (status, body) == (400, {"message": "Invalid reply token"})


async def test_events_without_an_endpoint_are_not_delivered(
    bare: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await friend(http, bare)
    await api(
        http, bare, "PUT", "/v2/bot/channel/webhook/endpoint", json={"endpoint": f"{receiver.url}/webhook"}
    )
    await ok(http, bare, "POST", "/client/alice/messages", json={"text": "after"})
    await receiver.event(lambda e: e["type"] == "message")
    assert [e["type"] for e in receiver.events()] == ["message"]
    assert bare.deliveries()[0]["result"] == "not sent: no webhook endpoint"


async def test_raw_events_for_hostile_payload_tests(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    answer = await ok(
        http,
        sandbox,
        "POST",
        "/control/events",
        json={"events": [{"type": "message", "message": {"type": "text", "id": "1", "text": "x" * 10}}]},
    )
    assert answer["status"] == 200
    assert verify(receiver.posts[-1]) and receiver.posts[-1]["json"]["destination"] == sandbox.bot_user_id
    answer = await ok(
        http, sandbox, "POST", "/control/events", json={"body": "not json", "signature": "forged"}
    )
    assert answer["status"] == 400
    assert (
        receiver.posts[-1]["raw"] == b"not json"
        and receiver.posts[-1]["headers"]["x-line-signature"] == "forged"
    )


# --------------------------------------------------------------------------- reply


async def test_a_reply_token_works_once_and_replies_are_free(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await friend(http, sandbox)
    sent = await ok(http, sandbox, "POST", "/client/alice/messages", json={"text": "Can I book?"})
    await receiver.event(lambda e: e["type"] == "message")
    reply = {
        "replyToken": sent["replyToken"],
        "messages": [
            {"type": "text", "text": "Yes.", "quoteToken": sent["quoteToken"]},
            {
                "type": "location",
                "title": "Desk",
                "address": "1-3 Kioicho",
                "latitude": 35.6,
                "longitude": 139.7,
            },
        ],
    }
    status, body, _ = await api(http, sandbox, "POST", "/v2/bot/message/reply", json=reply)
    assert status == 200
    quoted, location = body["sentMessages"]
    assert re.fullmatch(r"\d{18}", quoted["id"]) and quoted["quoteToken"] and "quoteToken" not in location
    status, body, _ = await api(http, sandbox, "POST", "/v2/bot/message/reply", json=reply)
    assert (status, body) == (400, {"message": "Invalid reply token"})
    assert (
        await api(http, sandbox, "POST", "/v2/bot/message/reply", json={**reply, "replyToken": "0" * 32})
    )[:2] == (400, {"message": "Invalid reply token"})
    shown = await received(http, sandbox, "alice", 2)
    assert shown[0]["via"] == "reply" and shown[0]["quotes"] == sent["id"] and shown[0]["id"] == quoted["id"]
    assert (await api(http, sandbox, "GET", "/v2/bot/message/quota/consumption"))[1] == {"totalUsage": 0}


async def test_a_reply_token_expires_a_minute_after_the_webhook(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    sb = make_sandbox(reply_token_validity=30.0)
    await sb.start()
    try:
        await api(
            http, sb, "PUT", "/v2/bot/channel/webhook/endpoint", json={"endpoint": f"{receiver.url}/webhook"}
        )
        await friend(http, sb)
        early = await ok(http, sb, "POST", "/client/alice/messages", json={"text": "one"})
        late = await ok(http, sb, "POST", "/client/alice/messages", json={"text": "two"})
        await receiver.wait_for(lambda: len(receiver.events()) == 3)
        sb.advance_clock(29)
        status, _, _ = await api(
            http,
            sb,
            "POST",
            "/v2/bot/message/reply",
            json={"replyToken": early["replyToken"], "messages": [text("in time")]},
        )
        assert status == 200
        sb.advance_clock(2)
        status, body, _ = await api(
            http,
            sb,
            "POST",
            "/v2/bot/message/reply",
            json={"replyToken": late["replyToken"], "messages": [text("late")]},
        )
        assert (status, body) == (400, {"message": "Invalid reply token"})
    finally:
        await sb.stop()


# --------------------------------------------------------------------------- push


async def test_push_retry_key_answers_409_with_the_first_sent_messages(
    sandbox: LineSandbox, http: aiohttp.ClientSession
) -> None:
    user = (await friend(http, sandbox))["userId"]
    key = str(uuid.uuid4())
    status, first, headers = await push(http, sandbox, user, text("Your appointment is at 10."), key=key)
    assert status == 200 and len(first["sentMessages"]) == 1
    status, body, again = await push(http, sandbox, user, text("Your appointment is at 10."), key=key)
    assert status == 409
    assert body == {"message": "The retry key is already accepted", "sentMessages": first["sentMessages"]}
    assert again["X-Line-Accepted-Request-Id"] == headers["X-Line-Request-Id"] != again["X-Line-Request-Id"]
    assert len(await received(http, sandbox, "alice")) == 1
    assert (await api(http, sandbox, "GET", "/v2/bot/message/quota/consumption"))[1] == {"totalUsage": 1}
    sandbox.advance_clock(24 * 3600 + 1)  # "The retry key management period ... is 24 hours"
    status, later, _ = await push(http, sandbox, user, text("Your appointment is at 10."), key=key)
    assert status == 200 and later["sentMessages"][0]["id"] != first["sentMessages"][0]["id"]
    assert (await push(http, sandbox, user, text("x"), key="not-a-uuid"))[0] == 400
    status, _, _ = await api(
        http,
        sandbox,
        "POST",
        "/v2/bot/message/reply",
        json={"replyToken": "x", "messages": [text("x")]},
        headers={"X-Line-Retry-Key": key},
    )
    assert status == 400  # retry keys are for push, multicast, narrowcast and broadcast only


async def test_a_push_whose_answer_was_lost_is_not_sent_twice(
    sandbox: LineSandbox, http: aiohttp.ClientSession
) -> None:
    user = (await friend(http, sandbox))["userId"]
    await ok(
        http,
        sandbox,
        "POST",
        "/control/faults",
        json={"count": 1, "endpoint": "POST /v2/bot/message/push", "after": True},
    )
    key = str(uuid.uuid4())
    status, body, _ = await push(http, sandbox, user, text("once"), key=key)
    assert (status, body) == (500, {"message": "Internal server error"})
    status, body, _ = await push(http, sandbox, user, text("once"), key=key)
    assert status == 409
    shown = await received(http, sandbox, "alice")
    assert [m["id"] for m in shown] == [m["id"] for m in body["sentMessages"]]


async def test_quota_exhaustion_answers_429(sandbox: LineSandbox, http: aiohttp.ClientSession) -> None:
    assert (await api(http, sandbox, "GET", "/v2/bot/message/quota"))[1] == {"type": "none"}
    user = (await friend(http, sandbox))["userId"]
    await ok(http, sandbox, "POST", "/control/quota", json={"limit": 3, "usage": 1})
    assert (await api(http, sandbox, "GET", "/v2/bot/message/quota"))[1] == {"type": "limited", "value": 3}
    assert (await push(http, sandbox, user, text("1"), text("five objects count once"), text("3")))[0] == 200
    assert (await push(http, sandbox, user, text("2")))[0] == 200
    status, body, _ = await push(http, sandbox, user, text("3"))
    assert (status, body) == (429, {"message": "You have reached your monthly limit."})
    assert (await api(http, sandbox, "GET", "/v2/bot/message/quota/consumption"))[1] == {"totalUsage": 3}
    sent = await ok(http, sandbox, "POST", "/client/alice/messages", json={"text": "help"})
    status, _, _ = await api(
        http,
        sandbox,
        "POST",
        "/v2/bot/message/reply",
        json={"replyToken": sent["replyToken"], "messages": [text("replies are free")]},
    )
    assert status == 200


async def test_pushes_to_non_friends_follow_lines_rules(
    sandbox: LineSandbox, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await push(http, sandbox, "U" + "0" * 32, text("who?"))
    assert (status, body) == (400, {"message": "Failed to send messages"})
    status, body, _ = await push(http, sandbox, "C" + "0" * 32, text("which group?"))
    assert (status, body) == (400, {"message": "Failed to send messages"})
    # a group member the account knows but who never added it: 200, not received, not counted
    group = await ok(http, sandbox, "POST", "/groups", json={"name": "Family", "members": ["carol"]})
    carol = group["members"][0]["userId"]
    status, body, _ = await push(http, sandbox, carol, text("hello carol"))
    assert status == 200 and body["sentMessages"]
    assert (await ok(http, sandbox, "GET", "/client/carol/messages"))["messages"] == []
    # a non-friend who wrote in the last 7 days gets pushes
    await ok(http, sandbox, "POST", "/client/bob/messages", json={"text": "question"})
    bob = (await ok(http, sandbox, "GET", "/client/bob"))["userId"]
    assert (await push(http, sandbox, bob, text("answer")))[0] == 200
    assert len(await received(http, sandbox, "bob")) == 1
    sandbox.advance_clock(7 * 24 * 3600 + 1)
    assert (await push(http, sandbox, bob, text("too late")))[0] == 200
    assert len((await ok(http, sandbox, "GET", "/client/bob/messages"))["messages"]) == 1
    # a friend who blocked the account
    alice = (await friend(http, sandbox))["userId"]
    await ok(http, sandbox, "POST", "/client/alice/unfollow")
    assert (await push(http, sandbox, alice, text("blocked")))[0] == 200
    assert (await ok(http, sandbox, "GET", "/client/alice/messages"))["messages"] == []
    assert (await api(http, sandbox, "GET", "/v2/bot/message/quota/consumption"))[1] == {"totalUsage": 1}
    outbox = await ok(http, sandbox, "GET", "/control/outbox")
    assert [m["delivered"] for m in outbox["messages"]] == [False, True, False, False]


# --------------------------------------------------------------------------- validation


async def test_validation_errors_name_the_property(sandbox: LineSandbox, http: aiohttp.ClientSession) -> None:
    user = (await friend(http, sandbox))["userId"]

    async def errors(*messages: Any, to: Any = user) -> tuple[int, Any]:
        status, body, _ = await api(
            http, sandbox, "POST", "/v2/bot/message/push", json={"to": to, "messages": list(messages)}
        )
        return status, body

    assert await errors(text("x" * 5001)) == (
        400,
        {
            "message": "The request body has 1 error(s)",
            "details": [{"message": "Length must be between 0 and 5000", "property": "messages[0].text"}],
        },
    )
    assert (await errors(text("🍎" * 2500)))[0] == 200  # 5000 UTF-16 code units
    assert (await errors(text("🍎" * 2500 + "!")))[1]["details"][0]["property"] == "messages[0].text"
    status, body = await errors(*[text(str(i)) for i in range(6)])
    assert body["details"] == [{"message": "Size must be between 1 and 5", "property": "messages"}]
    status, body = await errors(
        text(""), {"type": "carousel"}, {"type": "image", "originalContentUrl": "http://example.com/a.jpg"}
    )
    assert body["message"] == "The request body has 4 error(s)"
    assert [d["property"] for d in body["details"]] == [
        "messages[0].text",
        "messages[1].type",
        "messages[2].originalContentUrl",
        "messages[2].previewImageUrl",
    ]
    assert body["details"][0]["message"] == "May not be empty"
    assert (
        body["details"][1]["message"]
        == "Must be one of the following values: [text, image, video, audio, location, sticker, template, imagemap]"
    )
    assert body["details"][3]["message"] == "must be specified"
    status, body = await errors(
        {"type": "audio", "originalContentUrl": "https://example.com/a.m4a", "duration": "60000"}
    )
    assert status == 400 and re.fullmatch(
        r"The property, 'messages\[0\]\.duration', in the request body is invalid \(line: \d+, column: \d+\)",
        body["message"],
    )
    assert (
        await errors({"type": "location", "title": "t" * 101, "address": "a", "latitude": 1, "longitude": 2})
    )[1]["details"] == [{"message": "Length must be between 0 and 100", "property": "messages[0].title"}]
    assert (await errors(text("x"), to="nobody"))[1]["message"].startswith(
        "The property, 'to', in the request body is invalid"
    )
    assert (await errors(text("x"), to=""))[1]["details"] == [
        {"message": "May not be empty", "property": "to"}
    ]
    assert (
        await errors(
            {
                "type": "image",
                "originalContentUrl": "https://a/x.jpg",
                "previewImageUrl": "https://a/y.jpg",
                "quoteToken": "q",
            }
        )
    )[1]["details"][0]["property"] == "messages[0].quoteToken"
    assert (
        await errors(
            {"type": "text", "text": "$ hi", "emojis": [{"index": 1, "productId": "p", "emojiId": "001"}]}
        )
    )[1]["details"][0]["property"] == "messages[0].emojis[0].index"
    status, body, _ = await api(
        http,
        sandbox,
        "POST",
        "/v2/bot/message/push",
        data=b'{"to": "x",',
        headers={"Content-Type": "application/json"},
    )
    assert (status, body) == (
        400,
        {"message": "The request body could not be parsed as JSON (line: 1, column: 12)"},
    )
    status, body, _ = await api(
        http, sandbox, "POST", "/v2/bot/message/validate/push", json={"messages": [text("x" * 5001)]}
    )
    assert status == 400 and body["details"][0]["property"] == "messages[0].text"
    assert (
        await api(http, sandbox, "POST", "/v2/bot/message/validate/push", json={"messages": [text("ok")]})
    )[:2] == (200, {})
    assert (await ok(http, sandbox, "GET", "/client/alice/messages"))["messages"][0]["message"][
        "text"
    ] == "🍎" * 2500


# --------------------------------------------------------------------------- profiles and groups


async def test_profiles_are_404_for_users_who_did_not_add_the_account(
    sandbox: LineSandbox, http: aiohttp.ClientSession
) -> None:
    alice = (
        await ok(
            http,
            sandbox,
            "POST",
            "/client/alice/follow",
            json={
                "displayName": "Alice A.",
                "statusMessage": "Hi",
                "language": "en",
                "pictureUrl": "https://profile.line-scdn.net/a",
            },
        )
    )["userId"]
    status, body, _ = await api(http, sandbox, "GET", f"/v2/bot/profile/{alice}")
    assert (status, body) == (
        200,
        {
            "displayName": "Alice A.",
            "userId": alice,
            "language": "en",
            "pictureUrl": "https://profile.line-scdn.net/a",
            "statusMessage": "Hi",
        },
    )
    group = await ok(
        http, sandbox, "POST", "/groups", json={"members": [{"user": "dave", "displayName": "Dave"}]}
    )
    dave = group["members"][0]["userId"]
    assert (await api(http, sandbox, "GET", f"/v2/bot/profile/{dave}"))[:2] == (404, {"message": "Not found"})
    assert (await api(http, sandbox, "GET", f"/v2/bot/profile/U{'1' * 32}"))[:2] == (
        404,
        {"message": "Not found"},
    )
    assert (await api(http, sandbox, "GET", "/v2/bot/profile/alice"))[0] == 400
    await ok(http, sandbox, "POST", "/client/alice/unfollow")
    assert (await api(http, sandbox, "GET", f"/v2/bot/profile/{alice}"))[:2] == (
        404,
        {"message": "Not found"},
    )
    assert (await ok(http, sandbox, "POST", "/client/alice/follow"))["isUnblocked"] is True
    assert (await api(http, sandbox, "GET", f"/v2/bot/profile/{alice}"))[0] == 200


async def test_profile_pictures_are_served_from_the_sandboxs_cdn(
    sandbox: LineSandbox, http: aiohttp.ClientSession
) -> None:
    alice = (await friend(http, sandbox))["userId"]
    jpeg = b"\xff\xd8\xff\xe0" + b"picture" * 10
    put = await ok(http, sandbox, "PUT", "/client/alice/picture", json={"image": b64(jpeg)})
    url = put["pictureUrl"]
    assert url.startswith(f"{sandbox.url}/profile-pictures/0h")
    assert (put["contentType"], put["size"]) == ("image/jpeg", len(jpeg))
    profile = (await api(http, sandbox, "GET", f"/v2/bot/profile/{alice}"))[1]
    assert profile["pictureUrl"] == url
    group = await ok(http, sandbox, "POST", "/groups", json={"members": ["alice"]})
    member = (await api(http, sandbox, "GET", f"/v2/bot/group/{group['groupId']}/member/{alice}"))[1]
    assert member["pictureUrl"] == url
    # Like LINE's CDN: no token needed, the picture's own content type.
    status, body, headers = await api(http, sandbox, "GET", url.removeprefix(sandbox.url), token=None)
    assert (status, body, headers["Content-Type"]) == (200, jpeg, "image/jpeg")

    # A generated picture is a PNG at a new address; the old address still serves the old one.
    second = await ok(http, sandbox, "PUT", "/client/alice/picture", json={})
    assert second["pictureUrl"] != url and second["contentType"] == "image/png"
    status, png, _ = await api(
        http, sandbox, "GET", second["pictureUrl"].removeprefix(sandbox.url), token=None
    )
    assert (
        status == 200 and png.startswith(b"\x89PNG") and hashlib.sha256(png).hexdigest() == second["sha256"]
    )
    assert (await api(http, sandbox, "GET", url.removeprefix(sandbox.url), token=None))[1] == jpeg

    # A broken picture: the same address answers an error until it is mended.
    broken = await ok(http, sandbox, "PATCH", "/client/alice/picture", json={"status": 500})
    assert broken["pictureUrl"] == second["pictureUrl"]
    path = second["pictureUrl"].removeprefix(sandbox.url)
    assert (await api(http, sandbox, "GET", path, token=None))[0] == 500
    await ok(http, sandbox, "PATCH", "/client/alice/picture", json={"status": 200})
    assert (await api(http, sandbox, "GET", path, token=None))[1] == png
    assert (await ok(http, sandbox, "GET", "/client/alice/picture"))["fetches"] == 3

    assert (await control(http, sandbox, "PATCH", "/client/alice/picture", json={"status": 302}))[0] == 400

    await ok(http, sandbox, "DELETE", "/client/alice/picture")
    assert "pictureUrl" not in (await api(http, sandbox, "GET", f"/v2/bot/profile/{alice}"))[1]
    assert (await control(http, sandbox, "GET", "/client/alice/picture"))[0] == 404
    assert (await control(http, sandbox, "PATCH", "/client/alice/picture", json={"status": 500}))[0] == 404
    assert (await api(http, sandbox, "GET", "/profile-pictures/0hunknown", token=None))[0] == 404


async def test_group_events_and_endpoints(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    group = await ok(
        http,
        sandbox,
        "POST",
        "/groups",
        json={"name": "Family office", "members": [{"user": "erin", "displayName": "Erin"}, "frank"]},
    )
    group_id = group["groupId"]
    assert re.fullmatch(r"C[0-9a-f]{32}", group_id)
    erin, frank = (m["userId"] for m in group["members"])
    join = await receiver.event(lambda e: e["type"] == "join")
    assert join["source"] == {"type": "group", "groupId": group_id} and "replyToken" in join

    sent = await ok(
        http,
        sandbox,
        "POST",
        f"/groups/{group_id}/messages",
        json={"from": "erin", "text": "@All hello", "mention": [{"index": 0, "length": 4, "type": "all"}]},
    )
    message = await receiver.event(lambda e: e["type"] == "message")
    assert message["source"] == {"type": "group", "groupId": group_id, "userId": erin}
    assert message["message"]["mention"] == {"mentionees": [{"index": 0, "length": 4, "type": "all"}]}
    status, _, _ = await api(
        http,
        sandbox,
        "POST",
        "/v2/bot/message/reply",
        json={"replyToken": sent["replyToken"], "messages": [text("Hello all")]},
    )
    assert status == 200

    joined = await ok(
        http, sandbox, "POST", f"/groups/{group_id}/members", json={"user": "gina", "displayName": "Gina"}
    )
    member_joined = await receiver.event(lambda e: e["type"] == "memberJoined")
    gina = joined["members"][-1]["userId"]
    assert (
        member_joined["joined"] == {"members": [{"type": "user", "userId": gina}]}
        and member_joined["replyToken"] == joined["replyToken"]
    )
    await ok(http, sandbox, "DELETE", f"/groups/{group_id}/members/frank")
    member_left = await receiver.event(lambda e: e["type"] == "memberLeft")
    assert (
        member_left["left"] == {"members": [{"type": "user", "userId": frank}]}
        and "replyToken" not in member_left
    )
    await ok(http, sandbox, "POST", f"/groups/{group_id}/unsend/{sent['id']}", json={"from": "erin"})
    unsend = await receiver.event(lambda e: e["type"] == "unsend")
    assert (
        unsend["unsend"] == {"messageId": sent["id"]}
        and unsend["source"]["userId"] == erin
        and "replyToken" not in unsend
    )

    assert (await api(http, sandbox, "GET", f"/v2/bot/group/{group_id}/summary"))[1] == {
        "groupId": group_id,
        "groupName": "Family office",
    }
    assert (await api(http, sandbox, "GET", f"/v2/bot/group/{group_id}/members/count"))[1] == {"count": 2}
    assert (await api(http, sandbox, "GET", f"/v2/bot/group/{group_id}/members/ids"))[1] == {
        "memberIds": [erin, gina]
    }
    assert (await api(http, sandbox, "GET", f"/v2/bot/group/{group_id}/member/{erin}"))[1] == {
        "displayName": "Erin",
        "userId": erin,
    }
    assert (await api(http, sandbox, "GET", f"/v2/bot/group/{group_id}/member/{frank}"))[:2] == (
        404,
        {"message": "Not found"},
    )
    assert (await api(http, sandbox, "GET", "/v2/bot/group/nope/summary"))[:2] == (
        400,
        {"message": "The value for the 'groupId' parameter is invalid"},
    )

    assert (await push(http, sandbox, group_id, text("to everyone")))[0] == 200
    assert (await api(http, sandbox, "GET", "/v2/bot/message/quota/consumption"))[1] == {
        "totalUsage": 2
    }  # per member
    shown = await ok(http, sandbox, "GET", f"/groups/{group_id}/messages")
    assert [m["from"] for m in shown["messages"]] == [erin, "account", "account"]

    assert (await api(http, sandbox, "POST", f"/v2/bot/group/{group_id}/leave"))[:2] == (200, {})
    await receiver.event(lambda e: e["type"] == "leave")
    assert (await push(http, sandbox, group_id, text("gone")))[:2] == (
        400,
        {"message": "Failed to send messages"},
    )
    assert (await api(http, sandbox, "GET", f"/v2/bot/group/{group_id}/summary"))[0] == 404


async def test_a_rooms_join_event_comes_with_its_first_event(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    room = await ok(http, sandbox, "POST", "/groups", json={"room": True, "members": ["hana", "ivan"]})
    room_id = room["roomId"]
    assert re.fullmatch(r"R[0-9a-f]{32}", room_id)
    await ok(http, sandbox, "POST", f"/groups/{room_id}/messages", json={"from": "hana", "text": "hi"})
    post = await receiver.wait_for(lambda: next((p for p in receiver.accepted if p["json"]["events"]), None))
    assert [e["type"] for e in post["json"]["events"]] == ["join", "message"]
    assert post["json"]["events"][1]["source"]["roomId"] == room_id
    hana = room["members"][0]["userId"]
    assert (await api(http, sandbox, "GET", f"/v2/bot/room/{room_id}/member/{hana}"))[1] == {
        "displayName": "hana",
        "userId": hana,
    }


# --------------------------------------------------------------------------- loading animation


async def test_loading_animation_bounds_and_display(
    sandbox: LineSandbox, http: aiohttp.ClientSession
) -> None:
    user = (await friend(http, sandbox))["userId"]
    path = "/v2/bot/chat/loading/start"
    for seconds in (5, 60):
        assert (await api(http, sandbox, "POST", path, json={"chatId": user, "loadingSeconds": seconds}))[
            :2
        ] == (202, {})
    assert (await ok(http, sandbox, "GET", "/client/alice"))["loading"]["loadingSeconds"] == 60
    assert (await api(http, sandbox, "POST", path, json={"chatId": user}))[0] == 202  # default 20 s
    status, body, _ = await api(http, sandbox, "POST", path, json={"chatId": user, "loadingSeconds": 3})
    assert (status, body) == (
        400,
        {
            "message": "The request body has 2 error(s)",
            "details": [
                {"message": "Must be between 5 and 60", "property": "loadingSeconds"},
                {"message": "must be a multiple of five", "property": "loadingSeconds"},
            ],
        },
    )
    assert (await api(http, sandbox, "POST", path, json={"chatId": user, "loadingSeconds": 7}))[1][
        "details"
    ] == [{"message": "must be a multiple of five", "property": "loadingSeconds"}]
    assert (await api(http, sandbox, "POST", path, json={"chatId": user, "loadingSeconds": 65}))[1][
        "details"
    ] == [{"message": "Must be between 5 and 60", "property": "loadingSeconds"}]
    group = await ok(http, sandbox, "POST", "/groups", json={"members": ["alice"]})
    assert (await api(http, sandbox, "POST", path, json={"chatId": group["groupId"]}))[1]["details"] == [
        {
            "message": "Only user id is acceptable, please confirm if there are any group/room ids or illegal ids.",
            "property": "chatId",
        }
    ]
    assert (await push(http, sandbox, user, text("done")))[0] == 200
    assert (await ok(http, sandbox, "GET", "/client/alice"))["loading"] is None  # a new message ends it
    await ok(http, sandbox, "POST", "/client/alice/chat-screen", json={"open": False})
    assert (await api(http, sandbox, "POST", path, json={"chatId": user, "loadingSeconds": 10}))[0] == 202
    assert (await ok(http, sandbox, "GET", "/client/alice"))["loading"] is None
    log = (await ok(http, sandbox, "GET", "/control/outbox"))["loading"]
    assert [(e["loadingSeconds"], e["shown"]) for e in log] == [
        (5, True),
        (60, True),
        (20, True),
        (10, False),
    ]


# --------------------------------------------------------------------------- content and media


async def test_content_download_unsend_and_expiry(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await friend(http, sandbox)
    image = await ok(http, sandbox, "POST", "/client/alice/messages", json={"image": b64(PNG)})
    document = await ok(
        http,
        sandbox,
        "POST",
        "/client/alice/messages",
        json={"file": b64(b"%PDF-1.4 test"), "fileName": "offer.pdf"},
    )
    event = await receiver.event(lambda e: e.get("message", {}).get("type") == "file")
    assert event["message"] == {"id": document["id"], "type": "file", "fileName": "offer.pdf", "fileSize": 13}
    status, data, headers = await api(http, sandbox, "GET", f"/v2/bot/message/{image['id']}/content")
    assert (status, data, headers["Content-Type"]) == (200, PNG, "image/png")
    status, data, headers = await api(http, sandbox, "GET", f"/v2/bot/message/{document['id']}/content")
    assert (status, data, headers["Content-Type"]) == (200, b"%PDF-1.4 test", "application/pdf")
    assert (await api(http, sandbox, "GET", f"/v2/bot/message/{image['id']}/content", token="bad"))[0] == 401
    await ok(http, sandbox, "POST", f"/client/alice/unsend/{image['id']}")
    assert (await api(http, sandbox, "GET", f"/v2/bot/message/{image['id']}/content"))[:2] == (
        410,
        {"message": "The content is gone"},
    )
    await ok(http, sandbox, "DELETE", f"/control/content/{document['id']}")
    assert (await api(http, sandbox, "GET", f"/v2/bot/message/{document['id']}/content"))[:2] == (
        404,
        {"message": "not found"},
    )
    assert (await api(http, sandbox, "GET", "/v2/bot/message/123/content"))[:2] == (
        404,
        {"message": "not found"},
    )


async def test_media_urls_are_fetched_and_the_outcome_recorded(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    user = (await friend(http, sandbox))["userId"]
    receiver.served = {
        "photo.png": (PNG, "image/png"),
        "thumb.jpg": (JPEG, "image/jpeg"),
        "clip.webp": (WEBP, "image/webp"),
        "video.mp4": (MP4, "video/mp4"),
    }
    files = f"{receiver.url}/files"
    good = {
        "type": "image",
        "originalContentUrl": f"{files}/photo.png",
        "previewImageUrl": f"{files}/thumb.jpg",
    }
    missing = {
        "type": "image",
        "originalContentUrl": f"{files}/gone.png",
        "previewImageUrl": f"{files}/thumb.jpg",
    }
    webp = {
        "type": "image",
        "originalContentUrl": f"{files}/clip.webp",
        "previewImageUrl": f"{files}/thumb.jpg",
    }
    video = {
        "type": "video",
        "originalContentUrl": f"{files}/video.mp4",
        "previewImageUrl": f"{files}/thumb.jpg",
    }
    status, body, _ = await push(http, sandbox, user, good, missing, webp, video)
    assert status == 200 and all(
        "quoteToken" in m for m in body["sentMessages"]
    )  # images and videos can be quoted
    shown = await received(http, sandbox, "alice", 4)
    assert [m["display"] for m in shown] == ["shown", "broken", "broken", "shown"]
    original = shown[0]["media"]["original"]
    assert (original["state"], original["status"], original["size"], original["sha256"]) == (
        "fetched",
        200,
        len(PNG),
        hashlib.sha256(PNG).hexdigest(),
    )
    assert shown[0]["media"]["preview"]["sha256"] == hashlib.sha256(JPEG).hexdigest()
    assert (shown[1]["media"]["original"]["state"], shown[1]["media"]["original"]["problem"]) == (
        "failed",
        "HTTP 404",
    )
    assert shown[2]["media"]["original"]["problem"] == "not JPEG or PNG (Content-Type image/webp)"
    status, data, _ = await api(
        http, sandbox, "GET", f"/client/alice/media/{shown[0]['id']}/original", token=None
    )
    assert (status, data) == (200, PNG)


# --------------------------------------------------------------------------- rate limits


async def test_rate_limits_answer_429_and_can_be_switched_off(http: aiohttp.ClientSession) -> None:
    sb = LineSandbox(TOKEN, SECRET, rate_limit_overrides={"POST /v2/bot/chat/loading/start": (2, 60.0)})
    await sb.start()
    try:
        user = (await friend(http, sb))["userId"]
        path = "/v2/bot/chat/loading/start"
        assert [(await api(http, sb, "POST", path, json={"chatId": user}))[0] for _ in range(2)] == [202, 202]
        status, body, _ = await api(http, sb, "POST", path, json={"chatId": user})
        assert (status, body) == (429, {"message": "The API rate limit has been exceeded. Try again later."})
        assert (await api(http, sb, "GET", "/v2/bot/info"))[0] == 200  # limits are per endpoint
        await ok(http, sb, "POST", "/control/rate-limits", json={"enabled": False})
        assert (await api(http, sb, "POST", path, json={"chatId": user}))[0] == 202
        sb.rate_limits = True
        assert (await api(http, sb, "POST", path, json={"chatId": user}))[0] == 429
    finally:
        await sb.stop()


# --------------------------------------------------------------------------- the real SDK


async def test_line_bot_sdk_drives_the_sandbox(
    sandbox: LineSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    """line-bot-sdk (the connector's client) parses the sandbox's answers and webhooks."""
    messaging = pytest.importorskip("linebot.v3.messaging")
    webhook = pytest.importorskip("linebot.v3.webhook")
    await friend(http, sandbox)
    await ok(http, sandbox, "POST", "/client/alice/messages", json={"text": "hi"})
    await receiver.wait_for(lambda: len(receiver.events()) == 2)
    parser = webhook.WebhookParser(SECRET)
    parsed = [
        type(e).__name__
        for p in receiver.accepted
        for e in parser.parse(p["raw"].decode(), p["headers"]["x-line-signature"])
    ]
    assert parsed == ["FollowEvent", "MessageEvent"]
    user = receiver.events()[0]["source"]["userId"]
    config = messaging.Configuration(host=sandbox.api_url, access_token=TOKEN)
    async with messaging.AsyncApiClient(config) as client:
        api_client = messaging.AsyncMessagingApi(client)
        key = str(uuid.uuid4())
        request = messaging.PushMessageRequest(to=user, messages=[messaging.TextMessage(text="hello")])
        first = await api_client.push_message(request, x_line_retry_key=key)
        with pytest.raises(messaging.ApiException) as conflict:
            await api_client.push_message(request, x_line_retry_key=key)
        assert conflict.value.status == 409
        assert json.loads(conflict.value.body)["sentMessages"][0]["id"] == first.sent_messages[0].id
        profile = await api_client.get_profile(user)
        assert (profile.display_name, profile.language) == ("Alice", "en")


def test_signature_helper_matches_lines_algorithm() -> None:
    body = '{"destination":"U","events":[]}'.encode()
    assert (
        signature(SECRET, body)
        == base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    )
