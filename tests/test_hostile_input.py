"""Hostile input against the two network-facing endpoints, fuzzed in-process with Hypothesis.

* the appservice endpoint (``appservice.server.HouselineAppService``): what the homeserver — or
  anyone who can reach the port — sends; authenticated with the ``hs_token``;
* the Telegram webhook (``bridge.networks.telegram.webhook.WebhookServer``): what Telegram — or
  anyone on the internet behind the reverse proxy — sends; authenticated with the secret header.

Each server runs once per module on a free loopback port, with recorders in place of the
bridge's handlers. Every case checks the same four things: no 5xx, a clear 4xx (with the
endpoint's JSON error body where the endpoint answers JSON), the handler not called for a
refused request, and the server still serving a valid request afterwards.

Found by this suite and fixed in ``appservice/server.py`` (the tests below are now their
regression tests): a body nested past the recursion limit answered a bare 500; an event nested
~500 levels deep, with ``"type": null``, with a list/object ``room_id``/``state_key`` on
member/power-level state, or with non-object ``content`` failed the whole transaction (500,
retried by the homeserver forever) instead of being skipped.

Fixed since, kept as regression tests:

* BUG-5  a body over the limit gets aiohttp's text/plain 413, not a Matrix JSON error
* BUG-6  an hs_token holding a lone surrogate makes ``token_matches`` raise

See docs/security.md, "Known gaps".
"""

from __future__ import annotations

import asyncio
import copy
import io
import itertools
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from appservice.strands import StrandGuard
from appservice.server import MAX_TRANSACTION_BYTES, HouselineAppService, token_matches
from bridge.networks.telegram.config import TelegramWebhookConfig
from bridge.networks.telegram.webhook import MAX_BODY, SECRET_HEADER, WebhookServer

BOUND = 10.0  # seconds; anything slower than this is a hang, not a slow answer
AS_TOKEN = secrets.token_urlsafe(48)
HS_TOKEN = secrets.token_urlsafe(48)
SECRET = secrets.token_urlsafe(32)  # A-Z a-z 0-9 _ -: what config validation allows
HOOK_PATH = "/telegram/webhook"
TXN = "/_matrix/app/v1/transactions/"
JSON_CT = "application/json"

_serial = itertools.count(1)


def fuzz(n: int):
    """Hypothesis settings for one fuzzer: n examples, no deadline (the loop is shared), and no
    example database written into the repository."""
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# =========================================================================== plumbing


@dataclass
class Recorder:
    """Stands in for the bridge's handler: records what it was given, can be made to fail."""

    calls: list[Any] = field(default_factory=list)
    fail_next: int = 0
    gate: asyncio.Event | None = None
    started: int = 0

    async def __call__(self, payload: Any) -> None:
        self.started += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("the core could not commit")
        # A deep copy: what the handler was given, not what the server may do with it later.
        self.calls.append(copy.deepcopy(payload))

    def clear(self) -> None:
        self.calls.clear()
        self.fail_next = 0
        self.gate = None
        self.started = 0


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    @property
    def data(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:  # short, for assertion messages
        return f"Answer({self.status}, {self.content_type!r}, {self.body[:200]!r})"


async def raw_request(
    port: int, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> Answer:
    """One HTTP/1.1 request written byte for byte: header values no client library would send
    (invalid UTF-8, encoded surrogates, bytes above 0x7f) go on the wire as they are."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %d\r\n" % (
            method,
            target,
            len(body),
        )
        for name, value in headers:
            head += name + b": " + value + b"\r\n"
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    content_type = ""
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            content_type = value.strip().decode("latin-1").split(";")[0]
    return Answer(status, content_type, payload)


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.002)


async def _answer(response: aiohttp.ClientResponse) -> Answer:
    return Answer(response.status, response.content_type, await response.read())


@dataclass
class AppserviceUnderTest:
    az: HouselineAppService
    events: Recorder
    ephemeral: Recorder
    http: aiohttp.ClientSession
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def clear(self) -> None:
        self.events.clear()
        self.ephemeral.clear()

    async def put(
        self,
        txn_id: str | None,
        body: bytes | Any,
        *,
        token: str | None = HS_TOKEN,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        sent.setdefault("Content-Type", JSON_CT)
        url = self.base + TXN + quote(txn_id if txn_id is not None else new_txn(), safe="")
        async with self.http.put(url, data=io.BytesIO(body), headers=sent) as response:
            return await _answer(response)

    async def assert_alive(self) -> None:
        """A valid transaction afterwards is answered 200 and handed to the handler, once."""
        self.clear()
        event = message_event(body="still there?")
        answer = await self.put(new_txn(), {"events": [event]})
        assert answer.status == 200 and answer.data == {}, answer
        assert self.events.calls == [[event]]
        self.clear()


@dataclass
class WebhookUnderTest:
    server: WebhookServer
    updates: Recorder
    http: aiohttp.ClientSession

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    def clear(self) -> None:
        self.updates.clear()

    async def post(
        self, body: bytes | Any, *, secret: str | None = SECRET, headers: dict[str, str] | None = None
    ) -> Answer:
        sent = dict(headers or {})
        if secret is not None:
            sent[SECRET_HEADER] = secret
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        sent.setdefault("Content-Type", JSON_CT)
        async with self.http.post(self.url, data=io.BytesIO(body), headers=sent) as response:
            return await _answer(response)

    async def assert_alive(self) -> None:
        self.clear()
        upd = tg_update(new_update_id(), "still there?")
        answer = await self.post(upd)
        assert answer.status == 200, answer
        assert self.updates.calls == [upd]
        self.clear()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def appservice() -> AsyncIterator[AppserviceUnderTest]:
    az = HouselineAppService(
        server="http://127.0.0.1:9",
        domain="localhost",
        as_token=AS_TOKEN,
        hs_token=HS_TOKEN,
        bot_localpart="houseline",
        id="houseline",
    )
    events, ephemeral = Recorder(), Recorder()
    az.events_handler = events
    az.ephemeral_handler = ephemeral
    # What az.start() does for the HTTP side, minus the homeserver client it would also build.
    runner = web.AppRunner(az.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as http:
        try:
            yield AppserviceUnderTest(az, events, ephemeral, http, port)
        finally:
            await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def webhook() -> AsyncIterator[WebhookUnderTest]:
    updates = Recorder()
    config = TelegramWebhookConfig(
        public_url="https://bridge.example.com/telegram/webhook",
        listen_host="127.0.0.1",
        listen_port=0,
        path=HOOK_PATH,
        secret_token=SECRET,
    )
    server = WebhookServer(config, handle=updates, shutdown_grace=1.0)
    await server.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as http:
        try:
            yield WebhookUnderTest(server, updates, http)
        finally:
            await server.stop()


# =========================================================================== builders


def new_txn() -> str:
    return f"hostile-{next(_serial)}-{secrets.token_hex(4)}"


def new_update_id() -> int:
    return 2**53 + next(_serial)  # above every drawn update_id (see update_ids)


def message_event(*, body: str = "hello", event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    event = {
        "type": "m.room.message",
        "room_id": "!portal:localhost",
        "sender": "@employee:localhost",
        "event_id": event_id or f"$hostile{next(_serial)}",
        "origin_server_ts": 1_700_000_000_000,
        "content": {"msgtype": "m.text", "body": body},
    }
    event.update(extra)
    return event


def tg_update(update_id: int, text: str = "hello", first_name: str = "Ada") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id % 1_000_000,
            "date": 1_700_000_000,
            "chat": {"id": 515151, "type": "private", "first_name": first_name},
            "from": {"id": 515151, "is_bot": False, "first_name": first_name},
            "text": text,
        },
    }


_STATE_STORE_TYPES = ("m.room.member", "m.room.power_levels", "m.room.encryption", "m.room.create")


def _events_of(body: Any) -> list[Any]:
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        return body["events"]
    return []


def assert_matrix_error(answer: Answer, status: int, errcode: str) -> None:
    assert answer.status == status, answer
    assert answer.content_type == JSON_CT, answer
    data = answer.data
    assert data["errcode"] == errcode and isinstance(data["error"], str) and data["error"], answer


def assert_webhook_error(answer: Answer, status: int) -> None:
    assert answer.status == status, answer
    assert answer.content_type == JSON_CT, answer
    data = answer.data
    assert data["ok"] is False and isinstance(data["error"], str) and data["error"], answer


# =========================================================================== strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["m.room.member", "m.room.power_levels", "m.room.create", "m.room.encryption", "", "@x:localhost"]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
EVENT_FIELDS = (
    "type",
    "room_id",
    "sender",
    "event_id",
    "origin_server_ts",
    "content",
    "state_key",
    "unsigned",
    "redacts",
    "prev_content",
)
CONTENT_KEYS = (
    "msgtype",
    "body",
    "format",
    "formatted_body",
    "m.relates_to",
    "m.new_content",
    "membership",
    "displayname",
    "url",
    "info",
    "users",
    "name",
)

HOSTILE_TEXTS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(document.cookie)>",
    '"><svg/onload=alert(1)>',
    "</body></html><iframe src=javascript:alert(1)>",
    "<a href=\"javascript:alert('x')\">click</a>",
    "{{7*7}} ${7*7} <%= 7*7 %>",
    "'; DROP TABLE portals; --",
    "\u202eevil\u202c \u200b\u200d\ufeff",
    "<mx-reply><blockquote>forged quote</blockquote></mx-reply>real text",
    "&lt;script&gt; &amp;amp; &#x3C;b&#x3E;",
    "\x00\x01\x1b[31mred\x1b[0m",
    "A" * 70_000,
]
hostile_text = (
    st.sampled_from(HOSTILE_TEXTS)
    | st.text(max_size=200)
    | st.text(alphabet="<>&\"'/=;:() abcscriptonerror", max_size=80)
)


@st.composite
def valid_transactions(draw) -> dict[str, Any]:
    events = [
        message_event(body=draw(st.text(max_size=30)), event_id=f"$fuzz{i}")
        for i in range(draw(st.integers(0, 4)))
    ]
    return {"events": events}


@st.composite
def mutated_json(draw) -> bytes:
    """A valid transaction's bytes, cut, spliced with junk, shortened or bit-flipped."""
    data = bytearray(json.dumps(draw(valid_transactions())).encode())
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cut", "insert", "delete", "flip"]))
        pos = draw(st.integers(0, len(data)))
        if op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif data:
            i = min(pos, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


junk_json_texts = st.sampled_from(
    [
        b"",
        b" ",
        b"{",
        b"}",
        b"[",
        b"null",
        b"true",
        b"0",
        b'"events"',
        b"{'events': []}",
        b'{"events": [}',
        b'{"events": [],}',
        b'\xef\xbb\xbf{"events": []}',
        b'{"events": [] \x00}',
        b"\xff\xfe{\x00}\x00",
        b'{"events": ["\\ud800"]}',
        b'{"events": [1e999999]}',
        b'{"events": [' + b"9" * 5000 + b"]}",
        b'{"events": [-Infinity]}',
        b"[[[[[[[[[[[[[[[[[[[[",
    ]
)
any_body = st.one_of(
    st.binary(max_size=300),
    mutated_json(),
    junk_json_texts,
    json_values.map(lambda v: json.dumps(v).encode()),
)


@st.composite
def oddly_typed_transactions(draw) -> tuple[Any, list[dict[str, Any]]]:
    """A transaction where one to three parts have the wrong type (or an arbitrary value), and
    the well-formed events in it that must still reach the handler."""
    fine: list[dict[str, Any]] = [
        message_event(body=f"fine {i}", event_id=f"$fine{i}") for i in range(draw(st.integers(0, 3)))
    ]
    events: list[Any] = list(fine)
    body: Any = {"events": events}
    where = draw(st.sampled_from(["body", "events", "event", "field", "content", "content_key", "ephemeral"]))
    odd = draw(json_values)
    if where == "body":
        return odd, []
    if where == "events":
        body["events"] = odd
        return body, []
    if where == "ephemeral":
        body[draw(st.sampled_from(["ephemeral", "de.sorunome.msc2409.ephemeral"]))] = odd
        return body, fine
    target: Any = message_event(body="odd one", event_id="$odd")
    if where == "event":
        target = odd
    elif where == "field":
        for name, value in draw(
            st.dictionaries(st.sampled_from(EVENT_FIELDS), json_values, min_size=1, max_size=3)
        ).items():
            target[name] = value
        for name in draw(st.sets(st.sampled_from(EVENT_FIELDS), max_size=2)):
            target.pop(name, None)
    elif where == "content":
        target["content"] = odd
    else:
        target["content"][draw(st.sampled_from(CONTENT_KEYS))] = odd
    events.insert(draw(st.integers(0, len(events))), target)
    return body, fine


# =========================================================================== appservice: bodies


@fuzz(1500)
@given(body=any_body)
async def test_as_arbitrary_bytes_are_400_or_200_never_5xx(
    appservice: AppserviceUnderTest, body: bytes
) -> None:
    """Model: what json.loads makes of the bytes decides the answer."""
    try:
        parsed = json.loads(body)
    except RecursionError:
        assume(False)  # nesting is its own test
    except ValueError:  # UnicodeDecodeError is a ValueError too
        parsed = ValueError
    appservice.clear()
    answer = await appservice.put(new_txn(), body)
    if parsed is ValueError:
        assert_matrix_error(answer, 400, "M_NOT_JSON")
        assert appservice.events.calls == []
    elif not isinstance(parsed, dict) or not isinstance(parsed.get("events", []), list):
        assert_matrix_error(answer, 400, "M_BAD_JSON")
        assert appservice.events.calls == []
    else:
        assert answer.status == 200 and answer.data == {}, answer
        sent = [e for e in parsed.get("events", []) if isinstance(e, dict)]
        for batch in appservice.events.calls:
            assert all(e in sent for e in batch)


@fuzz(2000)
@given(case=oddly_typed_transactions())
async def test_as_wrong_types_are_refused_or_skipped_never_5xx(
    appservice: AppserviceUnderTest, case: tuple[Any, list]
) -> None:
    """events not a list → 400; an event that is not an object, or that cannot be decoded, is
    skipped; the well-formed events of the same transaction still reach the handler, unchanged
    and in order."""
    body, fine = case
    appservice.clear()
    answer = await appservice.put(new_txn(), body)
    assert answer.status < 500, answer
    if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
        assert_matrix_error(answer, 400, "M_BAD_JSON")
        assert appservice.events.calls == [] and appservice.ephemeral.calls == []
        return
    assert answer.status == 200 and answer.data == {}, answer
    events = body.get("events", [])
    received = [e for batch in appservice.events.calls for e in batch]
    assert len(appservice.events.calls) <= 1
    assert all(isinstance(e, dict) and e in events for e in received)
    assert [e for e in received if e in fine] == fine
    for batch in appservice.ephemeral.calls:
        assert all(isinstance(e, dict) for e in batch)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/xml",
        "\u00e9/\u00e9".encode().decode("latin-1"),
    ],
)
async def test_as_content_type_is_not_trusted_the_body_is(
    appservice: AppserviceUnderTest, content_type: str | None
) -> None:
    """The endpoint ignores Content-Type and parses the body as JSON: a valid transaction under a
    wrong type is handled, junk under application/json is still refused."""
    appservice.clear()
    event = message_event()
    headers = {"Authorization": f"Bearer {HS_TOKEN}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    answer = await raw_request(
        appservice.port,
        b"PUT",
        (TXN + new_txn()).encode(),
        [(k.encode(), v.encode("latin-1")) for k, v in headers.items()],
        json.dumps({"events": [event]}).encode(),
    )
    assert answer.status == 200, answer
    assert appservice.events.calls == [[event]]
    appservice.clear()
    assert_matrix_error(
        await appservice.put(new_txn(), b"<events/>", headers={"Content-Type": content_type or JSON_CT}),
        400,
        "M_NOT_JSON",
    )
    assert appservice.events.calls == []
    await appservice.assert_alive()


async def test_as_empty_body_is_400(appservice: AppserviceUnderTest) -> None:
    appservice.clear()
    assert_matrix_error(await appservice.put(new_txn(), b""), 400, "M_NOT_JSON")
    assert appservice.events.calls == []
    await appservice.assert_alive()


@fuzz(150)
@given(
    prefix=st.text(max_size=20),
    bad=st.sampled_from(
        [
            b"\xff",
            b"\x80",
            b"\xc0\x80",
            b"\xc1\xbf",
            b"\xe2\x82",
            b"\xf4\x90\x80\x80",
            b"\xf8\x88\x80\x80\x80",
            b"\xfe\xff",
        ]
    )
    | st.binary(min_size=1, max_size=6).map(lambda b: b + b"\xff"),
)
async def test_as_invalid_utf8_is_400(appservice: AppserviceUnderTest, prefix: str, bad: bytes) -> None:
    body = (
        b'{"events": [{"type": "m.room.message", "content": {"body": "'
        + json.dumps(prefix)[1:-1].encode()
        + bad
        + b'"}}]}'
    )
    appservice.clear()
    assert_matrix_error(await appservice.put(new_txn(), body), 400, "M_NOT_JSON")
    assert appservice.events.calls == []


@pytest.mark.parametrize("encoded", [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\\ud800", b"\\udfff\\ud800"])
async def test_as_lone_surrogates_are_passed_as_data(appservice: AppserviceUnderTest, encoded: bytes) -> None:
    """The one kind of invalid UTF-8 the endpoint lets through: json.loads(bytes) decodes with
    'surrogatepass', so UTF-8-encoded surrogates (like the JSON escape \\ud800, which is valid
    JSON) arrive as lone surrogates in a str. Not a crash here; the handler gets them as data."""
    appservice.clear()
    event = message_event(body="placeholder")
    raw = json.dumps({"events": [event]}).encode().replace(b"placeholder", b"x" + encoded + b"y")
    answer = await appservice.put(new_txn(), raw)
    assert answer.status == 200, answer
    (batch,) = appservice.events.calls
    body = batch[0]["content"]["body"]
    assert body.startswith("x") and body.endswith("y") and any(0xD800 <= ord(c) <= 0xDFFF for c in body)
    await appservice.assert_alive()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-0.0"])
async def test_as_nan_and_infinity_do_not_crash(appservice: AppserviceUnderTest, literal: str) -> None:
    """Python's json accepts NaN/Infinity (not JSON); the endpoint does too. A homeserver never
    sends them (canonical JSON has no floats); the point here is that nothing breaks: refused with
    a JSON 400, or handed over as data."""
    appservice.clear()
    event = message_event()
    raw = json.dumps({"events": [event]}).replace(
        '"origin_server_ts": 1700000000000', f'"origin_server_ts": {literal}'
    )
    raw = raw.replace('"body": "hello"', f'"body": "hello", "weird": {literal}')
    answer = await appservice.put(new_txn(), raw.encode())
    assert answer.status < 500, answer
    if answer.status == 200:
        (batch,) = appservice.events.calls
        assert len(batch) <= 1
        if batch:
            weird = batch[0]["content"]["weird"]
            assert math.isnan(weird) if literal == "NaN" else weird == float(literal)
    else:
        assert_matrix_error(
            answer, 400, "M_BAD_JSON" if answer.data.get("errcode") == "M_BAD_JSON" else "M_NOT_JSON"
        )
        assert appservice.events.calls == []
    await appservice.assert_alive()


@pytest.mark.parametrize(
    "raw, delivered",
    [
        ('{"events": "not a list", "events": [EV]}', True),  # last one wins, as in Python's json
        ('{"events": [EV], "events": "not a list"}', False),
        ('{"events": [EV], "events": []}', False),
        ('{"events": [EV], "ephemeral": 5, "ephemeral": [{"type": "m.typing"}]}', True),
    ],
)
async def test_as_duplicate_keys_are_read_one_consistent_way(
    appservice: AppserviceUnderTest, raw: str, delivered: bool
) -> None:
    appservice.clear()
    event = message_event()
    answer = await appservice.put(new_txn(), raw.replace("EV", json.dumps(event)).encode())
    assert answer.status < 500, answer
    if answer.status == 200:
        assert appservice.events.calls == ([[event]] if delivered else [])
    else:
        assert_matrix_error(answer, 400, "M_BAD_JSON")
        assert appservice.events.calls == []
    await appservice.assert_alive()


def _big(size: int) -> bytes:
    head = b'{"events": [{"type": "m.room.message", "content": {"body": "'
    tail = b'"}}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def _chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_as_oversized_transaction_is_413_and_not_handled(
    appservice: AppserviceUnderTest, chunked: bool
) -> None:
    appservice.clear()
    body = _big(MAX_TRANSACTION_BYTES + 1024)
    headers = {"Authorization": f"Bearer {HS_TOKEN}", "Content-Type": JSON_CT}
    data = _chunks(body) if chunked else io.BytesIO(body)
    async with appservice.http.put(appservice.base + TXN + new_txn(), data=data, headers=headers) as response:
        answer = await _answer(response)
    assert answer.status == 413, answer
    assert appservice.events.calls == []
    await appservice.assert_alive()


async def test_as_oversized_transaction_413_is_a_matrix_json_error(appservice: AppserviceUnderTest) -> None:
    answer = await appservice.put(new_txn(), _big(MAX_TRANSACTION_BYTES + 1024))
    assert_matrix_error(answer, 413, "M_TOO_LARGE")


async def test_as_body_just_under_the_limit_is_accepted(appservice: AppserviceUnderTest) -> None:
    appservice.clear()
    body = _big(MAX_TRANSACTION_BYTES - 16)
    answer = await appservice.put(new_txn(), body)
    assert answer.status == 200, answer
    # The event has no room_id/sender/event_id: mautrix cannot decode it, so it is skipped.
    assert all(len(batch) <= 1 for batch in appservice.events.calls)
    await appservice.assert_alive()


# --------------------------------------------------------------------- appservice: known crashers


def _deep(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


_DEEP_BODIES = {
    "arrays_1e5": ("[" * 100_000 + "]" * 100_000).encode(),
    "objects_1e5": ('{"a":' * 100_000 + "1" + "}" * 100_000).encode(),
    "events_1e5": ('{"events": [' + "[" * 100_000 + "]" * 100_000 + "]}").encode(),
}


def _deep_event(depth: int) -> dict[str, Any]:
    event = message_event(body="deep")
    event["content"]["nested"] = json.loads(_deep(depth))
    return event


_MALFORMED_EVENTS: dict[str, Any] = {
    "type null": message_event(type=None),
    "type number": message_event(type=5),
    "member with list room_id": message_event(
        type="m.room.member", state_key="@x:localhost", room_id=[], content={"membership": "join"}
    ),
    "member with list state_key": message_event(
        type="m.room.member", state_key=[1], content={"membership": "join"}
    ),
    "power_levels with object room_id": message_event(
        type="m.room.power_levels", state_key="", room_id={"a": 1}, content={}
    ),
    "encryption with list room_id": message_event(
        type="m.room.encryption", state_key="", room_id=[1], content={"algorithm": "x"}
    ),
    "content list": message_event(content=[1]),
    "content string": message_event(content="text"),
    "content number": message_event(content=5),
    "content true": message_event(content=True),
    "sender object": message_event(sender={"a": 1}),
}


@pytest.mark.parametrize("name", sorted(_DEEP_BODIES))
async def test_as_deeply_nested_body_is_400(appservice: AppserviceUnderTest, name: str) -> None:
    """Regression: json.loads' RecursionError used to escape as a bare text/plain 500."""
    appservice.clear()
    assert_matrix_error(await appservice.put(new_txn(), _DEEP_BODIES[name]), 400, "M_NOT_JSON")
    assert appservice.events.calls == []
    await appservice.assert_alive()


@pytest.mark.parametrize("depth", [300, 493, 700, 900])
async def test_as_deep_event_is_skipped_and_its_neighbours_handled(
    appservice: AppserviceUnderTest, depth: int
) -> None:
    """Regression: copy.deepcopy/Event.deserialize's RecursionError on an event nested ~490+ levels
    (about 1 KB of JSON) used to fail the whole transaction with 500, retried forever. Shallower
    ones are handed over; deeper ones are skipped; the neighbour always goes through."""
    appservice.clear()
    neighbour = message_event(body="neighbour")
    deep = _deep_event(depth)
    answer = await appservice.put(new_txn(), json.dumps({"events": [neighbour, deep]}).encode())
    assert answer.status == 200, answer
    (batch,) = appservice.events.calls
    assert batch[0] == neighbour and len(batch) <= 2
    await appservice.assert_alive()


@pytest.mark.parametrize("name", sorted(_MALFORMED_EVENTS))
async def test_as_malformed_event_is_skipped_and_its_neighbours_handled(
    appservice: AppserviceUnderTest, name: str
) -> None:
    """Regression: these used to raise outside the decoding try (AttributeError on a null type,
    TypeError in mautrix's state store on an unhashable room_id/state_key) or reach the bridge's
    handler with a non-object content that its command detection could not take; each made the
    whole transaction answer 500 and be retried forever. Now the one event is skipped."""
    appservice.clear()
    before, after = message_event(body="before"), message_event(body="after")
    answer = await appservice.put(new_txn(), {"events": [before, _MALFORMED_EVENTS[name], after]})
    assert answer.status == 200, answer
    assert appservice.events.calls == [[before, after]]
    await appservice.assert_alive()


# =========================================================================== appservice: tokens

_AUTHED_ROUTES = [
    (b"PUT", TXN + "t1"),
    (b"PUT", "/transactions/t1"),
    (b"GET", "/_matrix/app/v1/users/@telegram_1:localhost"),
    (b"GET", "/users/@telegram_1:localhost"),
    (b"GET", "/_matrix/app/v1/rooms/%23alias:localhost"),
    (b"GET", "/rooms/%23alias:localhost"),
    (b"POST", "/_matrix/app/v1/ping"),
    (b"GET", "/no/such/path"),
    (b"DELETE", TXN + "t1"),
]


async def test_as_only_the_two_probes_are_open_and_they_expose_nothing(
    appservice: AppserviceUnderTest,
) -> None:
    """Every route mautrix and Houseline registered, without a token: 401, except the liveness and
    readiness probes, which answer '{}' and a status."""
    appservice.clear()
    opened = []
    for route in appservice.az.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter", "").replace("{transaction_id}", "t").replace(
            "{user_id}", "@u:localhost"
        ).replace("{alias}", "%23a:localhost")
        answer = await raw_request(
            appservice.port,
            route.method.encode(),
            path.encode(),
            [],
            b'{"events": []}' if route.method in ("PUT", "POST") else b"",
        )
        if answer.status == 401:
            if route.method != "HEAD":  # a HEAD answer has no body
                assert_matrix_error(answer, 401, "M_UNAUTHORIZED")
        else:
            opened.append((route.method, path, answer.status, answer.body))
    assert sorted(opened) == [
        ("GET", "/_matrix/mau/live", 200, b"{}"),
        ("GET", "/_matrix/mau/ready", 500, b"{}"),  # not ready: the bridge sets az.ready after start
    ]
    assert appservice.events.calls == []


@pytest.mark.parametrize("method, path", _AUTHED_ROUTES)
async def test_as_missing_token_is_401_everywhere(
    appservice: AppserviceUnderTest, method: bytes, path: str
) -> None:
    appservice.clear()
    answer = await raw_request(
        appservice.port,
        method,
        path.encode(),
        [(b"Content-Type", b"application/json")],
        json.dumps({"events": [message_event()]}).encode(),
    )
    assert_matrix_error(answer, 401, "M_UNAUTHORIZED")
    assert appservice.events.calls == []


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/mau/live/../../../transactions/t",
        "/_matrix/mau/live%2F..%2F..%2F..%2Ftransactions%2Ft",
        "/_matrix/mau/live;/../../transactions/t",
        "/transactions/../_matrix/mau/live",
        "//_matrix/mau/live",
        "/_matrix/mau/live/",
        "/_matrix/mau/./live",
        "/%5Fmatrix/mau/live",
        "/_matrix/mau/ready/../../app/v1/transactions/t",
    ],
)
async def test_as_probe_paths_do_not_open_a_way_around_the_token(
    appservice: AppserviceUnderTest, path: str
) -> None:
    appservice.clear()
    answer = await raw_request(
        appservice.port, b"PUT", path.encode(), [], json.dumps({"events": [message_event()]}).encode()
    )
    assert 400 <= answer.status < 500, answer
    assert appservice.events.calls == []


# Authorization header values that must all be refused with 403 (the header is there).
_WRONG_AUTH_HEADERS = [
    b"",
    b"Bearer",
    b"Bearer ",
    b"Basic " + HS_TOKEN.encode(),
    b"Token " + HS_TOKEN.encode(),
    b"Bearer\t" + HS_TOKEN.encode(),  # the scheme ends at a space
    b"Bearer" + HS_TOKEN.encode(),
    b"Bearer " + HS_TOKEN[:-1].encode(),
    b"Bearer " + HS_TOKEN.encode() + b"x",
    b"Bearer " + HS_TOKEN.upper().encode() if HS_TOKEN.upper() != HS_TOKEN else b"Bearer X",
    b"Bearer " + HS_TOKEN.encode() + b" " + HS_TOKEN.encode(),
    b"Bearer " + AS_TOKEN.encode(),  # the other token
    b"Bearer \xff\xfe\xfd",
    b"Bearer \xed\xa0\x80",  # an encoded surrogate
    b"Bearer " + "\u00e9t\u00e9".encode(),
    b"Bearer " + HS_TOKEN[:-1].encode() + "\u00e9".encode(),
    b"Bearer " + b"x" * 8000,
]


@pytest.mark.parametrize("value", _WRONG_AUTH_HEADERS, ids=lambda v: repr(v[:24]))
async def test_as_wrong_authorization_header_is_403(appservice: AppserviceUnderTest, value: bytes) -> None:
    appservice.clear()
    answer = await raw_request(
        appservice.port,
        b"PUT",
        (TXN + new_txn()).encode(),
        [(b"Authorization", value)],
        json.dumps({"events": [message_event()]}).encode(),
    )
    assert_matrix_error(answer, 403, "M_FORBIDDEN")
    assert appservice.events.calls == []


async def test_as_oversized_authorization_header_is_refused_by_the_http_layer(
    appservice: AppserviceUnderTest,
) -> None:
    """Over aiohttp's 8190-byte header limit the parser refuses before any handler runs: a 4xx
    (plain text, from aiohttp itself), never the handler."""
    appservice.clear()
    answer = await raw_request(
        appservice.port,
        b"PUT",
        (TXN + new_txn()).encode(),
        [(b"Authorization", b"Bearer " + b"x" * 100_000)],
        json.dumps({"events": [message_event()]}).encode(),
    )
    assert 400 <= answer.status < 500, answer
    assert appservice.events.calls == []
    await appservice.assert_alive()


@pytest.mark.parametrize(
    "value",
    [b"Bearer " + HS_TOKEN.encode(), b"bearer " + HS_TOKEN.encode(), b"BEARER  " + HS_TOKEN.encode() + b"  "],
    ids=["Bearer", "bearer", "BEARER-padded"],
)
async def test_as_right_token_in_any_case_of_the_scheme_is_accepted(
    appservice: AppserviceUnderTest, value: bytes
) -> None:
    """RFC 7235: the scheme is case-insensitive; the token itself is compared exactly."""
    appservice.clear()
    event = message_event()
    answer = await raw_request(
        appservice.port,
        b"PUT",
        (TXN + new_txn()).encode(),
        [(b"Authorization", value)],
        json.dumps({"events": [event]}).encode(),
    )
    assert answer.status == 200, answer
    assert appservice.events.calls == [[event]]


@pytest.mark.parametrize(
    "query, accepted",
    [
        ("", False),
        ("?access_token=", False),
        ("?access_token=%FF", False),
        ("?access_token=%ED%A0%80", False),
        ("?access_token=" + HS_TOKEN + "%00", False),
        ("?access_token=" + HS_TOKEN[:-1], False),
        ("?access_token=x&access_token=" + HS_TOKEN, False),  # the first one counts
        ("?access_token=" + quote(HS_TOKEN, safe=""), True),
        ("?access_token=" + HS_TOKEN + "&access_token=x", True),
        ("?ACCESS_TOKEN=" + HS_TOKEN, False),
    ],
)
async def test_as_query_token(appservice: AppserviceUnderTest, query: str, accepted: bool) -> None:
    appservice.clear()
    event = message_event()
    answer = await raw_request(
        appservice.port,
        b"PUT",
        (TXN + new_txn() + query).encode(),
        [],
        json.dumps({"events": [event]}).encode(),
    )
    if accepted:
        assert answer.status == 200, answer
        assert appservice.events.calls == [[event]]
    else:
        assert_matrix_error(
            answer,
            401 if "access_token=" not in query else 403,
            "M_UNAUTHORIZED" if "access_token=" not in query else "M_FORBIDDEN",
        )
        assert appservice.events.calls == []


async def test_as_header_wins_over_query(appservice: AppserviceUnderTest) -> None:
    """A wrong header is not rescued by a right query token (and the other way round works)."""
    appservice.clear()
    body = json.dumps({"events": [message_event()]}).encode()
    wrong_header = await raw_request(
        appservice.port,
        b"PUT",
        (TXN + new_txn() + "?access_token=" + HS_TOKEN).encode(),
        [(b"Authorization", b"Bearer nope")],
        body,
    )
    assert_matrix_error(wrong_header, 403, "M_FORBIDDEN")
    assert appservice.events.calls == []
    right_header = await raw_request(
        appservice.port,
        b"PUT",
        (TXN + new_txn() + "?access_token=nope").encode(),
        [(b"Authorization", b"Bearer " + HS_TOKEN.encode())],
        body,
    )
    assert right_header.status == 200


@fuzz(400)
@given(
    token=st.text(max_size=90) | st.binary(max_size=90).map(lambda b: b.decode("latin-1")),
    where=st.sampled_from(["header", "query"]),
)
async def test_as_forged_tokens_are_403(appservice: AppserviceUnderTest, token: str, where: str) -> None:
    """Any token but the right one: 403 M_FORBIDDEN, whatever the characters."""
    assume(token.strip(" \t") != HS_TOKEN)
    appservice.clear()
    body = json.dumps({"events": [message_event()]}).encode()
    target = (TXN + new_txn()).encode()
    if where == "header":
        value = b"Bearer " + token.encode("utf-8", "surrogatepass")
        value = bytes(c for c in value if c >= 0x20 and c != 0x7F)  # control bytes are an HTTP-layer 400
        assume(value[7:].strip(b" \t") != HS_TOKEN.encode())
        answer = await raw_request(appservice.port, b"PUT", target, [(b"Authorization", value)], body)
    else:
        answer = await raw_request(
            appservice.port,
            b"PUT",
            target + b"?access_token=" + quote(token.encode("utf-8", "surrogatepass"), safe="").encode(),
            [],
            body,
        )
    assert_matrix_error(answer, 403, "M_FORBIDDEN")
    assert appservice.events.calls == []


async def test_as_tokens_never_reach_the_log(
    appservice: AppserviceUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """Refusals log the path, never the presented token (nor the real one)."""
    caplog.set_level(logging.DEBUG)
    body = json.dumps({"events": [message_event()]}).encode()
    forged = "forged-" + secrets.token_urlsafe(24)
    await raw_request(
        appservice.port, b"PUT", (TXN + new_txn() + "?access_token=" + forged).encode(), [], body
    )
    await raw_request(
        appservice.port,
        b"PUT",
        (TXN + new_txn()).encode(),
        [(b"Authorization", b"Bearer " + forged.encode())],
        body,
    )
    await raw_request(
        appservice.port, b"PUT", (TXN + new_txn() + "?access_token=" + HS_TOKEN).encode(), [], body
    )
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "event=as_auth_refused" in text
    assert forged not in text and HS_TOKEN not in text


# token_matches: the comparison itself

any_text = st.text(st.characters(codec=None, exclude_categories=[]), max_size=80)  # surrogates included
token_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)


@fuzz(1500)
@given(given_=any_text, expected=token_text)
def test_token_matches_is_equality_and_never_raises(given_: str, expected: str) -> None:
    assert token_matches(given_, expected) is (given_ == expected)
    assert token_matches(expected, expected) is True


@fuzz(300)
@given(expected=token_text, cut=st.integers(0, 80), extra=any_text)
def test_token_matches_refuses_prefixes_and_extensions(expected: str, cut: int, extra: str) -> None:
    assume(expected)
    assert token_matches(expected[: min(cut, len(expected) - 1)], expected) is False
    assert token_matches(expected + extra, expected) is (extra == "")


def test_token_matches_never_raises_even_for_an_odd_expected_token() -> None:
    assert token_matches("x", "abc\ud800") is False


STATE_CONTENT_KEYS = (
    "membership",
    "displayname",
    "avatar_url",
    "is_direct",
    "reason",
    "join_authorised_via_users_server",
    "users",
    "users_default",
    "events",
    "events_default",
    "state_default",
    "ban",
    "kick",
    "redact",
    "invite",
    "notifications",
    "algorithm",
    "rotation_period_ms",
    "rotation_period_msgs",
    "creator",
    "room_version",
    "predecessor",
    "m.federate",
    "type",
)


@st.composite
def odd_state_events(draw) -> dict[str, Any]:
    """State events of the kinds mautrix's state store interprets, with arbitrary contents."""
    event = message_event(
        type=draw(
            st.sampled_from(
                [
                    *_STATE_STORE_TYPES,
                    "m.room.name",
                    "m.room.join_rules",
                    "m.room.server_acl",
                    "m.room.tombstone",
                ]
            )
        ),
        state_key=draw(
            st.sampled_from(["", "@employee:localhost", "@houseline:localhost", "@telegram_1:localhost"])
            | st.text(max_size=10)
        ),
        event_id="$state",
    )
    content = draw(
        st.dictionaries(st.sampled_from(STATE_CONTENT_KEYS), json_values, max_size=5) | json_values
    )
    event["content"] = content
    for name, value in draw(
        st.dictionaries(
            st.sampled_from(
                ["sender", "unsigned", "prev_content", "origin_server_ts", "event_id", "redacts"]
            ),
            json_values,
            max_size=2,
        )
    ).items():
        event[name] = value
    return event


@fuzz(700)
@given(odd=odd_state_events())
async def test_as_state_events_with_arbitrary_content_never_5xx(
    appservice: AppserviceUnderTest, odd: dict[str, Any]
) -> None:
    """The state store (mautrix's, fed before the handler) must not turn odd contents into a 500."""
    appservice.clear()
    neighbour = message_event(body="neighbour", event_id="$neighbour")
    answer = await appservice.put(new_txn(), {"events": [odd, neighbour]})
    assert answer.status == 200, answer
    (batch,) = appservice.events.calls
    assert batch[-1] == neighbour and all(e in (odd, neighbour) for e in batch)


# =========================================================================== appservice: content


@fuzz(250)
@given(
    body=hostile_text,
    formatted=hostile_text,
    name=hostile_text,
)
async def test_as_html_and_script_in_names_and_texts_are_passed_as_data(
    appservice: AppserviceUnderTest, body: str, formatted: str, name: str
) -> None:
    appservice.clear()
    events = [
        message_event(body=body),
        message_event(
            content={
                "msgtype": "m.text",
                "body": body,
                "format": "org.matrix.custom.html",
                "formatted_body": formatted,
            }
        ),
        message_event(
            type="m.room.member",
            state_key="@employee:localhost",
            content={"membership": "join", "displayname": name, "avatar_url": formatted},
        ),
        message_event(type="m.room.name", state_key="", content={"name": name}),
        message_event(type="m.room.topic", state_key="", content={"topic": formatted}),
    ]
    answer = await appservice.put(new_txn(), {"events": events})
    assert answer.status == 200 and answer.data == {}, answer
    assert appservice.events.calls == [events]


async def test_as_a_full_transaction_of_100_events_is_handled_whole_and_in_order(
    appservice: AppserviceUnderTest,
) -> None:
    appservice.clear()
    kinds = [
        lambda i: message_event(body=f"message {i}"),
        lambda i: message_event(
            type="m.reaction",
            content={"m.relates_to": {"rel_type": "m.annotation", "event_id": f"$x{i}", "key": "\U0001f44d"}},
        ),
        lambda i: message_event(type="m.room.redaction", redacts=f"$x{i}", content={}),
        lambda i: message_event(
            type="m.room.member", state_key=f"@u{i}:localhost", content={"membership": "join"}
        ),
        lambda i: message_event(type=f"com.example.unknown.{i}", content={"anything": [i, {"goes": True}]}),
    ]
    events = [kinds[i % len(kinds)](i) for i in range(100)]
    answer = await appservice.put(new_txn(), {"events": events})
    assert answer.status == 200, answer
    assert appservice.events.calls == [events]
    await appservice.assert_alive()


@fuzz(200)
@given(
    types=st.lists(
        st.text(min_size=1, max_size=40) | st.from_regex(r"\A[a-z]{2,5}(\.[a-z0-9_]{1,8}){1,4}\Z"),
        min_size=1,
        max_size=100,
    ),
    content=json_values.filter(lambda v: isinstance(v, dict)) | st.builds(dict),
    state=st.booleans(),
)
async def test_as_unknown_event_types_pass_through_unchanged(
    appservice: AppserviceUnderTest, types: list[str], content: dict, state: bool
) -> None:
    appservice.clear()
    events = []
    for t in types:
        event = message_event(type=t, content=content)
        if state:
            event["state_key"] = ""
        events.append(event)
    answer = await appservice.put(new_txn(), {"events": events})
    assert answer.status == 200, answer
    assert appservice.events.calls == [events]


@fuzz(150)
@given(
    # aiohttp's route variable is [^{}/]+, and homeservers use plain ids (Synapse: integers).
    txn_ids=st.lists(
        st.text(
            st.characters(exclude_characters="{}/", exclude_categories=["Cs"]), min_size=1, max_size=30
        ).filter(lambda s: s not in (".", "..")),
        min_size=1,
        max_size=6,
        unique=True,
    ),
    order=st.lists(st.integers(0, 5), min_size=1, max_size=15),
)
async def test_as_redelivered_transactions_are_handled_once(
    appservice: AppserviceUnderTest, txn_ids: list[str], order: list[int]
) -> None:
    """Any id (URL-escaped, any characters), redelivered in any order: each handled exactly once,
    every delivery answered 200."""
    appservice.clear()
    run = secrets.token_hex(4)  # ids must be fresh across examples: the server remembers 4096
    ids = [f"{run}-{t}" for t in txn_ids]
    events = {i: message_event(body=f"txn {i}") for i in ids}
    first_seen: list[str] = []
    for k in order:
        txn = ids[k % len(ids)]
        answer = await appservice.put(txn, {"events": [events[txn]]})
        assert answer.status == 200 and answer.data == {}, answer
        if txn not in first_seen:
            first_seen.append(txn)
    assert appservice.events.calls == [[events[t]] for t in first_seen]


async def test_as_concurrent_redelivery_is_joined_not_handled_twice(appservice: AppserviceUnderTest) -> None:
    appservice.clear()
    appservice.events.gate = asyncio.Event()
    txn, event = new_txn(), message_event(body="once")
    first = asyncio.create_task(appservice.put(txn, {"events": [event]}))
    await asyncio.wait_for(_until(lambda: appservice.events.started == 1), BOUND)
    second = asyncio.create_task(appservice.put(txn, {"events": [event]}))
    # The second delivery arrives while the first is held in the handler. Whether it joins the
    # running task or (if slower) finds the id done, the handler must run once.
    await asyncio.sleep(0.05)
    assert not first.done()
    appservice.events.gate.set()
    answers = await asyncio.wait_for(asyncio.gather(first, second), BOUND)
    assert [a.status for a in answers] == [200, 200]
    assert appservice.events.calls == [[event]]
    await appservice.assert_alive()


async def test_as_an_id_reused_for_other_events_is_handled_not_taken_for_a_redelivery(
    appservice: AppserviceUnderTest,
) -> None:
    """Synapse on SQLite numbers transactions from 1 again after a restart (element-hq/synapse
    #14556): the same id with other events is a new transaction, and its events must not be
    dropped as a duplicate's; a redelivery (same events, the ages it was built with changed)
    is still handled once. Gaps in the new numbering are still caught."""
    appservice.clear()
    appservice.az.strands = StrandGuard()
    appservice.az.strands.arm("homeserver_back")
    base = secrets.randbelow(10**9) + 10**9
    old = [message_event(body=f"before the restart {i}") for i in range(4)]
    for i, event in enumerate(old):  # the homeserver's sequence before it restarted
        assert (await appservice.put(str(base + i), {"events": [event]})).status == 200
    new = [message_event(body=f"after the restart {i}") for i in range(3)]
    assert (await appservice.put(str(base), {"events": [new[0]]})).status == 200
    # base + 1 stranded: base + 2, a number the old sequence used too, is a gap in the new one.
    assert_matrix_error(await appservice.put(str(base + 2), {"events": [new[2]]}), 503, "M_UNKNOWN")
    assert (await appservice.put(str(base + 1), {"events": [new[1]]})).status == 200
    assert (await appservice.put(str(base + 2), {"events": [new[2]]})).status == 200
    aged = {**new[1], "unsigned": {"age": 1234}}
    assert (await appservice.put(str(base + 1), {"events": [aged]})).status == 200
    assert appservice.events.calls == [[e] for e in old + new]
    assert appservice.az.strands.last == base + 2
    await appservice.assert_alive()


async def test_as_a_failed_transaction_is_not_remembered(appservice: AppserviceUnderTest) -> None:
    """Control case, by design: a handler failure answers 500 so the homeserver retries; the retry
    is handled (the id was not recorded as done)."""
    appservice.clear()
    appservice.events.fail_next = 1
    txn, event = new_txn(), message_event(body="retry me")
    assert_matrix_error(await appservice.put(txn, {"events": [event]}), 500, "M_UNKNOWN")
    answer = await appservice.put(txn, {"events": [event]})
    assert answer.status == 200
    assert appservice.events.calls == [[event]]


@fuzz(150)
@given(
    ephemeral=st.lists(json_values, max_size=6),
    key=st.sampled_from(["ephemeral", "de.sorunome.msc2409.ephemeral"]),
    fail=st.booleans(),
)
async def test_as_ephemeral_junk_is_filtered_and_its_failure_never_fails_the_transaction(
    appservice: AppserviceUnderTest, ephemeral: list, key: str, fail: bool
) -> None:
    appservice.clear()
    appservice.ephemeral.fail_next = int(fail)
    event = message_event()
    answer = await appservice.put(new_txn(), {"events": [event], key: ephemeral})
    assert answer.status == 200, answer
    assert appservice.events.calls == [[event]]
    dicts = [e for e in ephemeral if isinstance(e, dict)]
    assert appservice.ephemeral.calls == ([] if fail or not dicts else [dicts])


# =========================================================================== webhook: secret


async def _hook_raw(
    webhook: WebhookUnderTest, secret: bytes | None, body: bytes, path: str = HOOK_PATH
) -> Answer:
    headers = [(b"Content-Type", b"application/json")]
    if secret is not None:
        headers.append((SECRET_HEADER.encode(), secret))
    return await raw_request(webhook.port, b"POST", path.encode(), headers, body)


@pytest.mark.parametrize(
    "secret",
    [
        None,
        b"",
        SECRET[:-1].encode(),
        SECRET[:1].encode(),
        (SECRET + "x").encode(),
        (SECRET + SECRET).encode(),
        SECRET.swapcase().encode(),
        b"\xff" + SECRET.encode()[1:],
        SECRET.encode()[:-1] + b"\xed\xa0\x80",
        SECRET.encode()[:-1] + b"?",
        SECRET.encode()[:-1] + "\u00e9".encode(),
        b"x" * 8000,
    ],
    ids=lambda s: "missing" if s is None else repr(s[:12]),
)
async def test_hook_missing_or_wrong_secret_is_403_and_nothing_is_processed(
    webhook: WebhookUnderTest, secret: bytes | None
) -> None:
    webhook.clear()
    for body in (json.dumps(tg_update(new_update_id())).encode(), b"{not json", b"[" * 100_000):
        answer = await _hook_raw(webhook, secret, body)
        assert_webhook_error(answer, 403)
    assert webhook.updates.calls == []
    await webhook.assert_alive()


@fuzz(400)
@given(
    secret=st.one_of(
        st.integers(0, len(SECRET) - 1).map(lambda n: SECRET[:n]),  # a prefix of the right one
        st.text(min_size=1, max_size=20).map(lambda s: SECRET + s),  # the right one with a suffix
        st.text(max_size=80),
        st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    ),
)
async def test_hook_forged_secrets_are_403(webhook: WebhookUnderTest, secret: str) -> None:
    value = bytes(c for c in secret.encode("utf-8", "surrogatepass") if c >= 0x20 and c != 0x7F).strip(b" \t")
    assume(value != SECRET.encode())
    webhook.clear()
    answer = await _hook_raw(webhook, value, json.dumps(tg_update(new_update_id())).encode())
    assert_webhook_error(answer, 403)
    assert webhook.updates.calls == []


async def test_hook_secret_is_checked_before_the_body_is_read(webhook: WebhookUnderTest) -> None:
    """A wrong secret with a body over the limit is refused 403, not 413: nothing was read."""
    webhook.clear()
    async with webhook.http.post(
        webhook.url,
        data=io.BytesIO(b"x" * (MAX_BODY * 2)),
        headers={SECRET_HEADER: "wrong", "Content-Type": JSON_CT},
    ) as response:
        answer = await _answer(response)
    assert_webhook_error(answer, 403)
    assert webhook.updates.calls == []
    await webhook.assert_alive()


async def test_hook_secret_elsewhere_does_not_count(webhook: WebhookUnderTest) -> None:
    webhook.clear()
    body = json.dumps(tg_update(new_update_id())).encode()
    for path, headers in [
        (f"{HOOK_PATH}?secret_token={SECRET}", []),
        (HOOK_PATH, [(b"Authorization", b"Bearer " + SECRET.encode())]),
        (HOOK_PATH, [(b"X-Telegram-Bot-Api-Secret", SECRET.encode())]),
    ]:
        answer = await raw_request(webhook.port, b"POST", path.encode(), headers, body)
        assert_webhook_error(answer, 403)
    assert webhook.updates.calls == []


async def test_hook_other_paths_and_methods_answer_json_4xx(webhook: WebhookUnderTest) -> None:
    webhook.clear()
    for method, path in [
        (b"GET", HOOK_PATH),
        (b"PUT", HOOK_PATH),
        (b"POST", "/"),
        (b"POST", HOOK_PATH + "/x"),
        (b"GET", "/_matrix/mau/live"),
    ]:
        answer = (
            await _hook_raw(webhook, SECRET.encode(), json.dumps(tg_update(new_update_id())).encode(), path)
            if method == b"POST"
            else (
                await raw_request(
                    webhook.port, method, path.encode(), [(SECRET_HEADER.encode(), SECRET.encode())]
                )
            )
        )
        assert answer.status in (404, 405), answer
        assert_webhook_error(answer, answer.status)
    assert webhook.updates.calls == []


# =========================================================================== webhook: bodies


def _hook_model(body: bytes) -> Any:
    """What bridge.networks.telegram.webhook.parse_update should make of the bytes."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (RecursionError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or isinstance(data.get("update_id"), bool)
        or not isinstance(data.get("update_id"), int)
    ):
        return None
    return data


# Drawn, not counted: generation must not depend on state. A repeat is handled by the model.
update_ids = st.integers(min_value=1, max_value=2**52)


@st.composite
def mutated_updates(draw) -> bytes:
    data = bytearray(json.dumps(tg_update(draw(update_ids), draw(st.text(max_size=20)))).encode())
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["cut", "insert", "delete"]))
        if op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        else:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


@st.composite
def oddly_typed_updates(draw) -> Any:
    where = draw(st.sampled_from(["body", "update_id", "message", "field"]))
    odd = draw(json_values)
    if where == "body":
        return odd
    upd = tg_update(draw(update_ids))
    if where == "update_id":
        upd["update_id"] = odd
    elif where == "message":
        upd["message"] = odd
    else:
        upd["message"][draw(st.sampled_from(["text", "chat", "from", "date", "message_id", "entities"]))] = (
            odd
        )
    return upd


@fuzz(500)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        mutated_updates(),
        junk_json_texts,
        oddly_typed_updates().map(lambda v: json.dumps(v).encode()),
    )
)
async def test_hook_arbitrary_bodies_are_400_or_handled_never_5xx(
    webhook: WebhookUnderTest, body: bytes
) -> None:
    model = _hook_model(body)
    seen = model is not None and webhook.server.was_handled(model["update_id"])
    webhook.clear()
    answer = await _hook_raw(webhook, SECRET.encode(), body)
    if model is None:
        assert_webhook_error(answer, 400)
        assert webhook.updates.calls == []
    else:
        assert answer.status == 200 and answer.body == b"", answer
        assert len(webhook.updates.calls) == (0 if seen else 1)
        assert all(u["update_id"] == model["update_id"] for u in webhook.updates.calls)


@pytest.mark.parametrize(
    "name, body",
    [
        ("empty", b""),
        ("arrays_1e5", b"[" * 100_000 + b"]" * 100_000),
        ("objects_1e5", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        ("update_1e5", b'{"update_id": 1, "message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("invalid_utf8", b'{"update_id": 5, "message": {"text": "\xff\xfe"}}'),
        ("bom", b'\xef\xbb\xbf{"update_id": 6}'),
        ("utf16", '{"update_id": 7}'.encode("utf-16")),
        ("huge_int", b'{"update_id": ' + b"9" * 5000 + b"}"),
        ("bool_id", b'{"update_id": true}'),
        ("float_id", b'{"update_id": 1.0}'),
        ("string_id", b'{"update_id": "1"}'),
        ("nan_id", b'{"update_id": NaN}'),
        ("list", b"[1]"),
        ("null", b"null"),
    ],
)
async def test_hook_bad_bodies_are_400_json(webhook: WebhookUnderTest, name: str, body: bytes) -> None:
    webhook.clear()
    assert_webhook_error(await _hook_raw(webhook, SECRET.encode(), body), 400)
    assert webhook.updates.calls == []
    await webhook.assert_alive()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_hook_nan_inside_an_update_does_not_crash(webhook: WebhookUnderTest, literal: str) -> None:
    """Python's json accepts these; Telegram never sends them. Refused or handed over, not a 5xx."""
    webhook.clear()
    uid = new_update_id()
    answer = await _hook_raw(
        webhook, SECRET.encode(), f'{{"update_id": {uid}, "message": {{"date": {literal}}}}}'.encode()
    )
    assert answer.status in (200, 400), answer
    assert len(webhook.updates.calls) == (1 if answer.status == 200 else 0)
    await webhook.assert_alive()


async def test_hook_duplicate_keys_last_one_wins_consistently(webhook: WebhookUnderTest) -> None:
    webhook.clear()
    uid = new_update_id()
    answer = await _hook_raw(
        webhook,
        SECRET.encode(),
        f'{{"update_id": "x", "update_id": {uid}, "message": 1, "message": {{"text": "b"}}}}'.encode(),
    )
    assert answer.status == 200, answer
    assert webhook.updates.calls == [{"update_id": uid, "message": {"text": "b"}}]
    webhook.clear()
    answer = await _hook_raw(
        webhook, SECRET.encode(), f'{{"update_id": {new_update_id()}, "update_id": "x"}}'.encode()
    )
    assert_webhook_error(answer, 400)
    assert webhook.updates.calls == []


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/x-www-form-urlencoded", b"", b"\xff"])
async def test_hook_content_type_is_not_trusted_the_body_is(
    webhook: WebhookUnderTest, content_type: bytes
) -> None:
    webhook.clear()
    upd = tg_update(new_update_id())
    answer = await raw_request(
        webhook.port,
        b"POST",
        HOOK_PATH.encode(),
        [(SECRET_HEADER.encode(), SECRET.encode()), (b"Content-Type", content_type)],
        json.dumps(upd).encode(),
    )
    assert answer.status == 200, answer
    assert webhook.updates.calls == [upd]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_hook_oversized_body_is_413_json(webhook: WebhookUnderTest, chunked: bool) -> None:
    webhook.clear()
    body = b'{"update_id": 1, "x": "' + b"x" * MAX_BODY + b'"}'
    headers = {SECRET_HEADER: SECRET, "Content-Type": JSON_CT}
    async with webhook.http.post(
        webhook.url, data=_chunks(body) if chunked else io.BytesIO(body), headers=headers
    ) as response:
        answer = await _answer(response)
    assert_webhook_error(answer, 413)
    assert webhook.updates.calls == []
    await webhook.assert_alive()


@fuzz(200)
@given(text=hostile_text, name=hostile_text)
async def test_hook_html_and_script_are_passed_as_data(
    webhook: WebhookUnderTest, text: str, name: str
) -> None:
    webhook.clear()
    upd = tg_update(new_update_id(), text, first_name=name)
    answer = await webhook.post(upd)
    assert answer.status == 200 and answer.body == b"", answer
    assert webhook.updates.calls == [upd]


@fuzz(150)
@given(order=st.lists(st.integers(0, 4), min_size=1, max_size=15))
async def test_hook_redelivered_updates_are_handled_once(webhook: WebhookUnderTest, order: list[int]) -> None:
    webhook.clear()
    ids = [new_update_id() for _ in range(5)]
    first_seen: list[int] = []
    for k in order:
        answer = await webhook.post(tg_update(ids[k], f"update {ids[k]}"))
        assert answer.status == 200, answer
        if ids[k] not in first_seen:
            first_seen.append(ids[k])
    assert [u["update_id"] for u in webhook.updates.calls] == first_seen


async def test_both_servers_still_serve_at_the_end(
    appservice: AppserviceUnderTest, webhook: WebhookUnderTest
) -> None:
    await appservice.assert_alive()
    await webhook.assert_alive()
