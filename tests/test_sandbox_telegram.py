"""The Telegram sandbox, driven the way the bridge drives Telegram: through python-telegram-bot's
real HTTP stack, plus raw aiohttp for the encodings PTB does not use and for the control API.

Every wait is on a condition and bounded by ``asyncio.wait_for``; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest
import telegram
import telegram.error
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sandbox.telegram import TelegramSandbox, formatting
from sandbox.telegram.ratelimit import SendRateLimiter

CLIENT_ID = 424242
BOUND = 5.0  # upper bound for anything that should happen "at once"

# PTB warns when RetryAfter.retry_after is read as an int; irrelevant to the sandbox.
# ...and when durations are read as ints (they become timedeltas in PTB 23).
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*`duration`.*:telegram.warnings.PTBDeprecationWarning"),
]


def seconds(value: Any) -> float:
    """A PTB duration as seconds, whether it is still an int or already a timedelta."""
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def sandbox() -> AsyncIterator[TelegramSandbox]:
    sb = TelegramSandbox(host="127.0.0.1", port=0, token=None, rate_limits=True)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as session:
        yield session


def make_bot(sb: TelegramSandbox, token: str | None = None) -> telegram.Bot:
    return telegram.Bot(token or sb.token, base_url=f"{sb.url}/bot", base_file_url=f"{sb.url}/file/bot")


@pytest.fixture
async def bot(sandbox: TelegramSandbox) -> AsyncIterator[telegram.Bot]:
    async with make_bot(sandbox) as b:
        yield b


async def client_says(
    http: aiohttp.ClientSession,
    sb: TelegramSandbox,
    text: str,
    user_id: int = CLIENT_ID,
    **profile: Any,
) -> dict[str, Any]:
    body = {"text": text, "first_name": "Ada", "last_name": "Lovelace", "username": "ada_l"}
    body.update(profile)
    async with http.post(f"{sb.url}/client/{user_id}/messages", json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def received(
    http: aiohttp.ClientSession, sb: TelegramSandbox, user_id: int = CLIENT_ID, query: str = ""
) -> dict[str, Any]:
    async with http.get(f"{sb.url}/client/{user_id}/messages{query}") as response:
        assert response.status == 200
        return await response.json()


def image_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, format=fmt)
    return out.getvalue()


async def control(
    http: aiohttp.ClientSession,
    sb: TelegramSandbox,
    path: str,
    body: Any = None,
    *,
    status: int = 200,
    verb: str = "POST",
    **kwargs: Any,
) -> Any:
    """One control API call, asserting its status; JSON bodies go as JSON, FormData as is."""
    if isinstance(body, aiohttp.FormData):
        kwargs["data"] = body
    elif body is not None:
        kwargs["json"] = body
    async with http.request(verb, f"{sb.url}{path}", **kwargs) as response:
        answer = await response.json()
        assert response.status == status, answer
        return answer


async def until(predicate: Callable[[], bool]) -> None:
    async def check() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(check(), BOUND)


async def raw_api(
    http: aiohttp.ClientSession, sb: TelegramSandbox, method: str, verb: str = "POST", **kwargs: Any
) -> tuple[int, dict[str, Any], Any]:
    async with http.request(verb, f"{sb.url}/bot{sb.token}/{method}", **kwargs) as response:
        return response.status, await response.json(), response.headers


# --------------------------------------------------------------------------- identity, tokens


async def test_get_me_describes_the_bot(sandbox: TelegramSandbox, bot: telegram.Bot) -> None:
    me = await bot.get_me()
    assert me.is_bot is True
    assert me.username == sandbox.bot_username == "houseline_sandbox_bot"
    assert me.id == int(sandbox.token.split(":")[0])
    assert me.can_join_groups is True
    assert me.supports_inline_queries is False
    assert me.has_main_web_app is False


def test_generated_token_has_the_real_shape() -> None:
    sb = TelegramSandbox()
    bot_id, secret = sb.token.split(":")
    assert bot_id.isdigit() and len(secret) == 35
    assert all(c.isalnum() or c in "_-" for c in secret)
    with pytest.raises(ValueError):
        TelegramSandbox(token="not-a-token")


async def test_wrong_or_malformed_token_is_invalid_token(
    sandbox: TelegramSandbox, http: aiohttp.ClientSession
) -> None:
    bot_id = sandbox.token.split(":")[0]
    with pytest.raises(telegram.error.InvalidToken):
        async with make_bot(sandbox, token=f"{bot_id}:{'x' * 35}"):  # initialize() calls getMe
            pass
    async with http.post(f"{sandbox.url}/bot{bot_id}:{'x' * 35}/getMe") as response:
        assert response.status == 401
        assert await response.json() == {
            "ok": False,
            "error_code": 401,
            "description": "Unauthorized",
        }
    async with http.post(f"{sandbox.url}/botnonsense/getMe") as response:
        assert response.status == 404
        assert (await response.json())["description"] == "Not Found"


async def test_unknown_method_is_not_found(sandbox: TelegramSandbox, http: aiohttp.ClientSession) -> None:
    status, body, _ = await raw_api(http, sandbox, "sendTelepathy")
    assert status == 404
    assert body == {"ok": False, "error_code": 404, "description": "Not Found"}


# --------------------------------------------------------------------------- updates


async def test_client_message_arrives_with_telegram_shape(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sent = await client_says(http, sandbox, "/start hello", language_code="en")
    assert sent["chat_id"] == CLIENT_ID

    updates = await bot.get_updates(timeout=0)
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None
    assert message.message_id == sent["message_id"]
    assert message.text == "/start hello"
    assert message.from_user == telegram.User(CLIENT_ID, "Ada", False)
    assert message.from_user.last_name == "Lovelace"
    assert message.from_user.username == "ada_l"
    assert message.from_user.language_code == "en"
    assert message.chat.id == CLIENT_ID
    assert message.chat.type == telegram.constants.ChatType.PRIVATE
    assert message.chat.first_name == "Ada"
    assert message.chat.username == "ada_l"
    # Telegram detects the command; PTB's CommandHandler depends on this entity.
    assert message.entities == (telegram.MessageEntity(telegram.MessageEntity.BOT_COMMAND, 0, 6),)
    assert updates[0].update_id > 1000


async def test_start_link_delivers_exactly_what_telegram_delivers(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    path = f"/client/{CLIENT_ID}/start"
    profile = {"first_name": "Ada", "last_name": "Lovelace", "username": "ada_l"}
    sent = await control(http, sandbox, path, {"payload": "Inv_code-42", **profile})
    assert sent == {"message_id": 1, "chat_id": CLIENT_ID}

    status, answer, _ = await raw_api(http, sandbox, "getUpdates")
    assert status == 200 and len(answer["result"]) == 1
    message = answer["result"][0]["message"]
    date = message.pop("date")
    assert isinstance(date, int) and date > 1_600_000_000
    assert message == {
        "message_id": 1,
        "from": {
            "id": CLIENT_ID,
            "is_bot": False,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "username": "ada_l",
        },
        "chat": {
            "id": CLIENT_ID,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "username": "ada_l",
            "type": "private",
        },
        "text": "/start Inv_code-42",
        "entities": [{"offset": 0, "length": 6, "type": "bot_command"}],
    }

    # The same through the link itself, once the client is known (no profile needed), any
    # spelling of the bot's username, a 64-character payload, and the tg:// form.
    longest = "A" * 32 + "z" * 30 + "_-"
    links = [
        (f"https://t.me/{sandbox.bot_username}?start=again", "again"),
        (f"https://telegram.me/{sandbox.bot_username.upper()}/?start={longest}", longest),
        (f"tg://resolve?domain={sandbox.bot_username}&start=tg_form", "tg_form"),
    ]
    for url, _ in links:
        await control(http, sandbox, path, {"url": url})
    await control(http, sandbox, path, {"url": links[0][0], "payload": "again"})
    updates = await bot.get_updates(offset=answer["result"][0]["update_id"] + 1)
    assert [u.message.text for u in updates] == [
        f"/start {payload}" for payload in ("again", longest, "tg_form", "again")
    ]
    for update in updates:
        assert update.message.entities == (telegram.MessageEntity(telegram.MessageEntity.BOT_COMMAND, 0, 6),)
        assert update.message.chat.type == telegram.constants.ChatType.PRIVATE

    # A client who types the command gets the entity Telegram's apps mark as well.
    await client_says(http, sandbox, f"/start@{sandbox.bot_username} typed")
    typed = (await bot.get_updates(offset=updates[-1].update_id + 1))[0].message
    assert typed.entities == (
        telegram.MessageEntity(telegram.MessageEntity.BOT_COMMAND, 0, len(f"/start@{sandbox.bot_username}")),
    )


async def test_start_link_refuses_what_telegram_apps_refuse(
    sandbox: TelegramSandbox, http: aiohttp.ClientSession
) -> None:
    path = f"/client/{CLIENT_ID}/start"
    bot_link = f"https://t.me/{sandbox.bot_username}"
    bad: list[dict[str, Any]] = [
        {},  # neither payload nor url
        {"payload": ""},
        {"payload": "x" * 65},
        {"payload": "has space"},
        {"payload": "dot.ted"},
        {"payload": "кириллица"},
        {"payload": "a+b"},
        {"payload": 42},
        {"url": f"{bot_link}?start=bad%2Fslash"},
        {"url": f"{bot_link}?start="},
        {"url": f"{bot_link}?start={'x' * 65}"},
        {"url": bot_link},  # no start parameter
        {"url": f"{bot_link}?start=a&start=b"},
        {"url": "https://t.me/some_other_bot?start=abc"},
        {"url": "https://example.com/houseline_sandbox_bot?start=abc"},
        {"url": "https://[broken?start=abc"},
        {"url": f"{bot_link}?start=abc", "payload": "different"},
    ]
    for body in bad:
        answer = await control(http, sandbox, path, {**body, "first_name": "Ada"}, status=400)
        assert isinstance(answer["error"], str) and answer["error"], body
    wrong_bot = await control(
        http, sandbox, path, {"url": "https://t.me/some_other_bot?start=abc"}, status=400
    )
    assert "some_other_bot" in wrong_bot["error"]
    # A first contact still needs a name, as for any message.
    await control(http, sandbox, path, {"payload": "abc"}, status=400)
    state = await control(http, sandbox, "/sandbox/state", verb="GET")
    assert state["pending_update_count"] == 0


async def test_first_name_is_remembered_and_required_once(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    url = f"{sandbox.url}/client/77/messages"
    async with http.post(url, json={"text": "hi"}) as response:
        assert response.status == 400
        assert "first_name" in (await response.json())["error"]
    await client_says(http, sandbox, "one", user_id=77)
    async with http.post(url, json={"text": "two"}) as response:
        assert response.status == 200
    updates = await bot.get_updates()
    assert [u.message.from_user.first_name for u in updates] == ["Ada", "Ada"]
    assert [u.message.message_id for u in updates] == [1, 2]
    assert updates[1].update_id == updates[0].update_id + 1


async def test_offset_confirms_and_forgets(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    for text in ("a", "b", "c"):
        await client_says(http, sandbox, text)
    first = await bot.get_updates()
    assert [u.message.text for u in first] == ["a", "b", "c"]
    assert [u.message.text for u in await bot.get_updates()] == ["a", "b", "c"]  # unconfirmed

    rest = await bot.get_updates(offset=first[1].update_id)
    assert [u.message.text for u in rest] == ["b", "c"]
    assert [u.message.text for u in await bot.get_updates(limit=1)] == ["b"]
    assert await bot.get_updates(offset=first[-1].update_id + 1) == ()
    assert (await bot.get_webhook_info()).pending_update_count == 0


async def test_negative_offset_takes_from_the_end(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    for text in ("a", "b", "c"):
        await client_says(http, sandbox, text)
    assert [u.message.text for u in await bot.get_updates(offset=-1)] == ["c"]
    assert [u.message.text for u in await bot.get_updates()] == ["c"]


async def test_long_poll_answers_as_soon_as_an_update_arrives(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await until(lambda: sandbox.state.updates.polling)
    assert not poll.done()
    await client_says(http, sandbox, "wake up")
    updates = await asyncio.wait_for(poll, BOUND)
    assert [u.message.text for u in updates] == ["wake up"]


async def test_long_poll_times_out_with_empty_list(bot: telegram.Bot) -> None:
    assert await asyncio.wait_for(bot.get_updates(timeout=1), BOUND) == ()


async def test_second_poller_terminates_the_first_with_conflict(
    sandbox: TelegramSandbox, bot: telegram.Bot
) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=30))
    await until(lambda: sandbox.state.updates.polling)
    async with make_bot(sandbox) as second:
        assert await second.get_updates(timeout=0) == ()
    with pytest.raises(telegram.error.Conflict, match="terminated by other getUpdates request"):
        await asyncio.wait_for(first, BOUND)


async def test_stop_ends_pending_long_poll_and_restart_keeps_the_queue(
    http: aiohttp.ClientSession,
) -> None:
    sb = TelegramSandbox(rate_limits=False)
    await sb.start()
    try:
        async with make_bot(sb) as b:
            poll = asyncio.create_task(b.get_updates(timeout=30))
            await until(lambda: sb.state.updates.polling)
            await asyncio.wait_for(sb.stop(), BOUND)
            assert await asyncio.wait_for(poll, BOUND) == ()

            port = sb.port
            await sb.start()  # same port: a Telegram outage, not a new server
            assert sb.port == port
            await client_says(http, sb, "after restart")
            assert [u.message.text for u in await b.get_updates()] == ["after restart"]
    finally:
        await sb.stop()


async def test_allowed_updates_is_remembered(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    assert await bot.get_updates(allowed_updates=["callback_query"]) == ()
    await client_says(http, sandbox, "filtered out")
    assert await bot.get_updates() == ()  # still only callback_query
    await bot.get_updates(allowed_updates=[])  # back to the default set
    await client_says(http, sandbox, "kept")
    assert [u.message.text for u in await bot.get_updates()] == ["kept"]


async def test_redeliver_brings_confirmed_updates_back(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    await client_says(http, sandbox, "one")
    await client_says(http, sandbox, "two")
    updates = await bot.get_updates()
    assert await bot.get_updates(offset=updates[-1].update_id + 1) == ()

    async with http.post(
        f"{sandbox.url}/sandbox/redeliver", json={"from_update_id": updates[0].update_id}
    ) as response:
        assert response.status == 200
        assert await response.json() == {"redelivered": 2}
    again = await bot.get_updates()
    assert [(u.update_id, u.message.text) for u in again] == [(u.update_id, u.message.text) for u in updates]


# --------------------------------------------------------------------------- sending


async def test_send_message_reaches_the_client(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    incoming = await client_says(http, sandbox, "question")
    sent = await bot.send_message(
        CLIENT_ID,
        "answer in bold",
        entities=[telegram.MessageEntity(telegram.MessageEntity.BOLD, 10, 4)],
        reply_parameters=telegram.ReplyParameters(incoming["message_id"]),
    )
    assert sent.message_id == incoming["message_id"] + 1  # one counter per private chat
    assert sent.from_user.id == bot.id and sent.from_user.is_bot
    assert sent.chat.id == CLIENT_ID and sent.chat.type == "private"
    assert sent.reply_to_message.text == "question"
    assert sent.entities == (telegram.MessageEntity(telegram.MessageEntity.BOLD, 10, 4),)

    inbox = await received(http, sandbox)
    assert inbox["messages"] == [
        {
            "message_id": sent.message_id,
            "date": int(sent.date.timestamp()),
            "text": "answer in bold",
            "entities": [{"offset": 10, "length": 4, "type": "bold"}],
            "reply_to_message_id": incoming["message_id"],
        }
    ]


async def test_client_can_wait_for_the_next_message(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    await client_says(http, sandbox, "ping")
    waiting = asyncio.create_task(received(http, sandbox, query="?after=1&timeout=10"))
    await bot.send_message(CLIENT_ID, "pong")
    inbox = await asyncio.wait_for(waiting, BOUND)
    assert [m["text"] for m in inbox["messages"]] == ["pong"]


async def test_html_parse_mode_becomes_entities(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    await client_says(http, sandbox, "hi")
    sent = await bot.send_message(
        CLIENT_ID,
        "<b>Hi</b> &amp; <a href='https://example.org'>docs</a> 👍 <i>x</i>",
        parse_mode="HTML",
    )
    assert sent.text == "Hi & docs 👍 x"
    assert [(e.type, e.offset, e.length, e.url) for e in sent.entities] == [
        ("bold", 0, 2, None),
        ("text_link", 5, 4, "https://example.org"),
        ("italic", 13, 1, None),  # the emoji counts as two UTF-16 units
    ]
    with pytest.raises(telegram.error.BadRequest, match="parse entities"):
        await bot.send_message(CLIENT_ID, "<b>open", parse_mode="HTML")


async def test_unknown_chat_is_chat_not_found(bot: telegram.Bot) -> None:
    with pytest.raises(telegram.error.BadRequest) as caught:
        await bot.send_message(999, "anyone?")
    assert caught.value.message == "Chat not found"
    with pytest.raises(telegram.error.BadRequest, match="Chat not found"):
        await bot.send_message("@somebody", "anyone?")


async def test_text_checks(sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession) -> None:
    await client_says(http, sandbox, "hi")
    with pytest.raises(telegram.error.BadRequest, match="Message text is empty"):
        await bot.send_message(CLIENT_ID, "   ")
    with pytest.raises(telegram.error.BadRequest, match="Message is too long"):
        await bot.send_message(CLIENT_ID, "x" * 4097)
    ok = await bot.send_message(CLIENT_ID, "🙂" * 4096)  # code points, not UTF-16 units
    assert len(ok.text) == 4096
    trimmed = await bot.send_message(CLIENT_ID, "  padded \n")
    assert trimmed.text == "padded"
    with pytest.raises(telegram.error.BadRequest, match="Message to be replied not found"):
        await bot.send_message(CLIENT_ID, "re", reply_parameters=telegram.ReplyParameters(9999))


async def test_blocked_client_is_forbidden_and_bot_is_told(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    await client_says(http, sandbox, "bye")
    async with http.post(f"{sandbox.url}/client/{CLIENT_ID}/block") as response:
        assert response.status == 200
    with pytest.raises(telegram.error.Forbidden, match="bot was blocked by the user"):
        await bot.send_message(CLIENT_ID, "wait!")
    updates = await bot.get_updates()
    member = updates[-1].my_chat_member
    assert member is not None and member.chat.id == CLIENT_ID
    assert member.new_chat_member.status == telegram.ChatMember.BANNED
    assert member.new_chat_member.user.id == bot.id

    async with http.post(f"{sandbox.url}/client/{CLIENT_ID}/unblock") as response:
        assert response.status == 200
    await bot.send_message(CLIENT_ID, "welcome back")
    assert [m["text"] for m in (await received(http, sandbox))["messages"]] == ["welcome back"]


async def test_bursting_to_one_chat_is_rate_limited(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    await client_says(http, sandbox, "hi")
    with pytest.raises(telegram.error.RetryAfter):
        for n in range(10):
            await bot.send_message(CLIENT_ID, f"burst {n}")
    status, body, headers = await raw_api(
        http, sandbox, "sendMessage", data={"chat_id": str(CLIENT_ID), "text": "more"}
    )
    assert status == 429
    retry_after = body["parameters"]["retry_after"]
    assert retry_after >= 1 and isinstance(retry_after, int)
    assert body["description"] == f"Too Many Requests: retry after {retry_after}"
    assert headers["Retry-After"] == str(retry_after)
    # Refused sends were not delivered.
    assert len((await received(http, sandbox))["messages"]) < 10


async def test_no_rate_limit_when_switched_off(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    await client_says(http, sandbox, "hi")
    for n in range(40):
        await bot.send_message(CLIENT_ID, f"burst {n}")
    assert len((await received(http, sandbox))["messages"]) == 40


def test_rate_limiter_buckets() -> None:
    now = [100.0]
    limiter = SendRateLimiter(clock=lambda: now[0])
    assert [limiter.acquire("chat") for _ in range(3)] == [None, None, None]
    assert limiter.acquire("chat") == 1
    now[0] += 1.0
    assert limiter.acquire("chat") is None
    # The global bucket: 30 across all chats.
    results = [limiter.acquire(f"other-{n}") for n in range(30)]
    assert results[:29] == [None] * 29 and results[29] == 1
    assert SendRateLimiter(enabled=False).acquire("x") is None


async def test_chat_action_is_visible_to_the_client(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    await client_says(http, sandbox, "hi")
    assert await bot.send_chat_action(CLIENT_ID, telegram.constants.ChatAction.TYPING) is True
    assert (await received(http, sandbox))["chat_action"]["action"] == "typing"
    with pytest.raises(telegram.error.BadRequest):
        await bot.send_chat_action(CLIENT_ID, "dancing")


# --------------------------------------------------------------------------- other encodings


async def test_json_bodies_get_queries_and_case_insensitive_methods(
    sandbox: TelegramSandbox, http: aiohttp.ClientSession
) -> None:
    await client_says(http, sandbox, "hi")
    status, body, _ = await raw_api(http, sandbox, "getme", verb="GET")
    assert status == 200 and body["result"]["username"] == sandbox.bot_username

    status, body, _ = await raw_api(
        http,
        sandbox,
        "SENDMESSAGE",
        json={
            "chat_id": CLIENT_ID,
            "text": "json",
            "entities": [{"type": "italic", "offset": 0, "length": 4}],
        },
    )
    assert status == 200 and body["ok"] is True
    assert body["result"]["entities"] == [{"offset": 0, "length": 4, "type": "italic"}]

    status, body, _ = await raw_api(
        http,
        sandbox,
        "sendMessage",
        verb="GET",
        params={"chat_id": str(CLIENT_ID), "text": "query"},
    )
    assert status == 200 and body["result"]["text"] == "query"

    status, body, _ = await raw_api(
        http,
        sandbox,
        "GETUPDATES",
        verb="GET",
        params={"allowed_updates": '["message"]', "limit": "1", "timeout": "0"},
    )
    assert status == 200 and body["result"][0]["message"]["text"] == "hi"

    status, body, _ = await raw_api(
        http, sandbox, "sendMessage", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and body["description"].startswith("Bad Request: ")
    status, body, _ = await raw_api(http, sandbox, "getUpdates", params={"limit": "many"})
    assert status == 400 and "limit" in body["description"]
    status, body, _ = await raw_api(http, sandbox, "sendMessage", data={"text": "to nobody"})
    assert (status, body["description"]) == (400, "Bad Request: chat_id is empty")
    status, body, _ = await raw_api(
        http,
        sandbox,
        "sendMessage",
        data={"chat_id": str(CLIENT_ID), "text": "x", "entities": "[oops"},
    )
    assert status == 400 and "entities" in body["description"]


async def test_body_size_limit(sandbox: TelegramSandbox, http: aiohttp.ClientSession) -> None:
    status, body, _ = await raw_api(
        http, sandbox, "sendMessage", data={"chat_id": "1", "text": "x" * (1024 * 1024 + 1)}
    )
    assert status == 413 and body["ok"] is False


async def test_documents_get_file_and_download(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    payload = b"%PDF-1.4 sandbox"
    async with http.post(
        f"{sandbox.url}/client/{CLIENT_ID}/documents",
        json={
            "file_name": "invoice.pdf",
            "mime_type": "application/pdf",
            "content_base64": base64.b64encode(payload).decode(),
            "caption": "my invoice",
            "first_name": "Ada",
        },
    ) as response:
        assert response.status == 200
    (update,) = await bot.get_updates()
    document = update.message.document
    assert document.file_name == "invoice.pdf" and document.file_size == len(payload)
    assert update.message.caption == "my invoice"
    file = await bot.get_file(document.file_id)
    assert file.file_size == len(payload)
    assert bytes(await file.download_as_bytearray()) == payload
    with pytest.raises(telegram.error.BadRequest, match="Invalid file_id"):
        await bot.get_file("nope")
    async with http.get(f"{sandbox.url}/file/bot{sandbox.token}/documents/missing") as response:
        assert response.status == 404


# --------------------------------------------------------------------------- step 1: media


async def test_send_photo_upload_becomes_jpeg_sizes_getfile_and_client_view(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    incoming = await client_says(http, sandbox, "send me the plan")
    sent = await bot.send_photo(
        CLIENT_ID,
        image_bytes(1600, 1200),
        caption="<b>Plan</b> v2",
        parse_mode="HTML",
        reply_parameters=telegram.ReplyParameters(incoming["message_id"]),
    )
    # Telegram keeps JPEG sizes fitting 90/320/800/1280 px boxes, smallest first.
    assert [(p.width, p.height) for p in sent.photo] == [
        (90, 67),
        (320, 240),
        (800, 600),
        (1280, 960),
    ]
    assert len({p.file_unique_id for p in sent.photo}) == 4
    assert sent.caption == "Plan v2"
    assert sent.caption_entities == (telegram.MessageEntity("bold", 0, 4),)
    assert sent.reply_to_message.message_id == incoming["message_id"]

    largest = sent.photo[-1]
    file = await bot.get_file(largest.file_id)
    assert file.file_path.startswith("photos/") or "/photos/" in file.file_path
    downloaded = bytes(await file.download_as_bytearray())
    assert downloaded[:3] == b"\xff\xd8\xff" and len(downloaded) == largest.file_size
    with Image.open(io.BytesIO(downloaded)) as image:
        assert image.size == (1280, 960)

    (view,) = (await received(http, sandbox))["messages"]
    assert view["message_id"] == sent.message_id
    assert view["caption"] == "Plan v2"
    assert view["caption_entities"] == [{"offset": 0, "length": 4, "type": "bold"}]
    assert view["reply_to_message_id"] == incoming["message_id"]
    assert [size["width"] for size in view["photo"]] == [90, 320, 800, 1280]
    assert set(view) == {"message_id", "date", "photo", "caption", "caption_entities", "reply_to_message_id"}
    async with http.get(f"{sandbox.url}/client/{CLIENT_ID}/files/{largest.file_id}") as response:
        assert response.status == 200 and await response.read() == downloaded
    other = f"{sandbox.url}/client/{CLIENT_ID + 1}/files/{largest.file_id}"
    async with http.get(other) as response:
        assert response.status == 404


async def test_every_media_kind_has_its_bot_api_shape(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    await client_says(http, sandbox, "hi")
    document = await bot.send_document(CLIENT_ID, b"%PDF-1.4 plan", filename="plan.pdf", caption="the plan")
    assert document.document.file_name == "plan.pdf"
    assert document.document.mime_type == "application/pdf"
    assert document.document.file_size == 13 and document.caption == "the plan"

    video = await bot.send_video(
        CLIENT_ID,
        b"\x00\x00\x00\x18ftypmp42",
        filename="clip.mp4",
        width=640,
        height=360,
        duration=12,
        has_spoiler=True,
    )
    assert (video.video.width, video.video.height, seconds(video.video.duration)) == (
        640,
        360,
        12,
    )
    assert video.video.mime_type == "video/mp4" and video.has_media_spoiler is True

    animation = await bot.send_animation(
        CLIENT_ID, b"GIF89a-frames", filename="dance.gif", width=100, height=80, duration=2
    )
    # GIFs become MPEG-4 animations, and ``document`` is set too, for backward compatibility.
    assert animation.animation.mime_type == "video/mp4"
    assert animation.animation.file_name == "dance.gif.mp4"
    assert animation.document.file_id == animation.animation.file_id

    audio = await bot.send_audio(
        CLIENT_ID, b"ID3-song", filename="song.mp3", duration=185, performer="Ada", title="Notes"
    )
    assert (audio.audio.performer, audio.audio.title) == ("Ada", "Notes")
    assert seconds(audio.audio.duration) == 185 and audio.audio.mime_type == "audio/mpeg"

    voice = await bot.send_voice(CLIENT_ID, b"OggS-opus", duration=4)
    assert seconds(voice.voice.duration) == 4 and voice.voice.mime_type == "audio/ogg"

    note = await bot.send_video_note(CLIENT_ID, b"\x00\x00\x00\x18ftypmp42", length=240, duration=9)
    assert note.video_note.length == 240 and seconds(note.video_note.duration) == 9

    sticker = await bot.send_sticker(CLIENT_ID, image_bytes(512, 384, "WEBP"), emoji="👍")
    assert (sticker.sticker.width, sticker.sticker.height) == (512, 384)
    assert sticker.sticker.type == "regular" and sticker.sticker.emoji == "👍"
    assert sticker.sticker.is_animated is False and sticker.sticker.is_video is False

    location = await bot.send_location(CLIENT_ID, 52.52, 13.405, horizontal_accuracy=20)
    assert (location.location.latitude, location.location.longitude) == (52.52, 13.405)
    contact = await bot.send_contact(CLIENT_ID, "+4930123456", "Desk", last_name="Berlin")
    assert contact.contact.phone_number == "+4930123456" and contact.contact.last_name == "Berlin"

    views = (await received(http, sandbox))["messages"]
    assert [
        next(
            k
            for k in v
            if k
            in (
                "document",
                "video",
                "animation",
                "audio",
                "voice",
                "video_note",
                "sticker",
                "location",
                "contact",
            )
        )
        for v in views
    ] == [
        "document",
        "video",
        "animation",
        "audio",
        "voice",
        "video_note",
        "sticker",
        "location",
        "contact",
    ]
    assert views[0]["document"]["file_name"] == "plan.pdf" and views[0]["caption"] == "the plan"
    assert views[7]["location"] == {"latitude": 52.52, "longitude": 13.405, "horizontal_accuracy": 20}
    for message in (document, video, animation, audio, voice, note, sticker):
        attachment = message.effective_attachment
        file = await bot.get_file(attachment.file_id)
        assert file.file_size == attachment.file_size


async def test_file_ids_are_reused_and_checked(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    await client_says(http, sandbox, "hi")
    first = await bot.send_document(CLIENT_ID, b"same bytes", filename="a.txt")
    again = await bot.send_document(CLIENT_ID, first.document.file_id)
    assert again.document.file_unique_id == first.document.file_unique_id
    assert again.document.file_name == "a.txt"
    photo = await bot.send_photo(CLIENT_ID, image_bytes(100, 100))
    assert [(p.width, p.height) for p in photo.photo] == [(90, 90), (100, 100)]
    resent = await bot.send_photo(CLIENT_ID, photo.photo[0].file_id)
    assert [p.file_unique_id for p in resent.photo] == [p.file_unique_id for p in photo.photo]
    with pytest.raises(telegram.error.BadRequest, match="(?i)can't use file of type document"):
        await bot.send_photo(CLIENT_ID, first.document.file_id)
    with pytest.raises(telegram.error.BadRequest) as caught:
        await bot.send_video(CLIENT_ID, "AAAAnot-a-file-id")
    assert caught.value.message.lower() == "wrong file identifier/http url specified"


async def test_media_errors_match_the_official_server(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    await client_says(http, sandbox, "hi")
    with pytest.raises(telegram.error.BadRequest, match="(?i)message caption is too long"):
        await bot.send_photo(CLIENT_ID, image_bytes(50, 50), caption="x" * 1025)
    ok = await bot.send_photo(CLIENT_ID, image_bytes(50, 50), caption="🙂" * 1024)
    assert len(ok.caption) == 1024
    with pytest.raises(telegram.error.BadRequest, match="(?i)IMAGE_PROCESS_FAILED"):
        await bot.send_photo(CLIENT_ID, b"this is not an image", filename="x.jpg")
    with pytest.raises(telegram.error.BadRequest, match="(?i)PHOTO_INVALID_DIMENSIONS"):
        await bot.send_photo(CLIENT_ID, image_bytes(2100, 100))
    status, body, _ = await raw_api(http, sandbox, "sendPhoto", data={"chat_id": str(CLIENT_ID)})
    assert (status, body["description"]) == (400, "Bad Request: there is no photo in the request")

    # Uploads by attach:// reference, as in InputMedia, work for single sends too.
    form = aiohttp.FormData()
    form.add_field("chat_id", str(CLIENT_ID))
    form.add_field("document", "attach://report")
    form.add_field("report", b"1,2,3", filename="report.csv", content_type="text/csv")
    status, body, _ = await raw_api(http, sandbox, "sendDocument", data=form)
    assert status == 200 and body["result"]["document"]["mime_type"] == "text/csv"

    big = await bot.send_document(CLIENT_ID, b"x" * (20 * 1024 * 1024 + 1), filename="big.bin")
    with pytest.raises(telegram.error.BadRequest, match="(?i)file is too big"):
        await bot.get_file(big.document.file_id)
    # ...but the client downloads it like any other file.
    async with http.get(f"{sandbox.url}/client/{CLIENT_ID}/files/{big.document.file_id}") as response:
        assert response.status == 200 and len(await response.read()) == 20 * 1024 * 1024 + 1
    with pytest.raises(telegram.error.NetworkError, match="Request Entity Too Large"):
        await bot.send_document(CLIENT_ID, b"x" * (50 * 1000 * 1000 + 1), filename="huge.bin")


# --------------------------------------------------------------------------- step 2: edits, deletes


async def history(
    http: aiohttp.ClientSession, sb: TelegramSandbox, user_id: int = CLIENT_ID
) -> dict[int, dict[str, Any]]:
    """The client's whole chat (both directions) by message id."""
    answer = await control(http, sb, f"/client/{user_id}/history", verb="GET")
    return {message["message_id"]: message for message in answer["messages"]}


async def advance_clock(http: aiohttp.ClientSession, sb: TelegramSandbox, seconds: int) -> None:
    await control(http, sb, "/sandbox/clock", {"advance_seconds": seconds})


async def test_edit_message_text_and_caption(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    incoming = await client_says(http, sandbox, "hello")
    button = telegram.InlineKeyboardButton("ok", callback_data="ok")
    keyboard = telegram.InlineKeyboardMarkup([[button]])
    sent = await bot.send_message(CLIENT_ID, "draft", reply_markup=keyboard)
    assert sent.edit_date is None

    edited = await bot.edit_message_text("*final*", CLIENT_ID, sent.message_id, parse_mode="MarkdownV2")
    assert edited.text == "final" and edited.entities == (telegram.MessageEntity("bold", 0, 5),)
    assert edited.edit_date is not None
    assert edited.reply_markup is None  # an edit without reply_markup drops the keyboard
    view = (await history(http, sandbox))[sent.message_id]
    assert view["text"] == "final" and view["edit_date"] == int(edited.edit_date.timestamp())
    assert "reply_markup" not in view

    with pytest.raises(telegram.error.BadRequest) as caught:
        await bot.edit_message_text("*final*", CLIENT_ID, sent.message_id, parse_mode="MarkdownV2")
    assert caught.value.message.lower() == (
        "message is not modified: specified new message content and reply markup are exactly "
        "the same as a current content and reply markup of the message"
    )
    with_keyboard = await bot.edit_message_text(
        "final",
        CLIENT_ID,
        sent.message_id,
        entities=[telegram.MessageEntity("bold", 0, 5)],
        reply_markup=keyboard,
    )
    assert with_keyboard.reply_markup == keyboard  # only the keyboard changed: allowed
    with pytest.raises(telegram.error.BadRequest, match="(?i)^message can't be edited$"):
        await bot.edit_message_text("mine now", CLIENT_ID, incoming["message_id"])
    with pytest.raises(telegram.error.BadRequest, match="(?i)^message to edit not found$"):
        await bot.edit_message_text("nothing", CLIENT_ID, 9999)

    photo = await bot.send_photo(CLIENT_ID, image_bytes(40, 40), caption="old")
    with pytest.raises(telegram.error.BadRequest, match="(?i)there is no text in the message"):
        await bot.edit_message_text("text?", CLIENT_ID, photo.message_id)
    with pytest.raises(telegram.error.BadRequest, match="(?i)there is no caption in the message"):
        await bot.edit_message_caption(CLIENT_ID, sent.message_id, caption="caption?")
    recaptioned = await bot.edit_message_caption(
        CLIENT_ID, photo.message_id, caption="<i>new</i>", parse_mode="HTML"
    )
    assert recaptioned.caption == "new" and recaptioned.caption_entities[0].type == "italic"
    uncaptioned = await bot.edit_message_caption(CLIENT_ID, photo.message_id)
    assert uncaptioned.caption is None and uncaptioned.photo == photo.photo
    with pytest.raises(telegram.error.BadRequest, match="(?i)message caption is too long"):
        await bot.edit_message_caption(CLIENT_ID, photo.message_id, caption="x" * 1025)
    # Edits made by the bot are not reported back to it.
    assert [u.message.text for u in await bot.get_updates()] == ["hello"]


async def test_delete_message_rules(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    incoming = await client_says(http, sandbox, "delete me")
    mine = await bot.send_message(CLIENT_ID, "oops")
    assert await bot.delete_message(CLIENT_ID, mine.message_id) is True
    # "Bots can delete incoming messages in private chats."
    assert await bot.delete_message(CLIENT_ID, incoming["message_id"]) is True
    chat = await history(http, sandbox)
    assert chat[mine.message_id]["deleted"] is True and chat[mine.message_id]["sender"] == "bot"
    assert chat[incoming["message_id"]]["deleted"] is True
    assert (await received(http, sandbox))["messages"][0]["deleted"] is True
    with pytest.raises(telegram.error.BadRequest, match="(?i)^message to delete not found$"):
        await bot.delete_message(CLIENT_ID, mine.message_id)  # already gone
    with pytest.raises(telegram.error.BadRequest, match="(?i)^message to delete not found$"):
        await bot.delete_message(CLIENT_ID, 9999)
    with pytest.raises(telegram.error.BadRequest, match="(?i)^message to edit not found$"):
        await bot.edit_message_text("resurrect", CLIENT_ID, mine.message_id)

    batch = [await bot.send_message(CLIENT_ID, f"batch {n}") for n in range(3)]
    assert await bot.delete_messages(CLIENT_ID, [batch[0].message_id, batch[2].message_id, 4242])
    chat = await history(http, sandbox)
    assert [chat[m.message_id].get("deleted", False) for m in batch] == [True, False, True]

    old = await bot.send_message(CLIENT_ID, "written two days ago")
    await advance_clock(http, sandbox, 48 * 3600)
    with pytest.raises(telegram.error.BadRequest) as caught:
        await bot.delete_message(CLIENT_ID, old.message_id)
    assert caught.value.message.lower() == "message can't be deleted for everyone"
    with pytest.raises(telegram.error.BadRequest, match="(?i)can't be deleted for everyone"):
        await bot.delete_messages(CLIENT_ID, [old.message_id])
    assert "deleted" not in (await history(http, sandbox))[old.message_id]
    # The bot is never told about deletions it made.
    assert [u.message.text for u in await bot.get_updates()] == ["delete me"]


async def test_set_message_reaction(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    incoming = await client_says(http, sandbox, "great news")
    assert await bot.set_message_reaction(CLIENT_ID, incoming["message_id"], "👍") is True
    view = (await history(http, sandbox))[incoming["message_id"]]
    assert view["reactions"] == [{"user_id": bot.id, "type": "emoji", "emoji": "👍"}]
    # One reaction per message for bots; a new one replaces the old one.
    await bot.set_message_reaction(
        CLIENT_ID, incoming["message_id"], telegram.constants.ReactionEmoji.HEART_ON_FIRE
    )
    view = (await history(http, sandbox))[incoming["message_id"]]
    assert view["reactions"] == [{"user_id": bot.id, "type": "emoji", "emoji": "❤\u200d🔥"}]
    with pytest.raises(telegram.error.BadRequest, match="(?i)^reactions_too_many$"):
        await bot.set_message_reaction(
            CLIENT_ID,
            incoming["message_id"],
            [telegram.ReactionTypeEmoji("👍"), telegram.ReactionTypeEmoji("🔥")],
        )
    with pytest.raises(telegram.error.BadRequest, match="(?i)^reaction_invalid$"):
        await bot.set_message_reaction(CLIENT_ID, incoming["message_id"], "🦖")
    with pytest.raises(telegram.error.BadRequest, match="(?i)^reaction_invalid$"):
        await bot.set_message_reaction(CLIENT_ID, incoming["message_id"], telegram.ReactionTypePaid())
    with pytest.raises(telegram.error.BadRequest, match="(?i)^message to react not found$"):
        await bot.set_message_reaction(CLIENT_ID, 9999, "👍")
    assert await bot.set_message_reaction(CLIENT_ID, incoming["message_id"], []) is True
    assert "reactions" not in (await history(http, sandbox))[incoming["message_id"]]
    # Every emoji PTB knows is on Telegram's documented list.
    for emoji in telegram.constants.ReactionEmoji:
        assert await bot.set_message_reaction(CLIENT_ID, incoming["message_id"], emoji.value)
    # "The update isn't received for reactions set by bots."
    updates = await bot.get_updates(allowed_updates=["message", "message_reaction"])
    assert [u.message.text for u in updates] == ["great news"]


# --------------------------------------------------------------------------- step 3: client side


def upload_form(kind: str, data: bytes, filename: str, **fields: Any) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("kind", kind)
    for name, value in fields.items():
        form.add_field(name, value if isinstance(value, str) else json.dumps(value))
    form.add_field("file", data, filename=filename)
    return form


async def test_client_text_entities_replies_locations_contacts(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    await client_says(http, sandbox, "hi")
    question = await bot.send_message(CLIENT_ID, "where are you?")
    path = f"/client/{CLIENT_ID}/messages"
    await control(
        http,
        sandbox,
        path,
        {
            "text": "🙂 at home, see example.org",
            "entities": [{"type": "bold", "offset": 3, "length": 7}],  # after a 2-unit emoji
            "reply_to_message_id": question.message_id,
        },
    )
    await control(http, sandbox, path, {"location": {"latitude": 48.85, "longitude": 2.35}})
    await control(
        http,
        sandbox,
        path,
        {"contact": {"phone_number": "+33100000000", "first_name": "Léa", "user_id": 777}},
    )
    updates = await bot.get_updates()
    text, location, contact = (u.message for u in updates[1:])
    assert text.text == "🙂 at home, see example.org"
    assert [(e.type, e.offset, e.length) for e in text.entities] == [
        ("bold", 3, 7),
        ("url", 16, 11),
    ]
    assert text.parse_entity(text.entities[0]) == "at home"
    assert text.reply_to_message.message_id == question.message_id
    assert text.reply_to_message.from_user.id == bot.id
    assert (location.location.latitude, location.location.longitude) == (48.85, 2.35)
    assert contact.contact.phone_number == "+33100000000" and contact.contact.user_id == 777
    bad_bodies: list[dict[str, Any]] = [
        {"text": "short", "entities": [{"type": "bold", "offset": 3, "length": 5}]},
        {"text": "x", "entities": [{"type": "sparkle", "offset": 0, "length": 1}]},
        {"location": {"latitude": 91, "longitude": 0}},
        {"contact": {"first_name": "No phone"}},
        {"text": "two things", "location": {"latitude": 1, "longitude": 1}},
        {"text": "re", "reply_to_message_id": 9999},
    ]
    for body in bad_bodies:
        await control(http, sandbox, path, body, status=400)


async def test_client_uploads_arrive_as_media_messages(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    path = f"/client/{CLIENT_ID}/messages"
    photo = image_bytes(1000, 500, "JPEG")
    sent = await control(
        http,
        sandbox,
        path,
        upload_form(
            "photo",
            photo,
            "holiday.jpg",
            first_name="Ada",
            caption="beach ☀",
            caption_entities=[{"type": "italic", "offset": 0, "length": 5}],
        ),
    )
    assert len(sent["file_ids"]) == 4 and sent["file_id"] == sent["file_ids"][-1]
    await control(
        http,
        sandbox,
        path,
        upload_form("document", b"a;b\n1;2", "table.csv", caption="numbers"),
    )
    await control(http, sandbox, path, upload_form("voice", b"OggS-voice", "v.ogg", duration="7"))
    await control(
        http,
        sandbox,
        path,
        upload_form("video", b"\x00\x00\x00\x18ftypmp42", "v.mp4", width="720", height="1280", duration="15"),
    )
    sticker = image_bytes(512, 512, "WEBP")
    await control(http, sandbox, path, upload_form("sticker", sticker, "s.webp"))

    updates = await bot.get_updates()
    message = updates[0].message
    assert [(p.width, p.height) for p in message.photo] == [
        (90, 45),
        (320, 160),
        (800, 400),
        (1000, 500),
    ]
    assert message.caption == "beach ☀" and message.caption_entities[0].type == "italic"
    file = await bot.get_file(message.photo[-1].file_id)
    with Image.open(io.BytesIO(bytes(await file.download_as_bytearray()))) as image:
        assert image.size == (1000, 500) and image.format == "JPEG"
    document = updates[1].message.document
    assert (document.file_name, document.mime_type) == ("table.csv", "text/csv")
    document_file = await bot.get_file(document.file_id)
    assert bytes(await document_file.download_as_bytearray()) == b"a;b\n1;2"
    assert seconds(updates[2].message.voice.duration) == 7
    video = updates[3].message.video
    assert (video.width, video.height, seconds(video.duration)) == (720, 1280, 15)
    assert updates[4].message.sticker.is_video is False

    await control(http, sandbox, path, upload_form("hologram", b"x", "x.bin"), status=400)
    await control(http, sandbox, path, upload_form("photo", b"not an image", "x.jpg"), status=400)
    await control(
        http,
        sandbox,
        path,
        upload_form("sticker", image_bytes(8, 8, "WEBP"), "s.webp", caption="no"),
        status=400,
    )


async def test_client_edits_reactions_deletions_and_reads(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    first = await client_says(http, sandbox, "helo")
    reply = await bot.send_message(CLIENT_ID, "hello!")
    base = f"/client/{CLIENT_ID}/messages"
    await advance_clock(http, sandbox, 60)
    edited = await control(http, sandbox, f"{base}/{first['message_id']}/edit", {"text": "hello"})
    await control(http, sandbox, f"{base}/{reply.message_id}/edit", {"text": "x"}, status=403)

    # message_reaction is not in the default allowed_updates: nothing is queued for it.
    await control(http, sandbox, f"{base}/{reply.message_id}/react", {"emoji": ["👍"]})
    updates = await bot.get_updates()
    assert [u.effective_message.text for u in updates] == ["helo", "hello"]
    change = updates[1].edited_message
    assert change.message_id == first["message_id"] and change.edit_date is not None
    assert int(change.edit_date.timestamp()) == edited["edit_date"]
    assert edited["edit_date"] >= int(change.date.timestamp()) + 60
    assert updates[0].message.text == "helo"  # the queued original is a snapshot

    await bot.get_updates(offset=updates[-1].update_id + 1, allowed_updates=["message", "message_reaction"])
    await control(http, sandbox, f"{base}/{reply.message_id}/react", {"emoji": ["🔥", "👍"]})
    await control(http, sandbox, f"{base}/{reply.message_id}/react", {"emoji": ["🔥", "👍"]})  # no-op
    await control(http, sandbox, f"{base}/{reply.message_id}/react", {"emoji": []})
    await control(http, sandbox, f"{base}/{reply.message_id}/react", {"emoji": ["🦖"]}, status=400)
    reactions = [u.message_reaction for u in await bot.get_updates()]
    assert len(reactions) == 2
    assert reactions[0].chat.id == CLIENT_ID and reactions[0].message_id == reply.message_id
    assert reactions[0].user.id == CLIENT_ID
    assert reactions[0].old_reaction == (telegram.ReactionTypeEmoji("👍"),)
    assert reactions[0].new_reaction == (
        telegram.ReactionTypeEmoji("🔥"),
        telegram.ReactionTypeEmoji("👍"),
    )
    assert reactions[1].new_reaction == ()

    # Deleting in a private chat: the bot is not told; reading: no Bot API update exists.
    pending = (await bot.get_webhook_info()).pending_update_count
    await control(http, sandbox, f"{base}/{reply.message_id}/delete")
    await control(http, sandbox, f"{base}/{reply.message_id}/delete", status=404)
    read = await control(http, sandbox, f"/client/{CLIENT_ID}/read", {})
    assert read == {"read_up_to": reply.message_id}
    assert (await bot.get_webhook_info()).pending_update_count == pending
    chat = await history(http, sandbox)
    assert chat[reply.message_id]["deleted"] is True and chat[reply.message_id]["read"] is True
    assert chat[first["message_id"]]["text"] == "hello"
    assert chat[first["message_id"]]["sender"] == "client"
    with pytest.raises(telegram.error.BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("gone?", CLIENT_ID, reply.message_id)


# --------------------------------------------------------------------------- step 4: business

OWNER_ID = 5001


async def connect_business(http: aiohttp.ClientSession, sb: TelegramSandbox, **rights: Any) -> str:
    body = {"owner_id": OWNER_ID, "owner_first_name": "Olga", "owner_username": "olga_shop"}
    body.update(rights)
    return (await control(http, sb, "/business/connect", body))["id"]


async def test_business_connection_messages_and_sending_on_behalf(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    assert (await bot.get_me()).can_connect_to_business is True
    connection_id = await connect_business(http, sandbox)
    prefix = f"/business/{connection_id}"
    asked = await control(
        http,
        sandbox,
        f"{prefix}/clients/{CLIENT_ID}/messages",
        {"text": "Do you deliver?", "first_name": "Ada"},
    )
    answered = await control(
        http, sandbox, f"{prefix}/owner/messages", {"chat_id": CLIENT_ID, "text": "Yes, we do"}
    )
    connected, question, owner_answer = await bot.get_updates()
    connection = connected.business_connection
    assert connection.id == connection_id and connection.is_enabled is True
    assert connection.user.id == OWNER_ID and connection.user_chat_id == OWNER_ID
    assert connection.rights.can_reply is True and connection.rights.can_read_messages is True
    assert connection.rights.can_edit_bio is None  # rights not granted are absent
    assert await bot.get_business_connection(connection_id) == connection

    incoming = question.business_message
    assert incoming.business_connection_id == connection_id
    assert incoming.chat.id == CLIENT_ID and incoming.chat.type == "private"
    assert incoming.from_user.id == CLIENT_ID and incoming.text == "Do you deliver?"
    assert owner_answer.business_message.from_user.id == OWNER_ID
    assert owner_answer.business_message.chat.id == CLIENT_ID
    # Business message ids come from the owner's account-wide counter.
    assert answered["message_id"] == asked["message_id"] + 1

    sent = await bot.send_message(
        CLIENT_ID,
        "Delivery is free over 20 €",
        business_connection_id=connection_id,
        reply_parameters=telegram.ReplyParameters(asked["message_id"]),
    )
    assert sent.from_user.id == OWNER_ID and sent.sender_business_bot.id == bot.id
    assert sent.business_connection_id == connection_id and sent.chat.id == CLIENT_ID
    photo = await bot.send_photo(
        CLIENT_ID, image_bytes(60, 40), caption="menu", business_connection_id=connection_id
    )
    edited = await bot.edit_message_text(
        "Delivery is free over 25 €",
        CLIENT_ID,
        sent.message_id,
        business_connection_id=connection_id,
    )
    assert edited.edit_date is not None
    # The owner's own recent messages can be edited by the bot too; the client's cannot.
    await bot.edit_message_text(
        "Yes, we do!", CLIENT_ID, answered["message_id"], business_connection_id=connection_id
    )
    with pytest.raises(telegram.error.BadRequest, match="(?i)^message can't be edited$"):
        await bot.edit_message_text(
            "no", CLIENT_ID, asked["message_id"], business_connection_id=connection_id
        )
    assert await bot.read_business_message(connection_id, CLIENT_ID, asked["message_id"])

    chat = await control(http, sandbox, f"{prefix}/clients/{CLIENT_ID}/messages", verb="GET")
    assert [(m["sender"], m.get("text", m.get("caption"))) for m in chat["messages"]] == [
        ("client", "Do you deliver?"),
        ("owner", "Yes, we do!"),
        ("bot", "Delivery is free over 25 €"),
        ("bot", "menu"),
    ]
    assert chat["messages"][0]["read_by_business"] is True
    assert chat["messages"][2]["reply_to_message_id"] == asked["message_id"]
    assert chat["messages"][3]["photo"][0]["file_id"] == photo.photo[0].file_id
    # The business chat is not the bot's own private chat with that person.
    with pytest.raises(telegram.error.BadRequest, match="(?i)^chat not found$"):
        await bot.send_message(CLIENT_ID, "privately?")
    # setMessageReaction and deleteMessage take no business_connection_id: it is ignored.
    with pytest.raises(telegram.error.BadRequest, match="(?i)^chat not found$"):
        await bot.set_message_reaction(
            CLIENT_ID,
            asked["message_id"],
            "👍",
            api_kwargs={"business_connection_id": connection_id},
        )
    with pytest.raises(telegram.error.BadRequest, match="(?i)^chat not found$"):
        await bot.delete_message(
            CLIENT_ID, sent.message_id, api_kwargs={"business_connection_id": connection_id}
        )
    with pytest.raises(telegram.error.BadRequest) as caught:
        await bot.send_message(CLIENT_ID, "?", business_connection_id="nonexistent")
    assert caught.value.message.lower() == "business connection not found"
    with pytest.raises(telegram.error.BadRequest, match="(?i)business connection not found"):
        await bot.get_business_connection("nonexistent")

    # Deletions: by the bot (no update), by the owner and by the client (updates).
    assert await bot.delete_business_messages(connection_id, [photo.message_id])
    await control(
        http,
        sandbox,
        f"{prefix}/clients/{CLIENT_ID}/messages/{asked['message_id']}/edit",
        {"text": "Do you deliver on Sundays?"},
    )
    await control(
        http,
        sandbox,
        f"{prefix}/owner/messages/delete",
        {"chat_id": CLIENT_ID, "message_ids": [answered["message_id"]]},
    )
    await control(http, sandbox, f"{prefix}/clients/{CLIENT_ID}/messages/{asked['message_id']}/delete")
    edit_update, owner_deleted, client_deleted = await bot.get_updates(offset=owner_answer.update_id + 1)
    assert edit_update.edited_business_message.text == "Do you deliver on Sundays?"
    assert edit_update.edited_business_message.edit_date is not None
    assert owner_deleted.deleted_business_messages.business_connection_id == connection_id
    assert owner_deleted.deleted_business_messages.chat.id == CLIENT_ID
    assert owner_deleted.deleted_business_messages.message_ids == (answered["message_id"],)
    assert client_deleted.deleted_business_messages.message_ids == (asked["message_id"],)
    chat = await control(http, sandbox, f"{prefix}/clients/{CLIENT_ID}/messages", verb="GET")
    assert [m.get("deleted", False) for m in chat["messages"]] == [True, True, False, True]


async def test_business_24_hour_window_rights_and_disconnect(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    connection_id = await connect_business(http, sandbox)
    prefix = f"/business/{connection_id}"
    with pytest.raises(telegram.error.BadRequest, match="(?i)^business_peer_usage_missing$"):
        await bot.send_message(CLIENT_ID, "cold outreach", business_connection_id=connection_id)
    asked = await control(
        http,
        sandbox,
        f"{prefix}/clients/{CLIENT_ID}/messages",
        {"text": "hello?", "first_name": "Ada"},
    )
    sent = await bot.send_message(CLIENT_ID, "hi!", business_connection_id=connection_id)

    await advance_clock(http, sandbox, 24 * 3600 + 1)
    with pytest.raises(telegram.error.BadRequest, match="(?i)^business_peer_usage_missing$"):
        await bot.send_message(CLIENT_ID, "still there?", business_connection_id=connection_id)
    with pytest.raises(telegram.error.BadRequest, match="(?i)^business_peer_usage_missing$"):
        await bot.edit_message_text(
            "edited late", CLIENT_ID, sent.message_id, business_connection_id=connection_id
        )
    with pytest.raises(telegram.error.BadRequest, match="(?i)^business_peer_usage_missing$"):
        await bot.read_business_message(connection_id, CLIENT_ID, asked["message_id"])
    await control(http, sandbox, f"{prefix}/clients/{CLIENT_ID}/messages", {"text": "yes!"})
    await bot.send_message(CLIENT_ID, "great", business_connection_id=connection_id)

    # Rights: without can_reply the bot may read but not write.
    await connect_business(http, sandbox, rights={"can_read_messages": True})
    with pytest.raises(telegram.error.BadRequest, match="(?i)^bot_access_forbidden$"):
        await bot.send_message(CLIENT_ID, "no rights", business_connection_id=connection_id)
    with pytest.raises(telegram.error.BadRequest, match="(?i)^bot_access_forbidden$"):
        await bot.delete_business_messages(connection_id, [sent.message_id])

    disconnected = await control(http, sandbox, f"{prefix}/disconnect")
    assert disconnected["is_enabled"] is False
    with pytest.raises(telegram.error.BadRequest, match="(?i)^business_connection_invalid$"):
        await bot.send_message(CLIENT_ID, "gone?", business_connection_id=connection_id)
    assert (await bot.get_business_connection(connection_id)).is_enabled is False
    await control(http, sandbox, f"{prefix}/clients/{CLIENT_ID}/messages", {"text": "unseen"})
    reconnected = await connect_business(http, sandbox, can_reply=True)
    assert reconnected == connection_id
    kinds = [
        (u.business_connection.is_enabled if u.business_connection else u.business_message.text)
        for u in await bot.get_updates()
    ]
    # Messages written while the bot was disconnected never reach it.
    assert kinds == [True, "hello?", "yes!", True, False, True]
    sandbox_state = await control(http, sandbox, "/sandbox/state", verb="GET")
    assert sandbox_state["business_connections"][0]["rights"] == {"can_reply": True}


# --------------------------------------------------------------------------- step 5: groups

ANN, BEN, CAT = (
    {"id": 101, "first_name": "Ann"},
    {"id": 102, "first_name": "Ben"},
    {"id": 103, "first_name": "Cat"},
)
GROUP_UPDATES = ["message", "edited_message", "my_chat_member", "chat_member", "message_reaction"]


async def test_group_creation_privacy_mode_members_and_admin_updates(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    await bot.get_updates(allowed_updates=GROUP_UPDATES)
    group = await control(http, sandbox, "/groups", {"title": "Support", "members": [ANN, BEN]})
    chat_id = group["chat_id"]
    assert chat_id < 0 and group["chat"] == {"id": chat_id, "title": "Support", "type": "group"}
    path = f"/groups/{chat_id}/messages"

    async def says(who: dict[str, Any], text: str, **extra: Any) -> dict[str, Any]:
        return await control(http, sandbox, path, {"from": who["id"], "text": text, **extra})

    # Privacy mode (the default): commands, mentions, replies to the bot, service messages.
    assert (await says(ANN, "hello all"))["delivered_to_bot"] is False
    await says(ANN, "/status")
    await says(BEN, "hey @Houseline_Sandbox_Bot")
    answer = await bot.send_message(chat_id, "all systems go")
    assert answer.chat.type == "group" and answer.chat.title == "Support"
    await says(BEN, "thanks", reply_to_message_id=answer.message_id)
    await control(http, sandbox, f"/groups/{chat_id}/members", {**CAT, "added_by": ANN["id"]})
    await control(http, sandbox, f"/groups/{chat_id}/members/{BEN['id']}", verb="DELETE")
    await control(http, sandbox, path, {"from": BEN["id"], "text": "still here?"}, status=403)

    updates = await bot.get_updates()
    added = updates[0].my_chat_member
    assert added.chat.id == chat_id and added.from_user.id == ANN["id"]
    assert added.old_chat_member.status == "left" and added.new_chat_member.status == "member"
    assert added.new_chat_member.user.id == bot.id
    messages = [u.message for u in updates[1:]]
    assert messages[0].group_chat_created is True
    assert [m.text for m in messages[1:4]] == ["/status", "hey @Houseline_Sandbox_Bot", "thanks"]
    assert messages[3].reply_to_message.message_id == answer.message_id
    assert messages[4].new_chat_members == (telegram.User(CAT["id"], "Cat", False),)
    assert messages[4].from_user.id == ANN["id"]
    assert messages[5].left_chat_member.id == BEN["id"] and messages[5].from_user.id == BEN["id"]
    assert all(m.chat.type == "group" for m in messages)
    assert len(updates) == 7  # no chat_member updates: the bot is not an administrator

    # As an administrator the bot sees everything, chat_member and message_reaction updates.
    await control(http, sandbox, f"/groups/{chat_id}/bot", {"status": "administrator"})
    plain = await says(CAT, "plain chatter")
    assert plain["delivered_to_bot"] is True
    await control(http, sandbox, f"{path}/{plain['message_id']}/react", {"from": ANN["id"], "emoji": ["🎉"]})
    await control(http, sandbox, f"{path}/{plain['message_id']}/edit", {"from": CAT["id"], "text": "chatter"})
    await control(http, sandbox, f"/groups/{chat_id}/members", {"id": 104, "first_name": "Dan"})
    promoted, chatter, reaction, edited, joined, member = await bot.get_updates(
        offset=updates[-1].update_id + 1
    )
    assert promoted.my_chat_member.new_chat_member.status == "administrator"
    assert promoted.my_chat_member.new_chat_member.can_delete_messages is True
    assert chatter.message.text == "plain chatter"
    assert reaction.message_reaction.user.id == ANN["id"]
    assert reaction.message_reaction.new_reaction == (telegram.ReactionTypeEmoji("🎉"),)
    assert edited.edited_message.text == "chatter"
    assert joined.message.new_chat_members[0].id == 104
    assert member.chat_member.new_chat_member.user.id == 104
    change = member.chat_member
    assert (change.old_chat_member.status, change.new_chat_member.status) == ("left", "member")
    # An administrator bot deletes others' messages; the group view shows who wrote what.
    assert await bot.delete_message(chat_id, plain["message_id"])
    view = await control(http, sandbox, path, verb="GET")
    by_id = {m["message_id"]: m for m in view["messages"]}
    assert by_id[plain["message_id"]]["deleted"] is True
    assert by_id[answer.message_id]["sender"] == "bot"
    assert by_id[answer.message_id]["from"]["id"] == bot.id
    assert by_id[1]["group_chat_created"] is True and by_id[1]["sender"] == "service"


async def test_group_upgrade_to_supergroup_and_bot_removal(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    sandbox.rate_limits = False
    group = await control(http, sandbox, "/groups", {"title": "Ops", "members": [ANN]})
    old_id = group["chat_id"]
    await bot.send_message(old_id, "before the upgrade")
    supergroup = await control(http, sandbox, f"/groups/{old_id}/migrate", {})
    new_id = supergroup["chat_id"]
    assert str(new_id).startswith("-100") and supergroup["chat"]["type"] == "supergroup"
    updates = await bot.get_updates()
    to_update, from_update = updates[-2:]
    assert to_update.message.chat.id == old_id
    assert to_update.message.migrate_to_chat_id == new_id
    assert from_update.message.chat.id == new_id and from_update.message.chat.type == "supergroup"
    assert from_update.message.migrate_from_chat_id == old_id
    assert from_update.message.message_id == 1

    with pytest.raises(telegram.error.ChatMigrated) as caught:
        await bot.send_message(old_id, "anyone?")
    assert caught.value.new_chat_id == new_id
    status, body, _ = await raw_api(http, sandbox, "sendMessage", data={"chat_id": str(old_id), "text": "x"})
    assert (status, body["description"], body["parameters"]) == (
        400,
        "Bad Request: group chat was upgraded to a supergroup chat",
        {"migrate_to_chat_id": new_id},
    )
    await control(http, sandbox, f"/groups/{old_id}/messages", {"from": ANN["id"], "text": "/x"}, status=409)
    sent = await bot.send_message(new_id, "after the upgrade")
    assert sent.chat.type == "supergroup" and sent.message_id == 2
    view = await control(http, sandbox, f"/groups/{new_id}/messages", verb="GET")
    assert view["messages"][-1]["text"] == "after the upgrade"

    await control(http, sandbox, f"/groups/{new_id}/members/{bot.id}", verb="DELETE")
    removed = (await bot.get_updates(offset=updates[-1].update_id + 1))[-1].my_chat_member
    assert removed.chat.id == new_id and removed.new_chat_member.status == "kicked"
    with pytest.raises(telegram.error.Forbidden, match="(?i)bot was kicked from the supergroup"):
        await bot.send_message(new_id, "hello?")
    await control(http, sandbox, f"/groups/{new_id}/members", {"id": bot.id})
    assert (await bot.send_message(new_id, "back")).text == "back"


async def test_group_send_limit_is_twenty_a_minute(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    group = await control(http, sandbox, "/groups", {"title": "Busy", "members": [ANN]})
    with pytest.raises(telegram.error.RetryAfter):
        for n in range(10):
            await bot.send_message(group["chat_id"], f"burst {n}")
    now = [100.0]
    limiter = SendRateLimiter(clock=lambda: now[0], per_chat_capacity=100, global_capacity=100)
    for second in range(20):
        now[0] = 100.0 + second
        assert limiter.acquire(-42, group=True) is None
    now[0] = 119.5
    assert limiter.acquire(-42, group=True) == 41  # the first of the 20 leaves the window at 160
    assert limiter.acquire(42) is None  # a private chat has no per-minute limit
    now[0] = 160.0
    assert limiter.acquire(-42, group=True) is None


# --------------------------------------------------------------------------- step 6: blocking


async def test_block_and_unblock_my_chat_member_shapes(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    first = await client_says(http, sandbox, "hi")
    sent = await bot.send_message(CLIENT_ID, "hello")
    await control(http, sandbox, f"/client/{CLIENT_ID}/block")
    assert (await control(http, sandbox, f"/client/{CLIENT_ID}/block"))["changed"] is False
    for call in (
        bot.send_message(CLIENT_ID, "x"),
        bot.send_photo(CLIENT_ID, image_bytes(10, 10)),
        bot.send_chat_action(CLIENT_ID, "typing"),
        bot.edit_message_text("edited", CLIENT_ID, sent.message_id),
    ):
        with pytest.raises(telegram.error.Forbidden, match="(?i)^forbidden: bot was blocked by"):
            await call
    await control(http, sandbox, f"/client/{CLIENT_ID}/unblock")
    status, body, _ = await raw_api(http, sandbox, "getUpdates", data={"offset": "0"})
    blocked, unblocked = (u["my_chat_member"] for u in body["result"][1:])
    user = {
        "id": CLIENT_ID,
        "is_bot": False,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "username": "ada_l",
    }
    bot_user = {
        "id": bot.id,
        "is_bot": True,
        "first_name": "Houseline Sandbox",
        "username": "houseline_sandbox_bot",
    }
    assert blocked == {
        "chat": {
            "id": CLIENT_ID,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "username": "ada_l",
            "type": "private",
        },
        "from": user,
        "date": blocked["date"],
        "old_chat_member": {"user": bot_user, "status": "member"},
        "new_chat_member": {"user": bot_user, "status": "kicked", "until_date": 0},
    }
    assert unblocked["old_chat_member"] == {"user": bot_user, "status": "kicked", "until_date": 0}
    assert unblocked["new_chat_member"] == {"user": bot_user, "status": "member"}
    assert isinstance(blocked["date"], int)
    # A client that blocked the bot and writes again has restarted it: unblocked first.
    await control(http, sandbox, f"/client/{CLIENT_ID}/block")
    await client_says(http, sandbox, "/start")
    kinds = [
        next(k for k in u if k != "update_id")
        for u in (
            await raw_api(
                http, sandbox, "getUpdates", data={"offset": str(body["result"][-1]["update_id"] + 1)}
            )
        )[1]["result"]
    ]
    assert kinds == ["my_chat_member", "my_chat_member", "message"]
    assert first["message_id"] == 1


# --------------------------------------------------------------------------- step 7: webhooks


class WebhookReceiver:
    """A local webhook endpoint answering with scripted statuses (then 200) and bodies."""

    def __init__(self, statuses: list[int] | None = None, reply: dict[str, Any] | None = None):
        self.statuses = list(statuses or [])
        self.reply = reply
        self.requests: list[tuple[dict[str, str], Any, int]] = []
        self.changed = asyncio.Event()
        self.runner: aiohttp.web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.requests.append((dict(request.headers), await request.json(), status))
        self.changed.set()
        if status == 200 and self.reply is not None:
            return aiohttp.web.json_response(self.reply)
        return aiohttp.web.Response(status=status)

    async def __aenter__(self) -> WebhookReceiver:
        app = aiohttp.web.Application()
        app.router.add_post("/hook/{secret}", self.handle)
        self.runner = aiohttp.web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = aiohttp.web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook/path-secret"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def wait_for(self, count: int) -> None:
        async def enough() -> None:
            while len(self.requests) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(enough(), BOUND)


@pytest.fixture
async def hooked() -> AsyncIterator[TelegramSandbox]:
    sb = TelegramSandbox(rate_limits=False, allow_local_webhooks=True, webhook_retry_initial=0.02)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_delivers_in_order_with_secret_and_retries(
    hooked: TelegramSandbox, http: aiohttp.ClientSession
) -> None:
    async with make_bot(hooked) as bot, WebhookReceiver(statuses=[500, 502]) as receiver:
        poll = asyncio.create_task(bot.get_updates(timeout=30))
        await until(lambda: hooked.state.updates.polling)
        async with make_bot(hooked) as other:
            assert await other.set_webhook(
                receiver.url,
                secret_token="s3cr3t_-X",
                allowed_updates=["message", "edited_message"],
            )
        with pytest.raises(telegram.error.Conflict, match="terminated by setWebhook request"):
            await asyncio.wait_for(poll, BOUND)
        await client_says(http, hooked, "first")
        with pytest.raises(telegram.error.Conflict, match="(?i)getUpdates method while webhook"):
            await bot.get_updates()
        await client_says(http, hooked, "after")
        await receiver.wait_for(4)  # two failed attempts, then both updates in order
        headers = [h.get("X-Telegram-Bot-Api-Secret-Token") for h, _, _ in receiver.requests]
        assert headers == ["s3cr3t_-X"] * 4
        content_types = {h["Content-Type"] for h, _, _ in receiver.requests}
        assert content_types == {"application/json"}
        bodies = [body for _, body, _ in receiver.requests]
        assert [b["message"]["text"] for b in bodies] == ["first"] * 3 + ["after"]
        assert [status for _, _, status in receiver.requests] == [500, 502, 200, 200]
        assert bodies[3]["update_id"] == bodies[2]["update_id"] + 1
        assert set(bodies[2]) == {"update_id", "message"}

        await until(lambda: hooked.state.updates.pending_count == 0)
        info = await bot.get_webhook_info()
        assert info.url == receiver.url and info.pending_update_count == 0
        assert info.last_error_message == "Wrong response from the webhook: 502 Bad Gateway"
        assert isinstance(info.last_error_date.timestamp(), float)
        assert info.max_connections == 40 and info.allowed_updates == ("message", "edited_message")
        assert info.has_custom_certificate is False

        assert await bot.delete_webhook()
        assert (await bot.get_webhook_info()).url == ""
        await client_says(http, hooked, "polling again")
        assert [u.message.text for u in await bot.get_updates()] == ["polling again"]


async def test_webhook_failures_keep_updates_pending_and_replies_run(
    hooked: TelegramSandbox, http: aiohttp.ClientSession
) -> None:
    async with make_bot(hooked) as bot:
        dead = f"http://127.0.0.1:{free_port()}/hook/x"
        await bot.set_webhook(dead)
        await client_says(http, hooked, "are you there?")

        async def errored() -> None:
            while (await bot.get_webhook_info()).last_error_message is None:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(errored(), BOUND)
        info = await bot.get_webhook_info()
        assert info.last_error_message == "Connection refused" and info.pending_update_count == 1

        reply = {"method": "sendMessage", "chat_id": CLIENT_ID, "text": "answered in the reply"}
        async with WebhookReceiver(reply=reply) as receiver:
            await bot.set_webhook(receiver.url)  # the pending update is delivered to the new URL
            await receiver.wait_for(1)
            assert receiver.requests[0][1]["message"]["text"] == "are you there?"
            assert "X-Telegram-Bot-Api-Secret-Token" not in receiver.requests[0][0]
            inbox = await received(http, hooked, query="?timeout=5")
            assert [m["text"] for m in inbox["messages"]] == ["answered in the reply"]

            await bot.delete_webhook()
            await client_says(http, hooked, "dropped")
            await bot.set_webhook(receiver.url, drop_pending_updates=True)
            assert (await bot.get_webhook_info()).pending_update_count == 0
            assert len(receiver.requests) == 1


async def test_set_webhook_checks(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    with pytest.raises(telegram.error.BadRequest, match="(?i)an https url must be provided"):
        await bot.set_webhook("http://example.org/hook")
    with pytest.raises(telegram.error.BadRequest, match="(?i)only on ports 80, 88, 443 or 8443"):
        await bot.set_webhook("https://example.org:1234/hook")
    with pytest.raises(telegram.error.BadRequest) as caught:
        await bot.set_webhook("https://example.org/hook", secret_token="no spaces!")
    assert caught.value.message.lower() == "secret token contains unallowed characters"
    with pytest.raises(telegram.error.BadRequest, match="(?i)secret token is too long"):
        await bot.set_webhook("https://example.org/hook", secret_token="x" * 257)
    longest_secret = {"url": "https://example.org:8443/hook", "secret_token": "a" * 256}
    status, body, _ = await raw_api(http, sandbox, "setWebhook", data=longest_secret)
    assert (status, body["description"]) == (200, "Webhook was set")
    status, body, _ = await raw_api(http, sandbox, "setWebhook", data=longest_secret)
    assert body["description"] == "Webhook is already set"
    status, body, _ = await raw_api(http, sandbox, "deleteWebhook")
    assert body == {"ok": True, "result": True, "description": "Webhook was deleted"}


# --------------------------------------------------------------------------- control API


async def test_malformed_control_bodies_are_400(
    sandbox: TelegramSandbox, http: aiohttp.ClientSession
) -> None:
    url = f"{sandbox.url}/client/{CLIENT_ID}/messages"
    cases: list[dict[str, Any]] = [
        {"data": "not json", "headers": {"Content-Type": "application/json"}},
        {"json": ["a", "list"]},
        {"json": {"first_name": "Ada"}},  # no text
        {"json": {"first_name": "Ada", "text": ""}},
        {"json": {"first_name": "Ada", "text": 5}},
        {"json": {"first_name": "Ada", "text": "x" * 4097}},
        {"json": {"first_name": "Ada", "text": "hi", "username": "no spaces allowed"}},
    ]
    for case in cases:
        async with http.post(url, **case) as response:
            assert response.status == 400, case
            assert (await response.json())["error"]
    async with http.post(f"{sandbox.url}/client/abc/messages", json={"text": "x"}) as response:
        assert response.status == 400
    async with http.post(f"{sandbox.url}/sandbox/redeliver", json={}) as response:
        assert response.status == 400
    async with http.post(f"{sandbox.url}/client/5/block") as response:
        assert response.status == 404  # never wrote to the bot


async def test_injected_faults(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{sandbox.url}/sandbox/faults", json={"fail_next": 1, "status": 500}) as response:
        assert response.status == 200
    with pytest.raises(telegram.error.NetworkError):
        await bot.get_me()
    async with http.post(
        f"{sandbox.url}/sandbox/faults",
        json={"fail_next": 1, "status": 429, "retry_after": 3, "methods": ["getUpdates"]},
    ):
        pass
    await bot.get_me()  # not a targeted method
    with pytest.raises(telegram.error.RetryAfter):
        await bot.get_updates()
    assert await bot.get_updates() == ()
    async with http.get(f"{sandbox.url}/sandbox/state") as response:
        state = await response.json()
    assert state["faults"]["fail_next"] == 0 and state["pending_update_count"] == 0


# --------------------------------------------------------------------------- formatting units


def test_markdown_v2_parsing() -> None:
    parsed = formatting.parse_text(r"*bold _both_* \. ||spoiler|| [link](https://x.org) `a\`b`", "MarkdownV2")
    assert parsed.text == "bold both . spoiler link a`b"
    assert [(e["type"], e["offset"], e["length"]) for e in parsed.entities] == [
        ("bold", 0, 9),
        ("italic", 5, 4),
        ("spoiler", 12, 7),
        ("text_link", 20, 4),
        ("code", 25, 3),
    ]
    with pytest.raises(formatting.EntityParseError, match="reserved"):
        formatting.parse_text("1.5", "MarkdownV2")
    with pytest.raises(formatting.EntityParseError, match="Can't find end"):
        formatting.parse_text("*open", "MarkdownV2")


def test_entity_detection() -> None:
    detected = formatting.detect_entities(
        "/help@houseline_sandbox_bot mail me@example.com, see example.com or notes.txt #topic $USD"
    )
    assert [e["type"] for e in detected] == ["bot_command", "email", "url", "hashtag", "cashtag"]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["HTML", "MarkdownV2", "Markdown", ""]),
    st.text(alphabet=st.sampled_from(list("ab <>/&;*_~`|[]()!\\\n>#.🙂")), max_size=40),
)
def test_parsers_never_crash_and_entities_stay_in_bounds(mode: str, text: str) -> None:
    try:
        parsed = formatting.parse_text(text, mode)
        final = formatting.finalize(parsed.text, parsed.entities)
    except (formatting.EntityParseError, formatting.TextEmpty):
        return
    size = formatting.utf16_len(final.text)
    for entity in final.entities:
        assert entity["length"] > 0 and entity["offset"] + entity["length"] <= size


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=20), st.text(min_size=1, max_size=20), st.text(max_size=20))
def test_html_bold_offsets_are_utf16(before: str, inner: str, after: str) -> None:
    parsed = formatting.parse_text(
        f"{html.escape(before)}<b>{html.escape(inner)}</b>{html.escape(after)}", "HTML"
    )
    assert parsed.text == before + inner + after
    bold = [e for e in parsed.entities if e["type"] == "bold"]
    assert bold == [
        {
            "offset": formatting.utf16_len(before),
            "length": formatting.utf16_len(inner),
            "type": "bold",
        }
    ]


# --------------------------------------------------------------------------- CLI


async def test_cli_prints_ready_and_stops_on_sigterm(http: aiohttp.ClientSession) -> None:
    root = Path(__file__).resolve().parent.parent
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox.telegram",
        "--port",
        "0",
        "--no-rate-limits",
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), BOUND * 2))
        assert ready["event"] == "ready"
        async with http.get(f"{ready['url']}/bot{ready['token']}/getMe") as response:
            assert (await response.json())["ok"] is True
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), BOUND) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_edit_reply_markup_answers_not_modified_without_changing_anything(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    """The bridge probes interrupted deliveries with this call: it must never alter a message."""
    sent = await client_says(http, sandbox, "hello")
    mine = await bot.send_message(CLIENT_ID, "the bot's own message")
    with pytest.raises(telegram.error.BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_reply_markup(CLIENT_ID, mine.message_id)
    with pytest.raises(telegram.error.BadRequest, match="(?i)can't be edited"):
        await bot.edit_message_reply_markup(CLIENT_ID, sent["message_id"])
    with pytest.raises(telegram.error.BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_reply_markup(CLIENT_ID, mine.message_id + 50)
    async with http.get(f"{sandbox.url}/client/{CLIENT_ID}/messages") as resp:
        received = (await resp.json())["messages"]
    assert [m["text"] for m in received] == ["the bot's own message"] and "edit_date" not in received[0]
