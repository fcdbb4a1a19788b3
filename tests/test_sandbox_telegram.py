"""The Telegram sandbox, driven the way the bridge drives Telegram: through python-telegram-bot's
real HTTP stack, plus raw aiohttp for the encodings PTB does not use and for the control API.

Every wait is on a condition and bounded by ``asyncio.wait_for``; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import telegram
import telegram.error
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.telegram import TelegramSandbox, formatting
from sandbox.telegram.ratelimit import SendRateLimiter

CLIENT_ID = 424242
BOUND = 5.0  # upper bound for anything that should happen "at once"

# PTB warns when RetryAfter.retry_after is read as an int; irrelevant to the sandbox.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"
)


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
    return telegram.Bot(
        token or sb.token, base_url=f"{sb.url}/bot", base_file_url=f"{sb.url}/file/bot"
    )


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


async def test_unknown_method_is_not_found(
    sandbox: TelegramSandbox, http: aiohttp.ClientSession
) -> None:
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
    assert [(u.update_id, u.message.text) for u in again] == [
        (u.update_id, u.message.text) for u in updates
    ]


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


async def test_text_checks(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
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
    async with http.post(
        f"{sandbox.url}/sandbox/faults", json={"fail_next": 1, "status": 500}
    ) as response:
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
    parsed = formatting.parse_text(
        r"*bold _both_* \. ||spoiler|| [link](https://x.org) `a\`b`", "MarkdownV2"
    )
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
