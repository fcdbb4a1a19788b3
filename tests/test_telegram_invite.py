"""Telegram deep-link invitations, the network side. A bot cannot write first, so an employee
hands the client ``https://t.me/<bot>?start=<code>``; pressing START makes Telegram deliver the
ordinary message ``/start <code>``. The connector's link must open the (sandbox) bot's chat, and
that message must come out of the translator as a MESSAGE carrying ``invite_code``, while text
that merely looks like it (in a group, a business chat, a malformed code) carries none.

Against the sandbox through python-telegram-bot's real HTTP stack; every wait is on a condition.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import telegram

from bridge.networks.telegram.config import TelegramConfig
from bridge.events import ChatRef, RemoteEvent, RemoteEventKind
from bridge.networks.base import InviteLinks, OnSent
from bridge.networks.telegram.connector import TelegramConnector
from bridge.networks.telegram.translate import Translator
from sandbox.telegram import TelegramSandbox

BOUND = 5.0  # upper bound for anything that should happen "at once"
CLIENT_ID = 636363
CODE = "Ab3_-xYz" * 4  # 32 characters of the whole alphabet's kinds


async def until(predicate: Callable[[], bool]) -> None:
    async def check() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(check(), BOUND)


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[TelegramSandbox]:
    sb = TelegramSandbox(host="127.0.0.1", port=0, token=None)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture(scope="module")
async def bot(sandbox: TelegramSandbox) -> AsyncIterator[telegram.Bot]:
    """Initialized (getMe) like the connector's bot, so it knows its username."""
    bot = telegram.Bot(sandbox.token, base_url=f"{sandbox.url}/bot", base_file_url=f"{sandbox.url}/file/bot")
    async with bot:
        yield bot


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as session:
        yield session


def connector_for(sandbox: TelegramSandbox) -> TelegramConnector:
    return TelegramConnector(
        TelegramConfig(
            bot_token=sandbox.token,
            polling_timeout=1,
            base_url=f"{sandbox.url}/bot",
            base_file_url=f"{sandbox.url}/file/bot",
            pacing=False,
        )
    )


async def open_link(
    http: aiohttp.ClientSession, sandbox: TelegramSandbox, user_id: int, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.post(f"{sandbox.url}/client/{user_id}/start", json=body) as response:
        answer = await response.json()
        assert response.status == 200, answer
        return answer


# --------------------------------------------------------------------------- connector + sandbox


async def test_the_link_opens_the_bot_and_its_code_comes_back(
    sandbox: TelegramSandbox, http: aiohttp.ClientSession
) -> None:
    events: list[RemoteEvent] = []

    async def sink(event: RemoteEvent, *, on_sent: OnSent | None = None) -> None:
        events.append(event)

    connector = connector_for(sandbox)
    assert isinstance(connector, InviteLinks)
    assert connector.invite_code_length <= 64
    await connector.start(sink)
    try:
        link = connector.invite_link(CODE)
        assert link == f"https://t.me/{sandbox.bot_username}?start={CODE}"
        # The client may have written before; the link still brings the code.
        async with http.post(
            f"{sandbox.url}/client/{CLIENT_ID}/messages", json={"text": "hi", "first_name": "Ada"}
        ) as response:
            assert response.status == 200
        sent = await open_link(http, sandbox, CLIENT_ID, {"url": link})
        await until(lambda: len(events) == 2)
    finally:
        await connector.stop()

    hello, start = events
    assert hello.invite_code == ""
    assert start.kind is RemoteEventKind.MESSAGE
    assert start.invite_code == CODE
    assert start.message_id == str(sent["message_id"])
    account = connector.invite_account()
    assert account == sandbox.token.split(":")[0] == str(connector.bot.id)
    assert start.chat == ChatRef("telegram", account, str(CLIENT_ID)) == hello.chat
    assert start.text is not None and start.text.body == f"/start {CODE}"  # bridged for the record
    assert start.sender.display_name == "Ada" and not start.is_group


async def test_invite_link_refuses_codes_telegram_would_drop(sandbox: TelegramSandbox) -> None:
    connector = connector_for(sandbox)
    await connector.bot.initialize()
    try:
        assert connector.invite_link("x" * 64).endswith("?start=" + "x" * 64)
        for code in ("", "x" * 65, "a b", "a.b", "a/b", "ä"):
            with pytest.raises(ValueError):
                connector.invite_link(code)
    finally:
        await connector.bot.shutdown()


# --------------------------------------------------------------------------- translation


def update_json(
    text: str,
    entities: list[dict[str, Any]] | None,
    *,
    chat: dict[str, Any] | None = None,
    kind: str = "message",
    **extra: Any,
) -> dict[str, Any]:
    """An update exactly as the Bot API sends it (``entities`` None: the key is absent)."""
    message: dict[str, Any] = {
        "message_id": 7,
        "from": {"id": CLIENT_ID, "is_bot": False, "first_name": "Ada", "language_code": "en"},
        "chat": chat or {"id": CLIENT_ID, "first_name": "Ada", "type": "private"},
        "date": 1_700_000_000,
        "text": text,
        **extra,
    }
    if entities is not None:
        message["entities"] = entities
    return {"update_id": 900, kind: message}


def command(length: int = 6, offset: int = 0) -> list[dict[str, Any]]:
    return [{"offset": offset, "length": length, "type": "bot_command"}]


def translate(bot: telegram.Bot, data: dict[str, Any]) -> RemoteEvent:
    update = telegram.Update.de_json(data, bot)
    assert update is not None
    [event] = Translator(bot, str(bot.id)).translate(update)
    return event


BOT_AT = "@houseline_sandbox_bot"


@pytest.mark.parametrize(
    ("text", "entities", "code"),
    [
        ("/start abc", command(), "abc"),
        (f"/start {CODE}", command(), CODE),
        ("/start " + "Z" * 64, command(), "Z" * 64),
        (f"/start{BOT_AT} abc", command(6 + len(BOT_AT)), "abc"),
        (f"/start{BOT_AT.upper()} abc", command(6 + len(BOT_AT)), "abc"),
        # Not an invitation: the text stays a plain message.
        ("/start@some_other_bot abc", command(6 + len("@some_other_bot")), ""),
        ("/start abc", None, ""),  # no bot_command entity
        ("/start abc", [{"offset": 0, "length": 6, "type": "bold"}], ""),
        ("hi /start abc", command(offset=3), ""),
        ("/start", command(), ""),
        ("/startabc", command(9), ""),
        ("/help abc", command(5), ""),
        ("/START abc", command(), ""),
        ("/start " + "Z" * 65, command(), ""),
        ("/start a b", command(), ""),
        ("/start a.b", command(), ""),
        ("/start кот", command(), ""),
        ("/start 🙂", command(), ""),
    ],
)
async def test_start_payload_becomes_the_invite_code(
    bot: telegram.Bot, text: str, entities: list[dict[str, Any]] | None, code: str
) -> None:
    event = translate(bot, update_json(text, entities))
    assert event.kind is RemoteEventKind.MESSAGE
    assert event.invite_code == code
    assert event.text is not None and event.text.body == text  # still bridged as text
    assert event.chat == ChatRef("telegram", str(bot.id), str(CLIENT_ID))


async def test_no_invite_code_outside_the_bots_own_private_chats(bot: telegram.Bot) -> None:
    group = {"id": -1001234567890, "title": "Lobby", "type": "supergroup"}
    assert translate(bot, update_json("/start abc", command(), chat=group)).invite_code == ""
    small = {"id": -4242, "title": "Team", "type": "group"}
    assert translate(bot, update_json("/start abc", command(), chat=small)).invite_code == ""
    business = translate(
        bot,
        update_json("/start abc", command(), kind="business_message", business_connection_id="bc1"),
    )
    assert business.kind is RemoteEventKind.MESSAGE
    assert business.chat.account == "business:bc1" and business.invite_code == ""
    edited = translate(
        bot, update_json("/start abc", command(), kind="edited_message", edit_date=1_700_000_060)
    )
    assert edited.kind is RemoteEventKind.EDIT and edited.invite_code == ""


async def test_the_sandbox_start_update_translates_to_its_code(
    sandbox: TelegramSandbox, bot: telegram.Bot, http: aiohttp.ClientSession
) -> None:
    """The same translator on what the sandbox's START actually queues, fetched by PTB."""
    user_id = CLIENT_ID + 1
    await open_link(http, sandbox, user_id, {"payload": "from-the_sandbox", "first_name": "Bo"})
    updates = await bot.get_updates(timeout=0)
    [mine] = [u for u in updates if u.message and u.message.chat.id == user_id]
    [event] = Translator(bot, str(bot.id)).translate(mine)
    assert event.kind is RemoteEventKind.MESSAGE and event.invite_code == "from-the_sandbox"
    await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)  # confirm them
