"""The LINE connector's outbound side (and its content downloads) against a tiny in-test stub of
the Messaging API: reply while a reply token is fresh, push otherwise, each push with a retry
key that settles a resend, the monthly quota checked first, LINE's errors turned into waits,
retries or sentences, media served to LINE from the bridge's own listener.

The stub answers like LINE's reference says (shapes, 409 with ``sentMessages``, "Invalid reply
token"); the emulator in sandbox/line is tested on its own."""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.events import ChatRef, Delivery, DeliveryKind, MediaKind, OutboundMedia, RemoteLocation, RichText
from bridge.networks.base import DeliveryError, MediaUnavailable
from bridge.networks.line.config import LineConfig
from bridge.networks.line.connector import MAX_TEXT, REPLY_TOKEN_S, LineConnector, retry_key, utf16_len
from bridge.networks.line.media import placeholder_png
from bridge.networks.line.translate import ContentRef, Inbound
from sandbox.homeserver import free_port

BOT = "U" + "b" * 32
USER = "U" + "1" * 32
GROUP = "C" + "2" * 32
SECRET = "0123456789abcdef0123456789abcdef"
TOKEN = "t" * 40


@dataclass
class LineStub:
    """The Messaging API endpoints the connector uses, both hosts on one port."""

    port: int = field(default_factory=free_port)
    limit: int | None = None
    used: int = 0
    members: int = 3
    #: Statuses the next pushes answer (after being accepted when ``accept`` says so).
    fail_pushes: list[tuple[int, dict[str, Any], bool]] = field(default_factory=list)
    reply_tokens: set[str] = field(default_factory=set)
    content: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)
    accepted_keys: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    webhook_url: str = ""
    _ids: Any = field(default_factory=lambda: itertools.count(500000000000000001))
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._route)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [body for _, p, body, _ in self.requests if p == path]

    async def _route(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        path = "/" + request.match_info["path"]
        self.requests.append((request.method, path, body, dict(request.headers)))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"message": "Authentication failed"}, status=401)
        handler = getattr(self, "_" + request.method.lower() + path.replace("/", "_").replace("-", "_"), None)
        if handler is not None:
            return await handler(request, body)
        return await self._dynamic(request, path)

    async def _get_v2_bot_info(self, request: web.Request, body: dict) -> web.Response:
        return web.json_response(
            {
                "userId": BOT,
                "basicId": "@216ru0ap",
                "displayName": "Example Advisers",
                "chatMode": "chat",
                "markAsReadMode": "manual",
            }
        )

    async def _put_v2_bot_channel_webhook_endpoint(self, request: web.Request, body: dict) -> web.Response:
        self.webhook_url = body["endpoint"]
        return web.json_response({})

    async def _get_v2_bot_message_quota(self, request: web.Request, body: dict) -> web.Response:
        if self.limit is None:
            return web.json_response({"type": "none"})
        return web.json_response({"type": "limited", "value": self.limit})

    async def _get_v2_bot_message_quota_consumption(self, request: web.Request, body: dict) -> web.Response:
        return web.json_response({"totalUsage": self.used})

    async def _post_v2_bot_message_reply(self, request: web.Request, body: dict) -> web.Response:
        token = body.get("replyToken")
        if token not in self.reply_tokens:
            return web.json_response({"message": "Invalid reply token"}, status=400)
        self.reply_tokens.discard(token)
        return web.json_response({"sentMessages": self._deliver(body["messages"], body)})

    async def _post_v2_bot_message_push(self, request: web.Request, body: dict) -> web.Response:
        key = request.headers.get("X-Line-Retry-Key", "")
        if key in self.accepted_keys:
            return web.json_response(
                {"message": "The retry key is already accepted", "sentMessages": self.accepted_keys[key]},
                status=409,
                headers={"x-line-accepted-request-id": "abc"},
            )
        failure = self.fail_pushes.pop(0) if self.fail_pushes else None
        if failure is not None and not failure[2]:
            return web.json_response(failure[1], status=failure[0])
        sent = self._deliver(body["messages"], body)
        self.used += self.members if body["to"].startswith("C") else 1
        if key:
            self.accepted_keys[key] = sent
        if failure is not None:  # accepted, but the answer is lost
            return web.json_response(failure[1], status=failure[0])
        return web.json_response({"sentMessages": sent})

    def _deliver(self, messages: list[dict], body: dict) -> list[dict[str, str]]:
        sent = []
        for message in messages:
            message_id = str(next(self._ids))
            self.delivered.append({**message, "to": body.get("to"), "id": message_id})
            sent.append({"id": message_id, "quoteToken": f"qt-{message_id}"})
        return sent

    async def _post_v2_bot_chat_loading_start(self, request: web.Request, body: dict) -> web.Response:
        return web.json_response({}, status=202)

    async def _post_v2_bot_chat_markAsRead(self, request: web.Request, body: dict) -> web.Response:
        return web.json_response({})

    async def _dynamic(self, request: web.Request, path: str) -> web.StreamResponse:
        parts = path.strip("/").split("/")
        if parts[:3] == ["v2", "bot", "profile"]:
            return web.json_response({"displayName": "Taro Yamada", "userId": parts[3], "language": "ja"})
        if parts[:3] == ["v2", "bot", "group"] and parts[4:] == ["summary"]:
            return web.json_response(
                {"groupId": parts[3], "groupName": "Family", "pictureUrl": "https://x/y.jpg"}
            )
        if parts[:3] == ["v2", "bot", "group"] and parts[4:] == ["members", "count"]:
            return web.json_response({"count": self.members})
        if parts[:3] == ["v2", "bot", "group"] and parts[4] == "member":
            return web.json_response({"displayName": "Hanako", "userId": parts[5]})
        if parts[:3] == ["v2", "bot", "message"] and parts[4:] == ["content", "transcoding"]:
            return web.json_response({"status": "succeeded"})
        if parts[:3] == ["v2", "bot", "message"] and parts[4:] == ["content"]:
            if parts[3] not in self.content:
                return web.json_response({"message": "Not found"}, status=404)
            return web.Response(body=self.content[parts[3]], content_type="image/jpeg")
        return web.json_response({"message": "Not found"}, status=404)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stub() -> AsyncIterator[LineStub]:
    line = LineStub()
    await line.start()
    yield line
    await line.stop()


def line_config(stub: LineStub, listen_port: int, public: bool = True) -> LineConfig:
    return LineConfig(
        channel_secret=SECRET,
        channel_access_token=TOKEN,
        api_url=stub.url,
        data_url=stub.url,
        listen_host="127.0.0.1",
        listen_port=listen_port,
        public_url=f"http://127.0.0.1:{listen_port}/line/webhook" if public else "",
    )


async def sink(event: Any, *, on_sent: Any = None) -> None:
    return None


@pytest.fixture
async def make(stub: LineStub, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[LineConnector] = []

    async def build(*, public: bool = True, clock: Clock | None = None) -> LineConnector:
        connector = LineConnector(
            line_config(stub, free_port(), public), media_dir=tmp_path, monotonic=clock or Clock()
        )
        await connector.start(sink)
        started.append(connector)
        return connector

    yield build
    for connector in started:
        await connector.stop()


def delivery(chat_id: str = USER, event_id: str = "$ev1", **fields: Any) -> Delivery:
    fields.setdefault("text", RichText("Hello, how can we help?"))
    return Delivery(
        DeliveryKind.MESSAGE,
        ChatRef("line", BOT, chat_id),
        "!room:example.com",
        event_id,
        signature="Erin Employee (Example Advisers)",
        **fields,
    )


def client_said(
    connector: LineConnector, stub: LineStub, message_id: str, reply_token: str = "", **tokens: str
) -> None:
    """What the webhook leaves behind for a client's message (see LineConnector._handle)."""
    from bridge.events import RemoteEvent, RemoteEventKind, RemoteUser

    event = RemoteEvent(
        RemoteEventKind.MESSAGE, ChatRef("line", BOT, USER), RemoteUser("line", USER, "Taro"), message_id, 1
    )
    if reply_token:
        stub.reply_tokens.add(reply_token)
    connector._keep_tokens(Inbound(event, "01WEBHOOK", False, reply_token=reply_token, **tokens))


async def test_start_learns_the_account_and_registers_the_webhook(stub: LineStub, make: Any) -> None:
    connector = await make()
    assert connector.account == BOT and connector.invite_account() == BOT
    assert stub.webhook_url == connector.config.public_url
    assert connector.capture_label(BOT) == "LINE Official Account @216ru0ap"


async def test_a_refused_access_token_fails_the_start_with_the_key_to_fix(
    stub: LineStub, tmp_path: Path
) -> None:
    config = line_config(stub, free_port())
    wrong = LineConnector(
        LineConfig(**{**config.__dict__, "channel_access_token": "w" * 40}), media_dir=tmp_path
    )
    with pytest.raises(RuntimeError) as info:
        await wrong.start(sink)
    assert "networks.line.channel_access_token" in str(info.value) and "401" in str(info.value)
    assert "w" * 40 not in str(info.value)


async def test_a_signed_text_is_pushed_with_a_retry_key_and_a_resend_settles(
    stub: LineStub, make: Any
) -> None:
    connector = await make()
    receipt = await connector.send(delivery())
    assert [m["text"] for m in stub.delivered] == [
        "Erin Employee (Example Advisers)\nHello, how can we help?"
    ]
    (method, path, body, headers) = next(r for r in stub.requests if r[1] == "/v2/bot/message/push")
    assert headers["X-Line-Retry-Key"] == retry_key("$ev1", 0)
    assert receipt.message_ids == (stub.delivered[0]["id"],)
    # A crash before the bookkeeping: a new process settles instead of sending again.
    again = await make()
    assert await again.checkpoint(ChatRef("line", BOT, USER)) == "push"
    found = await again.find_delivered(delivery(), "push")
    assert found is not None and found.message_ids == receipt.message_ids
    assert len(stub.delivered) == 1
    # ...and so does a plain resend (a timeout after LINE accepted it).
    assert (await again.send(delivery())).message_ids == receipt.message_ids
    assert len(stub.delivered) == 1


async def test_a_push_accepted_before_the_quota_ran_out_still_settles(stub: LineStub, make: Any) -> None:
    stub.limit, stub.used = 10, 9
    connector = await make()
    receipt = await connector.send(delivery())
    assert stub.used == 10
    # The crash came before the bookkeeping; the quota is spent now, by this very message.
    again = await make()
    found = await again.find_delivered(delivery(), await again.checkpoint(ChatRef("line", BOT, USER)))
    assert found is not None and found.message_ids == receipt.message_ids and len(stub.delivered) == 1


async def test_a_push_accepted_but_answered_500_is_retried_without_duplicate(
    stub: LineStub, make: Any
) -> None:
    connector = await make()
    stub.fail_pushes.append((500, {"message": "Internal error"}, True))
    with pytest.raises(DeliveryError) as info:
        await connector.send(delivery())
    assert not info.value.permanent
    receipt = await connector.send(delivery())
    assert len(stub.delivered) == 1 and receipt.message_ids == (stub.delivered[0]["id"],)


async def test_a_fresh_reply_token_is_used_once_then_pushes_follow(stub: LineStub, make: Any) -> None:
    clock = Clock()
    connector = await make(clock=clock)
    client_said(connector, stub, "100", reply_token="rt-1")
    assert await connector.checkpoint(ChatRef("line", BOT, USER)) == "reply"
    await connector.send(delivery(event_id="$a"))
    await connector.send(delivery(event_id="$b"))
    assert len(stub.calls("/v2/bot/message/reply")) == 1 and len(stub.calls("/v2/bot/message/push")) == 1
    client_said(connector, stub, "101", reply_token="rt-2")
    clock.now += REPLY_TOKEN_S + 1  # too old to trust
    await connector.send(delivery(event_id="$c"))
    assert len(stub.calls("/v2/bot/message/reply")) == 1 and len(stub.calls("/v2/bot/message/push")) == 2
    # A refused token (used elsewhere, expired early) falls back to a push at once.
    client_said(connector, stub, "102", reply_token="rt-3")
    stub.reply_tokens.discard("rt-3")
    receipt = await connector.send(delivery(event_id="$d"))
    assert len(stub.calls("/v2/bot/message/push")) == 3 and receipt.message_ids
    assert await connector.find_delivered(delivery(event_id="$e"), "reply") is None


async def test_a_long_text_is_split_at_5000_utf16_units_five_per_request(stub: LineStub, make: Any) -> None:
    connector = await make()
    word = "\U0001f600ab "  # an emoji counts as two UTF-16 units
    text = word * 6000  # 30 000 units: 7 pieces, so two requests
    receipt = await connector.send(delivery(text=RichText(text)))
    pieces = [m["text"] for m in stub.delivered]
    assert all(utf16_len(p) <= MAX_TEXT for p in pieces) and len(pieces) == 7
    assert " ".join(pieces) == "Erin Employee (Example Advisers)\n" + text
    keys = [h["X-Line-Retry-Key"] for _, p, _, h in stub.requests if p == "/v2/bot/message/push"]
    assert keys == [retry_key("$ev1", 0), retry_key("$ev1", 1)]
    assert len(receipt.message_ids) == 7


async def test_a_reply_quotes_its_target_with_the_kept_quote_token(stub: LineStub, make: Any) -> None:
    connector = await make()
    client_said(connector, stub, "200", quote_token="q-200")
    receipt = await connector.send(delivery(reply_to="200"))
    assert stub.delivered[-1]["quoteToken"] == "q-200" and receipt.note == ""
    # The bridge's own messages can be quoted too (their tokens came back with the push).
    await connector.send(delivery(event_id="$2", reply_to=receipt.message_ids[0]))
    assert stub.delivered[-1]["quoteToken"] == f"qt-{receipt.message_ids[0]}"
    unknown = await connector.send(delivery(event_id="$3", reply_to="999"))
    assert "quoteToken" not in stub.delivered[-1] and "without the message it replies to" in unknown.note


async def test_an_exhausted_quota_is_refused_before_the_push(stub: LineStub, make: Any) -> None:
    stub.limit, stub.used = 200, 199
    connector = await make()
    await connector.send(delivery(event_id="$ok"))
    with pytest.raises(DeliveryError) as info:
        await connector.send(delivery(event_id="$over"))
    assert info.value.permanent and "monthly message limit is reached (200 of 200" in info.value.reason
    assert len(stub.calls("/v2/bot/message/push")) == 1
    # A group push counts once per member.
    stub.limit, stub.used = 200, 198
    group_connector = await make()
    with pytest.raises(DeliveryError) as info:
        await group_connector.send(delivery(GROUP, event_id="$group"))
    assert "this push would count 3" in info.value.reason


@pytest.mark.parametrize(
    ("status", "body", "permanent", "words"),
    [
        (429, {"message": "The API rate limit has been exceeded. Try again later."}, False, "slow down"),
        (429, {"message": "You have reached your monthly limit."}, True, "monthly message limit"),
        (500, {"message": "Internal error"}, False, "not answering properly"),
        (
            400,
            {
                "message": "The request body has 1 error(s)",
                "details": [{"message": "May not be empty", "property": "messages[0].text"}],
            },
            True,
            "LINE refused it: The request body has 1 error(s): messages[0].text: May not be empty",
        ),
        (403, {"message": "Access to this API is not available for your account"}, True, "not available"),
    ],
)
async def test_lines_errors_become_waits_retries_or_sentences(
    stub: LineStub, make: Any, status: int, body: dict, permanent: bool, words: str
) -> None:
    connector = await make()
    stub.fail_pushes.append((status, body, False))
    with pytest.raises(DeliveryError) as info:
        await connector.send(delivery())
    assert info.value.permanent is permanent and words in info.value.reason
    if status == 429 and not permanent:
        assert info.value.retry_after == 5.0


def fetch(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, b"", ""


async def test_media_are_served_from_the_bridge_and_sent_by_url(stub: LineStub, make: Any) -> None:
    import asyncio

    connector = await make()
    picture = OutboundMedia(MediaKind.IMAGE, b"\xff\xd8jpeg bytes", "p.jpg", "image/jpeg")
    receipt = await connector.send(delivery(media=picture, text=RichText("our offer")))
    image, text = stub.delivered
    assert image["type"] == "image" and text["text"] == "Erin Employee (Example Advisers)\nour offer"
    assert receipt.message_ids[0] == image["id"]  # the media first: the core marks the first id
    assert image["originalContentUrl"].startswith(connector.config.media_base + "/")
    status, data, ctype = await asyncio.to_thread(fetch, image["originalContentUrl"])
    assert (status, data, ctype) == (200, b"\xff\xd8jpeg bytes", "image/jpeg")
    assert (await asyncio.to_thread(fetch, image["originalContentUrl"][:-8] + "AAAA.jpg"))[0] == 404
    assert (await asyncio.to_thread(fetch, connector.config.media_base + "/../config.yaml"))[0] == 404
    # A video gets the plain preview; audio its duration.
    video = OutboundMedia(MediaKind.VIDEO, b"mp4", "v.mp4", "video/mp4")
    await connector.send(delivery(event_id="$v", media=video, text=None))
    assert stub.delivered[-2]["previewImageUrl"].endswith("/preview.png")
    status, data, _ = await asyncio.to_thread(fetch, stub.delivered[-2]["previewImageUrl"])
    assert status == 200 and data == placeholder_png()
    voice = OutboundMedia(MediaKind.VOICE, b"m4a", "v.m4a", "audio/mp4", duration_ms=3200)
    await connector.send(delivery(event_id="$a", media=voice, text=None))
    assert stub.delivered[-2]["type"] == "audio" and stub.delivered[-2]["duration"] == 3200


async def test_what_a_bot_cannot_send_is_refused_with_the_reason(stub: LineStub, make: Any) -> None:
    connector = await make()
    pdf = OutboundMedia(MediaKind.FILE, b"%PDF", "offer.pdf", "application/pdf")
    with pytest.raises(DeliveryError) as info:
        await connector.send(delivery(media=pdf))
    assert info.value.permanent and "cannot send files" in info.value.reason
    gif = OutboundMedia(MediaKind.IMAGE, b"GIF89a", "a.gif", "image/gif")
    with pytest.raises(DeliveryError) as info:
        await connector.send(delivery(media=gif))
    assert "JPEG or PNG" in info.value.reason
    big = OutboundMedia(MediaKind.IMAGE, b"x" * (10 * 1024 * 1024 + 1), "big.jpg", "image/jpeg")
    with pytest.raises(DeliveryError) as info:
        await connector.send(delivery(media=big))
    assert "at most 10 MB" in info.value.reason
    reaction = Delivery(
        DeliveryKind.REACTION, ChatRef("line", BOT, USER), "!r", "$r", targets=("1",), reaction="👍"
    )
    with pytest.raises(DeliveryError) as info:
        await connector.send(reaction)
    assert info.value.permanent and "react" in info.value.reason
    assert stub.calls("/v2/bot/message/push") == []
    # A picture sent as a Matrix file still goes, as a picture, and the employee is told.
    as_file = OutboundMedia(MediaKind.FILE, b"\x89PNG", "scan.png", "image/png")
    receipt = await connector.send(delivery(event_id="$f", media=as_file))
    assert stub.delivered[0]["type"] == "image" and "Sent as a picture" in receipt.note
    nowhere = await make(public=False)
    with pytest.raises(DeliveryError) as info:
        await nowhere.send(delivery(event_id="$n", media=as_file))
    assert "networks.line.webhook.public_url" in info.value.reason


async def test_a_location_goes_with_the_signature(stub: LineStub, make: Any) -> None:
    connector = await make()
    await connector.send(delivery(text=None, location=RemoteLocation(35.67966, 139.73669)))
    location, signature = stub.delivered
    assert location["type"] == "location" and (location["latitude"], location["longitude"]) == (
        35.67966,
        139.73669,
    )
    assert signature["text"] == "Erin Employee (Example Advisers)"


async def test_typing_shows_the_loading_animation_in_one_to_one_chats_only(stub: LineStub, make: Any) -> None:
    connector = await make()
    await connector.send(Delivery(DeliveryKind.TYPING, ChatRef("line", BOT, USER), "!r", ""))
    await connector.send(Delivery(DeliveryKind.TYPING, ChatRef("line", BOT, GROUP), "!r", ""))
    assert stub.calls("/v2/bot/chat/loading/start") == [{"chatId": USER, "loadingSeconds": 5}]


async def test_read_marks_use_the_messages_token(stub: LineStub, make: Any) -> None:
    connector = await make()
    client_said(connector, stub, "300", read_token="read-300")
    read = Delivery(DeliveryKind.READ, ChatRef("line", BOT, USER), "!r", "$x", targets=("300",))
    await connector.send(read)
    await connector.send(read)  # the token is spent; nothing more to say to LINE
    assert stub.calls("/v2/bot/chat/markAsRead") == [{"markAsReadToken": "read-300"}]


async def test_an_invite_link_prefills_a_message_carrying_the_code(stub: LineStub, make: Any) -> None:
    connector = await make()
    code = "Z9" * 12
    link = connector.invite_link(code)
    assert link == f"https://line.me/R/oaMessage/%40216ru0ap/?Hello%21%20My%20reference%3A%20HL-{code}"
    with pytest.raises(ValueError):
        connector.invite_link("not-a-code")
    assert len(code) == connector.invite_code_length and set(code) <= set(connector.invite_code_alphabet)


async def test_a_clients_file_is_downloaded_and_a_vanished_one_is_said(stub: LineStub, make: Any) -> None:
    connector = await make()
    stub.content["400"] = b"jpeg"
    assert await connector._fetch(ContentRef("400", "image")) == b"jpeg"
    stub.content["401"] = b"mp4"
    assert await connector._fetch(ContentRef("401", "video")) == b"mp4"
    with pytest.raises(MediaUnavailable):
        await connector._fetch(ContentRef("402", "image"))
