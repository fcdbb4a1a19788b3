"""The Telegram webhook server: secret first, 200 only after the update is handled, one update
at a time in arrival order, redeliveries absorbed; then against the sandbox's webhook delivery
through python-telegram-bot's real HTTP stack.

Every wait is on a condition and bounded by ``asyncio.wait_for``; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import telegram
import telegram.error

from bridge.networks.telegram.config import TelegramWebhookConfig
from bridge.networks.telegram.webhook import (
    MAX_BODY,
    SECRET_HEADER,
    WebhookServer,
    register_webhook,
    unregister_webhook,
)
from sandbox.homeserver import free_port
from sandbox.telegram import TelegramSandbox

BOUND = 5.0  # upper bound for anything that should happen "at once"
SECRET = "Zq3_-secretTOKEN-for-the-tests_0123456789"
PATH = "/telegram/webhook"
CLIENT_ID = 515151


async def until(predicate: Callable[[], bool], timeout: float = BOUND) -> None:
    async def check() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(check(), timeout)


@dataclass
class Recorder:
    """The ``handle`` callback: records updates, can be held at a gate or made to fail."""

    handled: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0
    gate: asyncio.Event | None = None
    started: int = 0
    active: int = 0
    max_active: int = 0

    async def __call__(self, update: dict[str, Any]) -> None:
        self.started += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)  # give an overlapping call the chance to show itself
            if self.failures:
                self.failures -= 1
                raise RuntimeError("the core could not commit")
            self.handled.append(update)
        finally:
            self.active -= 1

    @property
    def ids(self) -> list[int]:
        return [u["update_id"] for u in self.handled]


def webhook_config(port: int, secret: str = SECRET) -> TelegramWebhookConfig:
    return TelegramWebhookConfig(
        public_url=f"http://127.0.0.1:{port}{PATH}",
        listen_host="127.0.0.1",
        listen_port=port,
        path=PATH,
        secret_token=secret,
    )


@dataclass
class Running:
    server: WebhookServer
    recorder: Recorder
    url: str


@pytest.fixture
async def hook() -> AsyncIterator[Running]:
    recorder = Recorder()
    port = free_port()
    server = WebhookServer(webhook_config(port), recorder, shutdown_grace=1.0)
    await server.start()
    try:
        yield Running(server, recorder, f"http://127.0.0.1:{port}{PATH}")
    finally:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as session:
        yield session


def update(update_id: int, text: str = "hello") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_700_000_000,
            "chat": {"id": CLIENT_ID, "type": "private", "first_name": "Ada"},
            "from": {"id": CLIENT_ID, "is_bot": False, "first_name": "Ada"},
            "text": text,
        },
    }


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    *,
    secret: str | None = SECRET,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    sent = dict(headers or {})
    if secret is not None:
        sent[SECRET_HEADER] = secret
    if isinstance(body, (bytes, bytearray)) or callable(body):
        # BytesIO keeps Content-Length and spares aiohttp's warning about big raw bytes.
        data = body() if callable(body) else io.BytesIO(body)
        sent.setdefault("Content-Type", "application/json")
        async with http.post(url, data=data, headers=sent) as response:
            return response.status, await response.text()
    async with http.post(url, json=body, headers=sent) as response:
        return response.status, await response.text()


async def assert_still_serving(http: aiohttp.ClientSession, hook: Running, update_id: int) -> None:
    status, _ = await post(http, hook.url, update(update_id))
    assert status == 200
    assert hook.recorder.ids[-1] == update_id


# --------------------------------------------------------------------------- the contract


async def test_valid_update_is_answered_only_after_it_was_handled(
    hook: Running, http: aiohttp.ClientSession
) -> None:
    hook.recorder.gate = asyncio.Event()
    answer = asyncio.create_task(post(http, hook.url, update(1001)))
    await until(lambda: hook.recorder.active == 1)
    await asyncio.sleep(0.05)  # not a wait for something: the answer must NOT come meanwhile
    assert not answer.done(), "answered before handle() returned"
    hook.recorder.gate.set()
    status, body = await asyncio.wait_for(answer, BOUND)
    assert status == 200 and body == ""  # an empty answer: nothing Telegram could run as a method
    assert hook.recorder.handled == [update(1001)]
    assert hook.server.was_handled(1001)


async def test_redelivered_update_is_answered_200_but_not_handled_again(
    hook: Running, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="houseline.telegram.webhook")
    assert (await post(http, hook.url, update(2001)))[0] == 200
    for _ in range(3):
        assert (await post(http, hook.url, update(2001, "changed in transit")))[0] == 200
    assert hook.recorder.ids == [2001]
    assert hook.recorder.started == 1
    assert (
        sum("event=telegram_webhook_duplicate update_id=2001" in r.getMessage() for r in caplog.records) == 3
    )


@pytest.mark.parametrize(
    "secret",
    [
        None,  # no header at all
        "",  # empty header
        "nope-not-it",  # wrong, different length
        SECRET[:-1] + "X",  # wrong, same length
        SECRET[:-1],  # a prefix of the right one
        SECRET + "x",  # the right one plus more
        SECRET.lower(),  # case matters
        "é" + SECRET[1:],  # not ASCII: refused, not a TypeError in compare_digest
    ],
)
async def test_missing_or_wrong_secret_is_403_and_nothing_is_processed(
    hook: Running, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, secret: str | None
) -> None:
    caplog.set_level(logging.DEBUG, logger="houseline.telegram.webhook")
    for body in (update(3001), b"{not json", b"x" * (2 * MAX_BODY)):
        status, text = await post(http, hook.url, body, secret=secret)
        assert status == 403, text  # before the body is even looked at (no 400, no 413)
        assert json.loads(text) == {"ok": False, "error": "forbidden"}
    assert hook.recorder.started == 0 and hook.server.queued == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("event=telegram_webhook_rejected status=403" in r.getMessage() for r in warnings)
    reason = "missing_secret" if secret is None else "wrong_secret"
    assert all(f"reason={reason}" in r.getMessage() for r in warnings)
    logged = caplog.text
    assert SECRET not in logged and (not secret or secret not in logged)
    await assert_still_serving(http, hook, 3002)


def _chunked(size: int) -> Callable[[], Any]:
    """A body without Content-Length (chunked), so the limit is hit while reading."""

    def make() -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            sent = 0
            while sent < size:
                piece = b" " * min(64 * 1024, size - sent)
                sent += len(piece)
                yield piece

        return chunks()

    return make


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "invalid json"),
        (b"", 400, "invalid json"),
        (b"[]", 400, "not a json object"),
        (b'"update_id"', 400, "not a json object"),
        (b"null", 400, "not a json object"),
        (b'{"message": {"text": "hi"}}', 400, "no integer update_id"),
        (b'{"update_id": "4001"}', 400, "no integer update_id"),
        (b'{"update_id": 4001.0}', 400, "no integer update_id"),
        (b'{"update_id": true}', 400, "no integer update_id"),
        (b'{"update_id": NaN}', 400, "no integer update_id"),
        (b'{"update_id": 1' + b"0" * 5000 + b"}", 400, "invalid json"),  # past int's digit limit
        (b'{"update_id": 4001, "message": {"text": "\xff\xfe"}}', 400, "invalid utf-8"),
        (b"\xef\xbb\xbf" + b'{"update_id": 4001}', 400, "invalid json"),  # a BOM is not JSON
        (
            b'{"update_id": 4001, "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
            400,
            "json nested too deeply",
        ),
        (b'{"update_id": 4001, "x": "' + b"a" * (2 * MAX_BODY) + b'"}', 413, "too_large"),
        (_chunked(2 * MAX_BODY), 413, "too_large"),
    ],
    ids=[
        "malformed",
        "empty",
        "array",
        "string",
        "null",
        "no-update_id",
        "string-id",
        "float-id",
        "bool-id",
        "nan-id",
        "huge-int",
        "invalid-utf8",
        "bom",
        "deep-nesting",
        "2MiB",
        "2MiB-chunked",
    ],
)
async def test_bad_bodies_are_4xx_not_handled_and_the_server_keeps_serving(
    hook: Running,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    body: Any,
    status: int,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="houseline.telegram.webhook")
    got, text = await post(http, hook.url, body)
    assert got == status, text
    assert json.loads(text)["ok"] is False
    assert hook.recorder.started == 0
    assert any(
        "event=telegram_webhook_bad_body" in r.getMessage()
        and reason.replace(" ", "") in r.getMessage().replace(" ", "")
        for r in caplog.records
    ), caplog.text
    assert not any(r.levelno >= logging.ERROR for r in caplog.records), caplog.text
    await assert_still_serving(http, hook, 4002)


async def test_a_body_just_under_the_limit_is_accepted(hook: Running, http: aiohttp.ClientSession) -> None:
    big = update(4501, "x")
    padding = MAX_BODY - len(json.dumps(update(4501, "")).encode()) - 1024
    big["message"]["text"] = "x" * padding
    assert (await post(http, hook.url, big))[0] == 200
    assert hook.recorder.ids == [4501]


async def test_handler_failure_answers_500_and_the_retry_is_handled(
    hook: Running, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="houseline.telegram.webhook")
    hook.recorder.failures = 2
    for _ in range(2):
        status, text = await post(http, hook.url, update(5001))
        assert status == 500 and json.loads(text)["ok"] is False
    assert hook.recorder.handled == [] and not hook.server.was_handled(5001)
    assert (await post(http, hook.url, update(5001)))[0] == 200
    assert (await post(http, hook.url, update(5001)))[0] == 200  # and now it is a duplicate
    assert hook.recorder.ids == [5001] and hook.recorder.started == 3
    failed = [
        r.getMessage() for r in caplog.records if "event=telegram_webhook_handle_failed" in r.getMessage()
    ]
    assert len(failed) == 2 and all("update_id=5001 status=500 error=RuntimeError" in m for m in failed)


async def test_concurrent_posts_are_handled_one_at_a_time_in_arrival_order(
    hook: Running, http: aiohttp.ClientSession
) -> None:
    hook.recorder.gate = asyncio.Event()
    order = [6003, 6001, 6005, 6002, 6004]  # arrival order, deliberately not sorted
    answers = []
    for i, update_id in enumerate(order, start=1):
        answers.append(asyncio.create_task(post(http, hook.url, update(update_id))))
        await until(lambda: hook.server.queued == i)  # this one has arrived and is in line
    assert hook.recorder.started == 1  # the others wait for the first
    hook.recorder.gate.set()
    statuses = await asyncio.wait_for(asyncio.gather(*answers), BOUND)
    assert [s for s, _ in statuses] == [200] * len(order)
    assert hook.recorder.ids == order
    assert hook.recorder.max_active == 1


async def test_a_burst_with_duplicates_is_handled_once_each_never_in_parallel(
    hook: Running, http: aiohttp.ClientSession
) -> None:
    ids = list(range(7001, 7031))
    bodies = [update(i) for i in ids] * 2  # every update twice, the copies racing the originals
    statuses = await asyncio.wait_for(asyncio.gather(*(post(http, hook.url, b) for b in bodies)), BOUND)
    assert [s for s, _ in statuses] == [200] * len(bodies)
    assert sorted(hook.recorder.ids) == ids
    assert hook.recorder.max_active == 1 and hook.server.queued == 0


async def test_remembers_a_bounded_window_of_handled_ids(http: aiohttp.ClientSession) -> None:
    recorder = Recorder()
    port = free_port()
    server = WebhookServer(webhook_config(port), recorder, remember=3)
    await server.start()
    try:
        url = f"http://127.0.0.1:{port}{PATH}"
        for update_id in (1, 2, 3, 4, 2):
            assert (await post(http, url, update(update_id)))[0] == 200
        assert recorder.ids == [1, 2, 3, 4]  # 2 is still remembered
        assert (await post(http, url, update(1)))[0] == 200
        assert recorder.ids == [1, 2, 3, 4, 1]  # 1 fell out of the window of 3
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", PATH, 405),
        ("PUT", PATH, 405),
        ("DELETE", PATH, 405),
        ("POST", "/", 404),
        ("POST", "/telegram/webhook/x", 404),
        ("GET", "/", 404),
        ("POST", "/TELEGRAM/WEBHOOK", 404),
    ],
)
async def test_other_methods_and_paths(
    hook: Running, http: aiohttp.ClientSession, method: str, path: str, status: int
) -> None:
    url = hook.url.removesuffix(PATH) + path
    headers = {SECRET_HEADER: SECRET}
    async with http.request(method, url, json=update(8001), headers=headers) as response:
        assert response.status == status
        assert (await response.json())["ok"] is False
        if status == 405:
            assert response.headers["Allow"] == "POST"
    assert hook.recorder.started == 0
    await assert_still_serving(http, hook, 8002)


async def test_port_in_use_fails_start_with_a_named_fix(
    hook: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="houseline.telegram.webhook")
    other = WebhookServer(hook.server.config, Recorder())
    with pytest.raises(OSError):
        await other.start()
    assert "event=telegram_webhook_listen_failed" in caplog.text
    assert "networks.telegram.webhook.listen_port" in caplog.text
    await other.stop()  # a server that never started stops quietly


async def test_stop_lets_the_update_in_progress_finish_and_start_again_works(
    http: aiohttp.ClientSession,
) -> None:
    recorder = Recorder(gate=asyncio.Event())
    port = free_port()
    server = WebhookServer(webhook_config(port), recorder, shutdown_grace=BOUND)
    url = f"http://127.0.0.1:{port}{PATH}"
    await server.start()
    answer = asyncio.create_task(post(http, url, update(9001)))
    await until(lambda: recorder.active == 1)
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.05)  # not a wait for something: stop must still be waiting
    assert not stopping.done()
    recorder.gate.set()
    assert (await asyncio.wait_for(answer, BOUND))[0] == 200
    await asyncio.wait_for(stopping, BOUND)
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, url, update(9002))
    await server.start()
    try:
        assert (await post(http, url, update(9002)))[0] == 200
        assert recorder.ids == [9001, 9002]
    finally:
        await server.stop()


# --------------------------------------------------------------------------- with the sandbox


@pytest.fixture
async def sandbox() -> AsyncIterator[TelegramSandbox]:
    sb = TelegramSandbox(rate_limits=False, allow_local_webhooks=True, webhook_retry_initial=0.05)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


async def client_says(http: aiohttp.ClientSession, sb: TelegramSandbox, text: str) -> dict[str, Any]:
    body = {"text": text, "first_name": "Dana", "last_name": "Client"}
    async with http.post(f"{sb.url}/client/{CLIENT_ID}/messages", json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def pending_is_zero(bot: telegram.Bot) -> None:
    async def check() -> None:
        while (await bot.get_webhook_info()).pending_update_count != 0:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(check(), BOUND)


async def test_sandbox_delivers_through_register_webhook(
    hook: Running, sandbox: TelegramSandbox, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="houseline.telegram.webhook")
    async with telegram.Bot(sandbox.token, base_url=f"{sandbox.url}/bot") as bot:
        await register_webhook(bot, hook.server.config, ["message", "edited_message", "message_reaction"])
        info = await bot.get_webhook_info()
        assert info.url == hook.url and info.pending_update_count == 0
        assert info.max_connections == 1
        assert info.allowed_updates == ("message", "edited_message", "message_reaction")
        with pytest.raises(telegram.error.Conflict):
            await bot.get_updates()  # the webhook is in charge now

        sent = await client_says(http, sandbox, "hello over the webhook")
        await until(lambda: len(hook.recorder.handled) == 1)
        got = telegram.Update.de_json(hook.recorder.handled[0], bot)
        assert got.message.text == "hello over the webhook"
        assert got.message.message_id == sent["message_id"] and got.message.chat.id == CLIENT_ID
        await pending_is_zero(bot)

        # The core fails twice: the sandbox sees 500s and redelivers until it gets its 200.
        hook.recorder.failures = 2
        await client_says(http, sandbox, "second")
        await until(lambda: len(hook.recorder.handled) == 2)
        assert hook.recorder.handled[1]["message"]["text"] == "second"
        assert hook.recorder.handled[1]["update_id"] == hook.recorder.handled[0]["update_id"] + 1
        await pending_is_zero(bot)
        info = await bot.get_webhook_info()
        assert info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"

        # Telegram sends an already answered update again (our 200 got lost): answered, not re-handled.
        first_id = hook.recorder.ids[0]
        async with http.post(
            f"{sandbox.url}/sandbox/redeliver", json={"from_update_id": first_id}
        ) as response:
            assert (await response.json())["redelivered"] == 2
        await pending_is_zero(bot)
        assert len(hook.recorder.handled) == 2 and hook.recorder.started == 4

        await unregister_webhook(bot)
        assert (await bot.get_webhook_info()).url == ""
        await client_says(http, sandbox, "polling again")
        assert [u.message.text for u in await bot.get_updates(timeout=0)] == ["polling again"]
    assert "event=telegram_webhook_rejected" not in caplog.text  # the sandbox sent the secret
    assert SECRET not in caplog.text and sandbox.token not in caplog.text


async def test_sandbox_with_a_wrong_secret_gets_403_and_keeps_the_update(
    hook: Running, sandbox: TelegramSandbox, http: aiohttp.ClientSession
) -> None:
    async with telegram.Bot(sandbox.token, base_url=f"{sandbox.url}/bot") as bot:
        wrong = webhook_config(hook.server.config.listen_port, secret="not-the-servers-secret")
        await register_webhook(bot, wrong, ["message"])
        await client_says(http, sandbox, "who is there?")

        async def refused() -> None:
            while (await bot.get_webhook_info()).last_error_message is None:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(refused(), BOUND)
        info = await bot.get_webhook_info()
        assert info.last_error_message == "Wrong response from the webhook: 403 Forbidden"
        assert info.pending_update_count == 1 and hook.recorder.started == 0

        await register_webhook(bot, hook.server.config, ["message"])  # the right secret
        await until(lambda: len(hook.recorder.handled) == 1)
        assert hook.recorder.handled[0]["message"]["text"] == "who is there?"
        await pending_is_zero(bot)
        await unregister_webhook(bot)
