"""Hostile input against the LINE webhook: the real connector's listener on a loopback port (in
a background event loop) against the in-test Messaging API stub, with a recorder standing in
for the core's inbound pipeline. Forged or unsigned requests are refused (403) before anything
is parsed, signed garbage is a clear 400, no signed payload of any shape makes the listener
answer 5xx or stop serving, and a redelivered event is handed to the core once."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.events import RemoteEvent, RemoteEventKind
from bridge.networks.line.connector import LineConnector
from bridge.networks.line.webhook import HandledEvents
from sandbox.homeserver import free_port
from tests.test_line_sender import BOT, SECRET, USER, LineStub, line_config

PATH = "/line/webhook"


class Listener:
    def __init__(self, media_dir: Any) -> None:
        self.port = free_port()
        self.stub = LineStub()
        self.events: list[RemoteEvent] = []
        self.failing = False
        self.loop = asyncio.new_event_loop()
        self.connector = LineConnector(line_config(self.stub, self.port), media_dir=media_dir)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def start(self) -> None:
        await self.stub.start()
        await self.connector.start(self.sink)

    async def stop(self) -> None:
        await self.connector.stop()
        await self.stub.stop()

    async def sink(self, event: RemoteEvent, *, on_sent: Any = None) -> None:
        if self.failing:
            raise RuntimeError("the homeserver is away")
        self.events.append(event)

    def post(self, body: bytes, signature: str | None) -> int:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Line-Signature"] = signature
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{PATH}", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def payload(*events: dict[str, Any], destination: str = BOT) -> bytes:
    return json.dumps({"destination": destination, "events": list(events)}).encode()


def text_event(message_id: str, text: str, *, redelivery: bool = False, event_id: str | None = None) -> dict:
    return {
        "type": "message",
        "mode": "active",
        "timestamp": 1462629479859,
        "source": {"type": "user", "userId": USER},
        "webhookEventId": event_id or f"01FZ74A0TDDPYRVKNK77X{message_id[-5:]:0>5}",
        "deliveryContext": {"isRedelivery": redelivery},
        "replyToken": secrets.token_hex(16),
        "message": {"id": message_id, "type": "text", "quoteToken": "q", "text": text},
    }


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    lst = Listener(tmp_path_factory.mktemp("line-media"))
    thread = threading.Thread(target=lst.loop.run_forever, daemon=True)
    thread.start()
    lst.run(lst.start())
    yield lst
    lst.run(lst.stop())
    lst.loop.call_soon_threadsafe(lst.loop.stop)
    thread.join(10)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
#: Values LINE's fields could plausibly be confused with, mixed into real event shapes.
field_values = json_values | st.sampled_from(
    ["user", "group", "room", "text", "image", USER, "C" + "0" * 32, "1"]
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_a_forged_signature_is_refused_before_the_body_is_parsed(listener: Listener) -> None:
    before = len(listener.events)
    body = payload(text_event("900001", "hi"))
    assert listener.post(body, None) == 403
    assert listener.post(body, sign(body, secret="f" * 32)) == 403
    assert listener.post(body, sign(body + b" ")) == 403
    # Not even JSON, yet 403, not 400: nothing is parsed before the signature holds.
    assert listener.post(b"{not json", sign(b"{not json", secret="f" * 32)) == 403
    assert len(listener.events) == before


@FUZZ
@given(
    body=st.binary(max_size=2000),
    signature=st.none()
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
    | st.just(base64.b64encode(b"\0" * 32).decode()),
)
def test_unsigned_or_forged_requests_are_refused(
    listener: Listener, body: bytes, signature: str | None
) -> None:
    before = len(listener.events)
    assert listener.post(body, signature) == 403
    assert len(listener.events) == before


@FUZZ
@given(body=st.binary(max_size=500) | st.text(max_size=200).map(str.encode))
def test_signed_garbage_is_a_clear_400(listener: Listener, body: bytes) -> None:
    try:
        text = body.decode("utf-8")
    except UnicodeError:
        assert listener.post(body, sign(body)) == 403  # LINE signs UTF-8 text: this is no signature
        return
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    status = listener.post(body, sign(body))
    if isinstance(parsed, dict) and isinstance(parsed.get("events"), list):
        assert status == 200
    else:
        assert status == 400


@FUZZ
@given(events=st.lists(json_values, max_size=4), destination=st.sampled_from([BOT, "U" + "9" * 32, None]))
def test_signed_payloads_of_any_shape_never_fail_the_listener(
    listener: Listener, events: list, destination: str | None
) -> None:
    body = json.dumps({"destination": destination, "events": events}).encode()
    assert listener.post(body, sign(body)) == 200


@FUZZ
@given(
    kind=st.sampled_from(
        [
            "message",
            "unsend",
            "follow",
            "unfollow",
            "join",
            "leave",
            "memberJoined",
            "memberLeft",
            "messageEdited",
            "postback",
        ]
    ),
    message_type=st.sampled_from(["text", "image", "video", "audio", "file", "location", "sticker", "x"]),
    replacements=st.dictionaries(
        st.sampled_from(
            [
                "source",
                "timestamp",
                "webhookEventId",
                "deliveryContext",
                "mode",
                "replyToken",
                "message",
                "unsend",
                "joined",
                "left",
            ]
        ),
        field_values,
        max_size=3,
    ),
    message_fields=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "text",
                "latitude",
                "duration",
                "fileName",
                "fileSize",
                "keywords",
                "contentProvider",
                "quotedMessageId",
            ]
        ),
        field_values,
        max_size=3,
    ),
)
def test_real_event_shapes_with_hostile_fields_never_fail_the_listener(
    listener: Listener, kind: str, message_type: str, replacements: dict, message_fields: dict
) -> None:
    event = text_event("900100", "hi", event_id=secrets.token_hex(8))
    event["type"] = kind
    event["message"] = {**event["message"], "type": message_type, **message_fields}
    event["unsend"] = {"messageId": "900100"}
    event["joined"] = event["left"] = {"members": [{"type": "user", "userId": USER}]}
    event.update(replacements)
    body = payload(event)
    assert listener.post(body, sign(body)) == 200


def test_a_redelivered_event_is_handed_over_once(listener: Listener) -> None:
    before = len(listener.events)
    event = text_event("900200", "only once")
    body = payload(event)
    assert listener.post(body, sign(body)) == 200
    again = copy.deepcopy(event)
    again["deliveryContext"]["isRedelivery"] = True
    again["replyToken"] = "another-token"
    body = payload(again)
    assert listener.post(body, sign(body)) == 200
    texts = [e.text.body for e in listener.events[before:] if e.text]
    assert texts == ["only once"]


def test_a_failure_answers_500_and_the_redelivery_is_handled(listener: Listener) -> None:
    before = len(listener.events)
    body = payload(text_event("900300", "when the homeserver is back"))
    listener.failing = True
    try:
        assert listener.post(body, sign(body)) == 500
    finally:
        listener.failing = False
    assert len(listener.events) == before
    redelivered = json.loads(body)
    redelivered["events"][0]["deliveryContext"]["isRedelivery"] = True
    body = json.dumps(redelivered).encode()
    assert listener.post(body, sign(body)) == 200
    assert [e.message_id for e in listener.events[before:]] == ["900300"]


def test_another_destination_and_the_consoles_verify_call_are_answered_200(listener: Listener) -> None:
    before = len(listener.events)
    body = payload(text_event("900400", "for someone else"), destination="U" + "9" * 32)
    assert listener.post(body, sign(body)) == 200
    verify = payload()
    assert listener.post(verify, sign(verify)) == 200
    assert len(listener.events) == before


def test_a_real_message_still_gets_through_after_the_fuzzing(listener: Listener) -> None:
    body = payload(text_event("900500", "still here"))
    assert listener.post(body, sign(body)) == 200
    event = listener.events[-1]
    assert (
        event.kind is RemoteEventKind.MESSAGE and event.text is not None and event.text.body == "still here"
    )
    assert event.sender.display_name == "Taro Yamada"  # from the profile endpoint


def test_handled_events_forget_the_oldest() -> None:
    handled = HandledEvents(size=2)
    for key in ("a", "b", "c"):
        handled.add(key)
    assert "a" not in handled and "b" in handled and "c" in handled
