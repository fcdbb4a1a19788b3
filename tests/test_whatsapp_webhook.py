"""Hostile input against the WhatsApp webhook, fuzzed with Hypothesis: the real connector's
listener on a loopback port (in a background event loop), with a recorder standing in for the
core's inbound pipeline. Every case: no 5xx, a clear 4xx for anything unsigned, forged or
malformed, nothing handed to the core for a refused request, and the listener still serving."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.events import RemoteEvent
from bridge.networks.whatsapp.config import WhatsAppConfig, WhatsAppNumber
from bridge.networks.whatsapp.connector import WhatsAppConnector
from sandbox.homeserver import free_port

APP_SECRET = secrets.token_urlsafe(32)
VERIFY = secrets.token_urlsafe(24)
PATH = "/whatsapp/webhook"


class Listener:
    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[RemoteEvent] = []
        self.loop = asyncio.new_event_loop()
        config = WhatsAppConfig(
            graph_url="http://127.0.0.1:9/v21.0",
            app_secret=APP_SECRET,
            verify_token=VERIFY,
            listen_host="127.0.0.1",
            listen_port=self.port,
            path=PATH,
            public_url="",
            numbers=(WhatsAppNumber("1001", "t" * 32),),
        )
        self.connector = WhatsAppConnector(config)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def sink(self, event: RemoteEvent) -> None:
        self.events.append(event)

    def post(self, body: bytes, signature: str | None) -> int:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{PATH}", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    lst = Listener()
    thread = threading.Thread(target=lst.loop.run_forever, daemon=True)
    thread.start()
    lst.run(lst.connector.start(lst.sink))
    yield lst
    lst.run(lst.connector.stop())
    lst.loop.call_soon_threadsafe(lst.loop.stop)
    thread.join(10)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(
    body=st.binary(max_size=2000),
    signature=st.none()
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
    | st.just("sha256=" + "0" * 64),
)
def test_unsigned_or_forged_requests_are_refused_before_parsing(
    listener: Listener, body: bytes, signature: str | None
) -> None:
    before = len(listener.events)
    assert listener.post(body, signature) == 403
    assert len(listener.events) == before


@FUZZ
@given(value=json_values)
def test_signed_payloads_of_any_shape_never_fail_the_listener(listener: Listener, value: object) -> None:
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
        }
    ).encode()
    assert listener.post(body, sign(body)) == 200


@FUZZ
@given(body=st.binary(max_size=500))
def test_signed_garbage_is_a_clear_400(listener: Listener, body: bytes) -> None:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    status = listener.post(body, sign(body))
    if isinstance(parsed, dict) and isinstance(parsed.get("entry"), list):
        assert status == 200
    else:
        assert status == 400


def test_a_real_message_still_gets_through_after_the_fuzzing(listener: Listener) -> None:
    message = {
        "from": "4915",
        "id": f"wamid.{secrets.token_hex(8)}",
        "timestamp": "1700000000",
        "type": "text",
        "text": {"body": "<b>hi</b>"},
    }
    body = json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "metadata": {"phone_number_id": "1001"},
                                "contacts": [{"profile": {"name": "<script>x</script>"}, "wa_id": "4915"}],
                                "messages": [message],
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()
    assert listener.post(body, sign(body)) == 200
    event = listener.events[-1]
    assert event.message_id == message["id"]
    assert (
        event.text is not None
        and event.text.body == "<b>hi</b>"
        and (event.text.html is None or "<b>" not in event.text.html)
    )
    assert listener.post(body, sign(body)) == 200  # a redelivery
    assert [e.message_id for e in listener.events].count(message["id"]) == 1
