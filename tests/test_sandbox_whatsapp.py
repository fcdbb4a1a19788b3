"""The WhatsApp Cloud API sandbox, driven the way the bridge drives Meta: plain HTTP against the
Graph API with a Bearer token, and a tiny aiohttp receiver playing the bridge's webhook.

Every wait is on a condition (the receiver's event log, or the control API's ``?timeout=`` long
poll) and bounded; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sandbox.whatsapp import SandboxNumber, WebhookSubscriptionError, WhatsAppSandbox

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "EAAsandbox-test-token"
SECRET = "sandbox-app-secret"
VERIFY = "verify-me"
NUMBER = SandboxNumber("1001", "+1 555 0100", "Example Advisers")
CLIENT = "15550001111"
BOUND = 5.0

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(200)) * 3
PDF = b"%PDF-1.4\n" + b"x" * 500
OGG = b"OggS" + b"\x00" * 300
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 400
ANIMATED_WEBP = b"RIFF\x00\x10\x00\x00WEBPVP8X\x0a\x00\x00\x00\x02" + b"\x00" * 9 + b"ANIM" + b"\x00" * 200


# --------------------------------------------------------------------------- the bridge's side


class Receiver:
    """Plays the bridge's webhook endpoint: Meta's GET handshake and signed POSTs."""

    def __init__(self) -> None:
        self.verify_token = VERIFY
        self.handshakes: list[dict[str, str]] = []
        self.posts: list[dict[str, Any]] = []  # {"raw", "headers", "json"}
        self.fail_next = 0
        self.wrong_challenge = False
        self.served: dict[str, tuple[bytes, str]] = {}  # path -> (body, content type)
        self._changed = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/webhook", self._verify)
        app.router.add_post("/webhook", self._post)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _verify(self, request: web.Request) -> web.Response:
        self.handshakes.append(dict(request.query))
        if (
            request.query.get("hub.mode") != "subscribe"
            or request.query.get("hub.verify_token") != self.verify_token
        ):
            return web.Response(status=403)
        challenge = request.query["hub.challenge"]
        return web.Response(text=challenge + "x" if self.wrong_challenge else challenge)

    async def _post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.fail_next > 0:
            self.fail_next -= 1
            self.posts.append({"raw": raw, "headers": dict(request.headers), "json": None, "answered": 500})
            self._wake()
            return web.Response(status=500)
        self.posts.append(
            {"raw": raw, "headers": dict(request.headers), "json": json.loads(raw), "answered": 200}
        )
        self._wake()
        return web.Response(status=200)

    async def _file(self, request: web.Request) -> web.Response:
        found = self.served.get(request.match_info["name"])
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[0], content_type=found[1])

    def _wake(self) -> None:
        self._changed.set()

    @property
    def accepted(self) -> list[dict[str, Any]]:
        return [p for p in self.posts if p["answered"] == 200]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = BOUND) -> Any:
        async def loop() -> Any:
            while True:
                self._changed.clear()
                found = predicate()
                if found:
                    return found
                await self._changed.wait()

        return await asyncio.wait_for(loop(), timeout)

    # -- views on what arrived

    @staticmethod
    def value(post: dict[str, Any]) -> dict[str, Any]:
        return post["json"]["entry"][0]["changes"][0]["value"]

    def messages(self) -> list[dict[str, Any]]:
        return [self.value(p)["messages"][0] for p in self.accepted if "messages" in self.value(p)]

    def statuses(self, wamid: str | None = None) -> list[dict[str, Any]]:
        found = [self.value(p)["statuses"][0] for p in self.accepted if "statuses" in self.value(p)]
        return [s for s in found if wamid is None or s["id"] == wamid]

    async def message(self, wamid: str) -> dict[str, Any]:
        return await self.wait_for(lambda: next((m for m in self.messages() if m["id"] == wamid), None))

    async def status(self, wamid: str, status: str) -> dict[str, Any]:
        return await self.wait_for(
            lambda: next((s for s in self.statuses(wamid) if s["status"] == status), None)
        )

    async def post_for(self, wamid: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for post in self.accepted:
                value = self.value(post)
                if any(m["id"] == wamid for m in value.get("messages", [])):
                    return post
            return None

        return await self.wait_for(find)


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


@pytest.fixture
async def bare_sandbox() -> AsyncIterator[WhatsAppSandbox]:
    sb = WhatsAppSandbox(
        access_token=TOKEN,
        app_secret=SECRET,
        numbers=[NUMBER],
        waba_id="2001",
        graph_version="v21.0",
        host="127.0.0.1",
        port=0,
        throughput_limits=False,
    )
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
async def sandbox(bare_sandbox: WhatsAppSandbox, receiver: Receiver) -> WhatsAppSandbox:
    await bare_sandbox.subscribe(f"{receiver.url}/webhook", VERIFY)
    return bare_sandbox


# --------------------------------------------------------------------------- helpers


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def graph(
    http: aiohttp.ClientSession,
    sb: WhatsAppSandbox,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    **kwargs: Any,
) -> tuple[int, Any]:
    headers = auth(token) if token else {}
    async with http.request(method, f"{sb.graph_url}/{path}", headers=headers, **kwargs) as response:
        return response.status, await response.json()


async def send(
    http: aiohttp.ClientSession, sb: WhatsAppSandbox, body: dict[str, Any], to: str = CLIENT
) -> tuple[int, Any]:
    payload = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, **body}
    return await graph(http, sb, "POST", f"{NUMBER.phone_number_id}/messages", json=payload)


async def control(
    http: aiohttp.ClientSession, sb: WhatsAppSandbox, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, f"{sb.url}{path}", **kwargs) as response:
        return response.status, await response.json()


async def client_says(
    http: aiohttp.ClientSession, sb: WhatsAppSandbox, body: dict[str, Any], wa_id: str = CLIENT
) -> dict[str, Any]:
    status, answer = await control(
        http, sb, "POST", f"/client/{wa_id}/messages", json={"name": "Ada Client", **body}
    )
    assert status == 200, answer
    return answer


async def client_file(
    http: aiohttp.ClientSession,
    sb: WhatsAppSandbox,
    data: bytes,
    kind: str,
    wa_id: str = CLIENT,
    **fields: str,
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("name", "Ada Client")
    form.add_field("kind", kind)
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("file", data, filename=fields.get("file_name", "upload.bin"))
    status, answer = await control(http, sb, "POST", f"/client/{wa_id}/messages", data=form)
    assert status == 200, answer
    return answer


async def upload(
    http: aiohttp.ClientSession, sb: WhatsAppSandbox, data: bytes, mime: str, name: str = "f.bin"
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("messaging_product", "whatsapp")
    form.add_field("type", mime)
    form.add_field("file", data, filename=name, content_type=mime)
    return await graph(http, sb, "POST", f"{NUMBER.phone_number_id}/media", data=form)


async def received(
    http: aiohttp.ClientSession, sb: WhatsAppSandbox, after: str = "", wa_id: str = CLIENT
) -> list[dict[str, Any]]:
    """What the client's phone received after ``after``, waiting (bounded) for at least one."""
    status, body = await control(
        http, sb, "GET", f"/client/{wa_id}/messages", params={"after": after, "timeout": str(BOUND)}
    )
    assert status == 200, body
    assert body["messages"], "nothing arrived on the client's phone in time"
    return body["messages"]


async def history(http: aiohttp.ClientSession, sb: WhatsAppSandbox, wa_id: str = CLIENT) -> dict[str, Any]:
    status, body = await control(http, sb, "GET", f"/client/{wa_id}/history")
    assert status == 200, body
    return body


async def open_window(http: aiohttp.ClientSession, sb: WhatsAppSandbox, receiver: Receiver) -> str:
    """The client writes first (opening the 24-hour window); the business got the webhook."""
    answer = await client_says(http, sb, {"text": "Hello, I have a question"})
    await receiver.message(answer["id"])
    return answer["id"]


def graph_error(body: dict[str, Any]) -> dict[str, Any]:
    error = body["error"]
    assert {"message", "type", "code", "fbtrace_id"} <= error.keys(), error
    return error


# --------------------------------------------------------------------------- subscription


async def test_handshake_subscribes_with_meta_query_and_delivers_held_events(
    bare_sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    held = await client_says(http, bare_sandbox, {"text": "sent before any subscription"})
    await bare_sandbox.subscribe(f"{receiver.url}/webhook", VERIFY)
    query = receiver.handshakes[-1]
    assert query["hub.mode"] == "subscribe"
    assert query["hub.verify_token"] == VERIFY
    assert query["hub.challenge"].isdigit()
    message = await receiver.message(held["id"])
    assert message["text"] == {"body": "sent before any subscription"}


async def test_handshake_refused_on_wrong_token_or_wrong_echo(
    bare_sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(WebhookSubscriptionError, match="403"):
        await bare_sandbox.subscribe(f"{receiver.url}/webhook", "not-the-token")
    receiver.wrong_challenge = True
    with pytest.raises(WebhookSubscriptionError, match="echo"):
        await bare_sandbox.subscribe(f"{receiver.url}/webhook", VERIFY)
    status, body = await control(
        http,
        bare_sandbox,
        "POST",
        "/control/webhook",
        json={"url": f"{receiver.url}/webhook", "verify_token": VERIFY},
    )
    assert status == 502 and "challenge" in body["error"]
    status, body = await control(http, bare_sandbox, "POST", "/control/webhook", json={"url": 5})
    assert status == 400 and "error" in body
    assert bare_sandbox.webhooks.subscription is None
    receiver.wrong_challenge = False
    status, body = await control(
        http,
        bare_sandbox,
        "POST",
        "/control/webhook",
        json={"url": f"{receiver.url}/webhook", "verify_token": VERIFY},
    )
    assert (status, body) == (200, {"subscribed": True})


async def test_webhook_signature_is_hmac_of_the_raw_body(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    answer = await client_says(http, sandbox, {"text": "see https://example.com/a 😀"})
    post = await receiver.post_for(answer["id"])
    header = post["headers"]["X-Hub-Signature-256"]
    expected = hmac.new(SECRET.encode(), post["raw"], hashlib.sha256).hexdigest()
    assert header == f"sha256={expected}"
    assert post["headers"]["Content-Type"].startswith("application/json")
    # The raw bytes are not what a re-serialisation would produce: verify before parsing.
    assert b"\\/" in post["raw"] and b"\\ud83d\\ude00" in post["raw"]
    reserialised = json.dumps(post["json"]).encode()
    assert hmac.new(SECRET.encode(), reserialised, hashlib.sha256).hexdigest() != expected
    assert post["json"]["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] == (
        "see https://example.com/a 😀"
    )


# --------------------------------------------------------------------------- inbound shapes


async def test_inbound_text_payload_has_metas_exact_nesting(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    answer = await client_says(http, sandbox, {"text": "Does it come in another color?"})
    post = await receiver.post_for(answer["id"])
    payload = post["json"]
    assert payload["object"] == "whatsapp_business_account"
    entry = payload["entry"][0]
    assert entry["id"] == "2001"
    change = entry["changes"][0]
    assert change["field"] == "messages"
    value = change["value"]
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"] == {"display_phone_number": "15550100", "phone_number_id": "1001"}
    assert value["contacts"] == [{"profile": {"name": "Ada Client"}, "wa_id": CLIENT}]
    message = value["messages"][0]
    assert message["from"] == CLIENT
    assert message["id"] == answer["id"] and message["id"].startswith("wamid.")
    assert isinstance(message["timestamp"], str) and message["timestamp"].isdigit()
    assert message["type"] == "text" and message["text"] == {"body": "Does it come in another color?"}


async def test_inbound_media_shapes_and_their_ids_resolve_to_the_bytes(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    cases = [
        (
            JPEG,
            "image",
            {"caption": "the receipt", "file_name": "r.jpg"},
            "image",
            {"caption": "the receipt", "mime_type": "image/jpeg"},
        ),
        (MP4, "video", {"mime_type": "video/mp4"}, "video", {"mime_type": "video/mp4"}),
        (OGG, "voice", {}, "audio", {"mime_type": "audio/ogg; codecs=opus", "voice": True}),
        (b"ID3" + b"\x00" * 100, "audio", {"mime_type": "audio/mpeg"}, "audio", {"voice": False}),
        (
            PDF,
            "document",
            {"file_name": "contract.pdf", "caption": "signed"},
            "document",
            {"filename": "contract.pdf", "mime_type": "application/pdf", "caption": "signed"},
        ),
        (
            ANIMATED_WEBP,
            "sticker",
            {"file_name": "s.webp"},
            "sticker",
            {"mime_type": "image/webp", "animated": True},
        ),
    ]
    for data, kind, fields, webhook_type, expected in cases:
        answer = await client_file(http, sandbox, data, kind, **fields)
        message = await receiver.message(answer["id"])
        assert message["type"] == webhook_type
        media = message[webhook_type]
        assert media["id"] == answer["media_id"]
        for key, value in expected.items():
            assert media[key] == value, (kind, key, media)
        if webhook_type not in ("image", "video", "document"):
            assert "caption" not in media
        assert media["sha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
        status, info = await graph(http, sandbox, "GET", media["id"])
        assert status == 200 and info["id"] == media["id"] and info["file_size"] == len(data)
        async with http.get(info["url"], headers=auth()) as response:
            assert response.status == 200
            assert await response.read() == data


async def test_inbound_location_contacts_and_unsupported_shapes(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    location = {"latitude": 37.4611978, "longitude": -122.2164385, "name": "HQ", "address": "1 Hacker Way"}
    answer = await client_says(http, sandbox, {"location": location})
    assert (await receiver.message(answer["id"]))["location"] == location
    contacts = [
        {
            "name": {"formatted_name": "Chandler Bing", "first_name": "Chandler"},
            "phones": [{"phone": "+1 555-555-5555", "wa_id": "15555555555", "type": "CELL"}],
        }
    ]
    answer = await client_says(http, sandbox, {"contacts": contacts})
    message = await receiver.message(answer["id"])
    assert message["type"] == "contacts" and message["contacts"] == contacts
    answer = await client_says(http, sandbox, {"unsupported": "poll"})
    message = await receiver.message(answer["id"])
    assert message["type"] == "unsupported"
    assert "unsupported" not in message
    assert message["errors"][0]["code"] == 131051
    assert message["errors"][0]["error_data"] == {"details": "Message type is currently not supported."}


async def test_inbound_reaction_and_its_removal_omit_emoji(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await open_window(http, sandbox, receiver)
    status, sent = await send(http, sandbox, {"type": "text", "text": {"body": "Your order shipped"}})
    assert status == 200
    target = sent["messages"][0]["id"]
    answer = await client_says(http, sandbox, {"reaction": {"message_id": target, "emoji": "👍"}})
    message = await receiver.message(answer["id"])
    assert message["type"] == "reaction" and message["reaction"] == {"message_id": target, "emoji": "👍"}
    answer = await client_says(http, sandbox, {"reaction": {"message_id": target, "emoji": ""}})
    message = await receiver.message(answer["id"])
    assert message["reaction"] == {"message_id": target}
    own = await client_says(http, sandbox, {"text": "mine"})
    status, body = await control(
        http,
        sandbox,
        "POST",
        f"/client/{CLIENT}/messages",
        json={"reaction": {"message_id": own["id"], "emoji": "👍"}},
    )
    assert status == 403 and "business" in body["error"]


async def test_inbound_reply_carries_context_from_and_id(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    first = await open_window(http, sandbox, receiver)
    _, sent = await send(http, sandbox, {"type": "text", "text": {"body": "Which size?"}})
    business_id = sent["messages"][0]["id"]
    answer = await client_says(http, sandbox, {"text": "Large", "reply_to": business_id})
    message = await receiver.message(answer["id"])
    assert message["context"] == {"from": "15550100", "id": business_id}
    answer = await client_says(http, sandbox, {"text": "and this", "reply_to": first})
    assert (await receiver.message(answer["id"]))["context"] == {"from": CLIENT, "id": first}
    status, body = await control(
        http, sandbox, "POST", f"/client/{CLIENT}/messages", json={"text": "x", "reply_to": "wamid.nope"}
    )
    assert status == 404


async def test_inbound_edit_and_revoke_shapes_and_windows(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    original = await client_says(http, sandbox, {"text": "Helo"})
    status, edit = await control(
        http, sandbox, "POST", f"/client/{CLIENT}/messages/{original['id']}/edit", json={"text": "Hello"}
    )
    assert status == 200
    message = await receiver.message(edit["id"])
    assert message["type"] == "edit" and message["from"] == CLIENT
    assert message["edit"] == {
        "original_message_id": original["id"],
        "message": {"type": "text", "text": {"body": "Hello"}},
    }
    photo = await client_file(http, sandbox, JPEG, "image", caption="old caption")
    status, edit = await control(
        http,
        sandbox,
        "POST",
        f"/client/{CLIENT}/messages/{photo['id']}/edit",
        json={"caption": "new caption"},
    )
    edited = (await receiver.message(edit["id"]))["edit"]["message"]
    assert edited["type"] == "image" and edited["image"]["caption"] == "new caption"
    assert edited["image"]["id"] == photo["media_id"]

    status, revoke = await control(
        http, sandbox, "POST", f"/client/{CLIENT}/messages/{original['id']}/revoke"
    )
    assert status == 200
    message = await receiver.message(revoke["id"])
    assert message["type"] == "revoke" and message["revoke"] == {"original_message_id": original["id"]}
    entry = next(m for m in (await history(http, sandbox))["messages"] if m["id"] == original["id"])
    assert entry["revoked"] is True and entry["edits"][0]["body"] == "Hello"

    late = await client_says(http, sandbox, {"text": "to be edited late"})
    sandbox.advance_clock(15 * 60 + 1)
    status, body = await control(
        http, sandbox, "POST", f"/client/{CLIENT}/messages/{late['id']}/edit", json={"text": "too late"}
    )
    assert status == 409 and "15 minutes" in body["error"]
    status, _ = await control(http, sandbox, "POST", f"/client/{CLIENT}/messages/{late['id']}/revoke")
    assert status == 200  # revoking is allowed for two days
    old = await client_says(http, sandbox, {"text": "old"})
    await control(http, sandbox, "POST", "/control/clock", json={"advance_seconds": 2 * 24 * 3600 + 1})
    status, body = await control(http, sandbox, "POST", f"/client/{CLIENT}/messages/{old['id']}/revoke")
    assert status == 409 and "two days" in body["error"]
    _, sent = await send(
        http,
        sandbox,
        {"type": "template", "template": {"name": "conversation_reopen", "language": {"code": "en"}}},
    )
    status, body = await control(
        http,
        sandbox,
        "POST",
        f"/client/{CLIENT}/messages/{sent['messages'][0]['id']}/edit",
        json={"text": "x"},
    )
    assert status == 403


# --------------------------------------------------------------------------- business sends


async def test_send_text_answer_statuses_and_client_view(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await open_window(http, sandbox, receiver)
    status, body = await send(
        http,
        sandbox,
        {"type": "text", "text": {"body": "Hi Ada", "preview_url": False}},
        to="+1 555-000-1111",
    )
    assert status == 200
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+1 555-000-1111", "wa_id": CLIENT}]
    wamid = body["messages"][0]["id"]
    assert wamid.startswith("wamid.") and "message_status" not in body["messages"][0]
    sent = await receiver.status(wamid, "sent")
    delivered = await receiver.status(wamid, "delivered")
    assert [s["status"] for s in receiver.statuses(wamid)] == ["sent", "delivered"]
    for item in (sent, delivered):
        assert item["recipient_id"] == CLIENT and item["timestamp"].isdigit()
        assert item["pricing"]["category"] == "service" and item["conversation"]["id"]
    assert "expiration_timestamp" in sent["conversation"]
    view = (await received(http, sandbox))[-1]
    assert view["id"] == wamid and view["type"] == "text"
    assert view["text"] == {"body": "Hi Ada", "preview_url": False}
    assert view["status"] == "delivered"


async def test_send_reply_shows_context_on_the_phone(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    question = await open_window(http, sandbox, receiver)
    status, body = await send(
        http, sandbox, {"type": "text", "text": {"body": "Answer"}, "context": {"message_id": question}}
    )
    assert status == 200
    view = (await received(http, sandbox))[-1]
    assert view["context"] == {"id": question, "from": CLIENT}


async def test_send_uploaded_media_and_the_client_downloads_it(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await open_window(http, sandbox, receiver)
    status, uploaded = await upload(http, sandbox, PNG, "image/png", "chart.png")
    assert status == 200 and uploaded["id"].isdigit()
    status, body = await send(
        http, sandbox, {"type": "image", "image": {"id": uploaded["id"], "caption": "Q3"}}
    )
    assert status == 200
    wamid = body["messages"][0]["id"]
    await receiver.status(wamid, "delivered")
    view = (await received(http, sandbox))[-1]
    assert view["image"]["media_id"] == uploaded["id"] and view["image"]["caption"] == "Q3"
    assert view["image"]["mime_type"] == "image/png" and view["image"]["file_size"] == len(PNG)
    async with http.get(f"{sandbox.url}/client/{CLIENT}/media/{uploaded['id']}") as response:
        assert response.status == 200 and await response.read() == PNG
    _, doc = await upload(http, sandbox, PDF, "application/pdf", "terms.pdf")
    status, body = await send(
        http, sandbox, {"type": "document", "document": {"id": doc["id"], "filename": "terms.pdf"}}
    )
    view = (await received(http, sandbox, after=wamid))[-1]
    assert view["document"]["filename"] == "terms.pdf" and view["document"]["media_id"] == doc["id"]
    status, body = await send(http, sandbox, {"type": "audio", "audio": {"id": doc["id"], "caption": "no"}})
    assert status == 400 and graph_error(body)["code"] == 100


async def test_send_media_by_link_fetches_it_or_fails_with_131053(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await open_window(http, sandbox, receiver)
    receiver.served["photo.jpg"] = (JPEG, "image/jpeg")
    status, body = await send(
        http, sandbox, {"type": "image", "image": {"link": f"{receiver.url}/files/photo.jpg"}}
    )
    assert status == 200
    wamid = body["messages"][0]["id"]
    await receiver.status(wamid, "delivered")
    view = (await received(http, sandbox))[-1]
    async with http.get(f"{sandbox.url}/client/{CLIENT}/media/{view['image']['media_id']}") as response:
        assert await response.read() == JPEG
    status, body = await send(
        http, sandbox, {"type": "image", "image": {"link": f"{receiver.url}/files/missing.jpg"}}
    )
    assert status == 200
    failed = await receiver.status(body["messages"][0]["id"], "failed")
    assert failed["errors"][0]["code"] == 131053


async def test_upload_limits_follow_the_supported_media_table(
    sandbox: WhatsAppSandbox, http: aiohttp.ClientSession
) -> None:
    status, body = await upload(http, sandbox, b"PK\x03\x04zip", "application/zip", "a.zip")
    error = graph_error(body)
    assert status == 400 and error["code"] == 100
    assert "Param file must be a file with one of the following types" in error["message"]
    status, body = await upload(http, sandbox, b"\xff" * (5 * 1024 * 1024 + 1), "image/jpeg", "big.jpg")
    assert status == 400 and graph_error(body)["code"] == 131053
    status, static = await upload(
        http, sandbox, b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * (101 * 1024), "image/webp"
    )
    assert status == 200
    status, body = await send(http, sandbox, {"type": "sticker", "sticker": {"id": static["id"]}})
    error = graph_error(body)
    assert status == 400 and error["code"] == 131009 and "100 KB" in error["error_data"]["details"]
    status, body = await send(http, sandbox, {"type": "image", "image": {"id": "123456789012345"}})
    assert status == 400 and graph_error(body)["code"] == 131009


async def test_send_reaction_gets_only_sent_status_and_shows_on_the_target(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    question = await open_window(http, sandbox, receiver)
    status, body = await send(
        http, sandbox, {"type": "reaction", "reaction": {"message_id": question, "emoji": "❤️"}}
    )
    assert status == 200
    wamid = body["messages"][0]["id"]
    await receiver.status(wamid, "sent")
    entry = next(m for m in (await history(http, sandbox))["messages"] if m["id"] == question)
    assert entry["reactions"] == [{"from": "business", "emoji": "❤️"}]
    await send(http, sandbox, {"type": "reaction", "reaction": {"message_id": question, "emoji": ""}})
    await receiver.wait_for(lambda: len([s for s in receiver.statuses() if s["status"] == "sent"]) >= 2)
    entry = next(m for m in (await history(http, sandbox))["messages"] if m["id"] == question)
    assert "reactions" not in entry
    assert [s["status"] for s in receiver.statuses(wamid)] == ["sent"]
    _, own = await send(http, sandbox, {"type": "text", "text": {"body": "mine"}})
    status, body = await send(
        http,
        sandbox,
        {"type": "reaction", "reaction": {"message_id": own["messages"][0]["id"], "emoji": "👍"}},
    )
    assert status == 400 and graph_error(body)["code"] == 131009


async def test_send_template_and_template_errors(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    template = {
        "name": "appointment_reminder",
        "language": {"code": "en"},
        "components": [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "Ada"}, {"type": "text", "text": "Monday 10:00"}],
            }
        ],
    }
    status, body = await send(http, sandbox, {"type": "template", "template": template})
    assert status == 200 and body["messages"][0]["message_status"] == "accepted"
    wamid = body["messages"][0]["id"]
    delivered = await receiver.status(wamid, "delivered")
    assert delivered["pricing"]["category"] == "utility" and delivered["pricing"]["billable"] is True
    view = (await received(http, sandbox))[-1]
    assert view["template"]["name"] == "appointment_reminder"
    assert view["template"]["parameters"] == ["Ada", "Monday 10:00"]
    assert "Hello Ada" in view["template"]["text"] and "Monday 10:00" in view["template"]["text"]

    status, body = await send(
        http, sandbox, {"type": "template", "template": {"name": "nope", "language": {"code": "en"}}}
    )
    error = graph_error(body)
    assert status == 404 and error["code"] == 132001
    assert error["message"] == "(#132001) Template name does not exist in the translation"
    status, body = await send(
        http,
        sandbox,
        {
            "type": "template",
            "template": {
                "name": "spring_promo",
                "language": {"code": "en"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "x"}]}],
            },
        },
    )
    assert status == 404 and graph_error(body)["code"] == 132001
    status, body = await send(
        http, sandbox, {"type": "template", "template": {"name": "follow_up", "language": {"code": "en"}}}
    )
    error = graph_error(body)
    assert status == 400 and error["code"] == 132000
    assert error["error_data"]["details"] == (
        "body: number of localizable_params (0) does not match the expected number of params (1)"
    )


async def test_message_templates_listing(sandbox: WhatsAppSandbox, http: aiohttp.ClientSession) -> None:
    status, body = await graph(http, sandbox, "GET", "2001/message_templates")
    assert status == 200 and "paging" in body
    by_name = {t["name"]: t for t in body["data"]}
    assert by_name["follow_up"]["status"] == "APPROVED" and by_name["follow_up"]["language"] == "en"
    assert by_name["follow_up"]["components"][0] == {
        "type": "BODY",
        "text": by_name["follow_up"]["components"][0]["text"],
    }
    assert "{{1}}" in by_name["follow_up"]["components"][0]["text"]
    assert "{{2}}" in by_name["appointment_reminder"]["components"][0]["text"]
    assert by_name["spring_promo"]["status"] == "REJECTED"
    assert all(t["id"] for t in body["data"])
    status, body = await graph(http, sandbox, "GET", "2001/message_templates", params={"status": "APPROVED"})
    assert {t["status"] for t in body["data"]} == {"APPROVED"}
    status, body = await graph(http, sandbox, "GET", "9999/message_templates")
    assert status == 400 and graph_error(body)["code"] == 100


async def test_mark_read_and_typing_indicator(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    first = await open_window(http, sandbox, receiver)
    second = (await client_says(http, sandbox, {"text": "second"}))["id"]
    third = (await client_says(http, sandbox, {"text": "third"}))["id"]
    status, body = await send(
        http, sandbox, {"status": "read", "message_id": second, "typing_indicator": {"type": "text"}}
    )
    assert (status, body) == (200, {"success": True})
    chat = await history(http, sandbox)
    marks = {m["id"]: m["read_by_business"] for m in chat["messages"]}
    assert marks == {first: True, second: True, third: False}
    assert chat["typing"] is True
    await send(http, sandbox, {"type": "text", "text": {"body": "done typing"}})
    assert (await history(http, sandbox))["typing"] is False
    status, body = await send(http, sandbox, {"status": "read", "message_id": "wamid.unknown"})
    assert status == 400 and graph_error(body)["code"] == 131009


async def test_client_read_sends_read_statuses(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await open_window(http, sandbox, receiver)
    _, one = await send(http, sandbox, {"type": "text", "text": {"body": "one"}})
    _, two = await send(http, sandbox, {"type": "text", "text": {"body": "two"}})
    one_id, two_id = one["messages"][0]["id"], two["messages"][0]["id"]
    await receiver.status(two_id, "delivered")
    status, body = await control(http, sandbox, "POST", f"/client/{CLIENT}/read", json={"up_to": one_id})
    assert (status, body) == (200, {"read": [one_id]})
    read = await receiver.status(one_id, "read")
    assert read["recipient_id"] == CLIENT
    status, body = await control(http, sandbox, "POST", f"/client/{CLIENT}/read", json={})
    assert body == {"read": [two_id]}
    await receiver.status(two_id, "read")
    views = await received(http, sandbox)
    assert [v["status"] for v in views] == ["read", "read"]


# --------------------------------------------------------------------------- auth and errors


async def test_graph_requires_the_bearer_token(sandbox: WhatsAppSandbox, http: aiohttp.ClientSession) -> None:
    for token in (None, "wrong-token"):
        status, body = await graph(
            http, sandbox, "POST", "1001/messages", token=token, json={"messaging_product": "whatsapp"}
        )
        error = graph_error(body)
        assert status == 401 and error["code"] == 190 and error["type"] == "OAuthException"
    _, uploaded = await upload(http, sandbox, PNG, "image/png")
    _, info = await graph(http, sandbox, "GET", uploaded["id"])
    async with http.get(info["url"]) as response:
        assert response.status == 401
    status, body = await graph(
        http, sandbox, "GET", "2001/message_templates", token=None, params={"access_token": TOKEN}
    )
    assert status == 200


async def test_unknown_phone_number_id_is_an_unknown_object(
    sandbox: WhatsAppSandbox, http: aiohttp.ClientSession
) -> None:
    status, body = await graph(
        http,
        sandbox,
        "POST",
        "424242/messages",
        json={"messaging_product": "whatsapp", "to": CLIENT, "text": {"body": "x"}},
    )
    error = graph_error(body)
    assert status == 400 and error["code"] == 100 and error["error_subcode"] == 33
    assert (
        error["type"] == "GraphMethodException"
        and "Object with ID '424242' does not exist" in error["message"]
    )


async def test_send_validation_errors(sandbox: WhatsAppSandbox, http: aiohttp.ClientSession) -> None:
    status, body = await graph(
        http, sandbox, "POST", "1001/messages", json={"to": CLIENT, "type": "text", "text": {"body": "x"}}
    )
    assert (
        status == 400
        and graph_error(body)["message"] == "(#100) The parameter messaging_product is required."
    )
    status, body = await send(http, sandbox, {"type": "text", "text": {"body": "x" * 4097}})
    assert status == 400 and graph_error(body)["code"] == 100 and "4096" in body["error"]["message"]
    status, body = await send(http, sandbox, {"type": "text", "text": {"body": "x"}}, to="not-a-number")
    assert status == 400 and graph_error(body)["code"] == 131009
    status, body = await send(http, sandbox, {"type": "text", "text": {}})
    assert status == 400 and "text['body']" in graph_error(body)["message"]
    status, body = await send(http, sandbox, {"type": "image", "image": {"link": "ftp://x"}})
    assert status == 400 and graph_error(body)["code"] == 100


# --------------------------------------------------------------------------- the 24-hour window


async def test_free_form_outside_the_window_fails_async_with_131047(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await open_window(http, sandbox, receiver)
    await control(http, sandbox, "POST", "/control/clock", json={"advance_seconds": 24 * 3600 + 1})
    status, body = await send(http, sandbox, {"type": "text", "text": {"body": "Are you still there?"}})
    assert status == 200 and body["messages"][0]["id"].startswith("wamid.")
    wamid = body["messages"][0]["id"]
    failed = await receiver.status(wamid, "failed")
    assert failed["recipient_id"] == CLIENT and failed["timestamp"].isdigit()
    error = failed["errors"][0]
    assert error["code"] == 131047 and error["title"] == "Re-engagement message"
    assert error["message"] == "Re-engagement message"
    assert "24 hours" in error["error_data"]["details"]
    assert "pricing" not in failed
    assert [s["status"] for s in receiver.statuses(wamid)] == ["failed"]
    view = (await received(http, sandbox))[-1]
    assert view["id"] == wamid and view["status"] == "failed" and view["errors"][0]["code"] == 131047
    # a client that never wrote has no window either
    _, body = await send(http, sandbox, {"type": "text", "text": {"body": "cold"}}, to="15550009999")
    assert (await receiver.status(body["messages"][0]["id"], "failed"))["errors"][0]["code"] == 131047


async def test_templates_are_allowed_outside_the_window(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await open_window(http, sandbox, receiver)
    sandbox.advance_clock(25 * 3600)
    template = {
        "name": "follow_up",
        "language": {"code": "en"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ada"}]}],
    }
    status, body = await send(http, sandbox, {"type": "template", "template": template})
    assert status == 200
    await receiver.status(body["messages"][0]["id"], "delivered")
    assert (await history(http, sandbox))["window_open"] is False
    reply = await client_says(http, sandbox, {"text": "I'm back"})
    await receiver.message(reply["id"])
    status, body = await send(http, sandbox, {"type": "text", "text": {"body": "Welcome back"}})
    await receiver.status(body["messages"][0]["id"], "delivered")


# --------------------------------------------------------------------------- throughput and faults


async def test_throughput_limit_answers_130429_and_pair_limit_131056(http: aiohttp.ClientSession) -> None:
    async with WhatsAppSandbox(
        access_token=TOKEN,
        app_secret=SECRET,
        numbers=[NUMBER],
        throughput_limits=True,
        throughput_mps=5,
        pair_rate_burst=2,
    ) as sb:
        results = []
        for i in range(6):
            results.append(
                await send(
                    http,
                    sb,
                    {
                        "type": "template",
                        "template": {"name": "conversation_reopen", "language": {"code": "en"}},
                    },
                    to=f"1555000{i:04d}",
                )
            )
        assert [s for s, _ in results[:5]] == [200] * 5
        status, body = results[5]
        error = graph_error(body)
        assert status == 400 and error["code"] == 130429 and error["error_subcode"] == 2494055
        assert error["message"] == "(#130429) Rate limit hit"
        assert error["error_data"] == {
            "messaging_product": "whatsapp",
            "details": "Cloud API message throughput has been reached.",
        }
        sb.limiter.mps = 1000
        pair = [
            await send(
                http,
                sb,
                {"type": "template", "template": {"name": "conversation_reopen", "language": {"code": "en"}}},
                to="15559990000",
            )
            for _ in range(3)
        ]
        assert [s for s, _ in pair] == [200, 200, 400]
        assert graph_error(pair[2][1])["code"] == 131056


async def test_injected_faults_fail_the_next_calls(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    await open_window(http, sandbox, receiver)
    status, plan = await control(
        http, sandbox, "POST", "/control/faults", json={"path": "messages", "count": 2, "code": 130429}
    )
    assert status == 200 and plan["remaining"] == 2 and plan["status"] == 400
    status, body = await upload(http, sandbox, PNG, "image/png")
    assert status == 200  # media calls are not covered by path "messages"
    for _ in range(2):
        status, body = await send(http, sandbox, {"type": "text", "text": {"body": "x"}})
        assert status == 400 and graph_error(body)["code"] == 130429
    status, body = await send(http, sandbox, {"type": "text", "text": {"body": "x"}})
    assert status == 200
    await control(http, sandbox, "POST", "/control/faults", json={"path": "*", "count": 1, "code": 131000})
    status, body = await graph(http, sandbox, "GET", "2001/message_templates")
    assert status == 500 and graph_error(body)["code"] == 131000
    status, body = await control(http, sandbox, "POST", "/control/faults", json={"path": "bogus", "count": 1})
    assert status == 400


# --------------------------------------------------------------------------- media URLs


async def test_media_url_expires_after_five_minutes_of_sandbox_clock(
    sandbox: WhatsAppSandbox, http: aiohttp.ClientSession
) -> None:
    _, uploaded = await upload(http, sandbox, PNG, "image/png")
    status, info = await graph(http, sandbox, "GET", uploaded["id"])
    assert status == 200
    assert info["messaging_product"] == "whatsapp" and info["mime_type"] == "image/png"
    assert info["sha256"] == hashlib.sha256(PNG).hexdigest() and info["file_size"] == len(PNG)
    assert info["url"].startswith(f"{sandbox.url}/media-download/")
    async with http.get(info["url"], headers=auth()) as response:
        assert response.status == 200 and await response.read() == PNG
    sandbox.advance_clock(5 * 60 + 1)
    async with http.get(info["url"], headers=auth()) as response:
        assert response.status == 404
    _, fresh = await graph(http, sandbox, "GET", uploaded["id"])
    async with http.get(fresh["url"], headers=auth()) as response:
        assert response.status == 200
    status, body = await graph(http, sandbox, "DELETE", uploaded["id"])
    assert (status, body) == (200, {"success": True})
    status, body = await graph(http, sandbox, "GET", uploaded["id"])
    assert status == 400 and graph_error(body)["code"] == 100


# --------------------------------------------------------------------------- delivery


async def test_webhook_retries_after_500_without_loss_or_reordering(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.fail_next = 2
    ids = [(await client_says(http, sandbox, {"text": f"message {i}"}))["id"] for i in range(3)]
    await receiver.wait_for(lambda: len(receiver.messages()) >= 3)
    assert [m["id"] for m in receiver.messages()] == ids
    assert [p["answered"] for p in receiver.posts] == [500, 500, 200, 200, 200]
    assert receiver.posts[0]["raw"] == receiver.posts[2]["raw"]  # the same bytes, retried
    status, log = await control(http, sandbox, "GET", "/control/deliveries")
    first = log["deliveries"][0]
    assert first["attempts"] == 3 and first["last_status"] == 200 and first["delivered"] is True
    assert first["payload"]["entry"][0]["changes"][0]["value"]["messages"][0]["id"] == ids[0]
    assert log["pending"] == 0 and log["subscribed"]["url"].endswith("/webhook")


async def test_redelivery_sends_delivered_payloads_again(
    sandbox: WhatsAppSandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    answer = await client_says(http, sandbox, {"text": "deliver me twice"})
    original = await receiver.post_for(answer["id"])
    index = next(d["index"] for d in sandbox.deliveries() if d.get("id") == answer["id"])
    status, body = await control(http, sandbox, "POST", "/control/redeliver", json={"since": index})
    assert (status, body) == (200, {"redelivered": 1})
    await receiver.wait_for(lambda: sum(p["raw"] == original["raw"] for p in receiver.accepted) == 2)
    copies = [d for d in sandbox.deliveries(include_payload=False) if d.get("redelivery_of") == index]
    assert len(copies) == 1 and copies[0]["delivered"] is True


# --------------------------------------------------------------------------- control API


async def test_control_api_refusals(sandbox: WhatsAppSandbox, http: aiohttp.ClientSession) -> None:
    status, body = await control(
        http, sandbox, "POST", "/client/15550002222/messages", json={"text": "no name"}
    )
    assert status == 400 and "name" in body["error"]
    status, body = await control(
        http, sandbox, "POST", "/client/abc/messages", json={"name": "X", "text": "x"}
    )
    assert status == 400
    status, body = await control(
        http, sandbox, "POST", f"/client/{CLIENT}/messages", json={"name": "X", "text": "x", "to": "777"}
    )
    assert status == 404
    status, body = await control(
        http, sandbox, "POST", f"/client/{CLIENT}/messages", json={"name": "X", "text": "x", "location": {}}
    )
    assert status == 400 and "exactly one" in body["error"]
    status, body = await control(http, sandbox, "POST", "/control/clock", json={"advance_seconds": -1})
    assert status == 400
    status, body = await control(
        http, sandbox, "GET", f"/client/{CLIENT}/messages", params={"after": "wamid.x"}
    )
    assert status == 200 and body["messages"] == []  # no chat yet: the refused sends created none
    await client_says(http, sandbox, {"text": "now there is a chat"})
    status, body = await control(
        http, sandbox, "GET", f"/client/{CLIENT}/messages", params={"after": "wamid.x"}
    )
    assert status == 400 and "after" in body["error"]


async def test_cli_prints_one_ready_line_and_serves(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox.whatsapp",
        "--port",
        "0",
        "--access-token",
        TOKEN,
        "--app-secret",
        SECRET,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        ready = json.loads(line)
        assert ready["event"] == "ready" and ready["url"].startswith("http://127.0.0.1:")
        async with http.get(f"{ready['graph_url']}/1001", headers=auth()) as response:
            assert response.status == 200 and (await response.json())["id"] == "1001"
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
