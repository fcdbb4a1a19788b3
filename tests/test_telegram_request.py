"""The bridge's Bot API transport (bridge/networks/telegram/request.py) against the sandbox, side
by side with python-telegram-bot's stock httpx transport: the same calls get the same answers
(form fields, a file upload, a download, an error), and its timeouts and failures come out as
PTB's own exceptions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import telegram
import telegram.error
from aiohttp import web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity
from telegram.request import BaseRequest, HTTPXRequest

from bridge.networks.telegram.request import AiohttpRequest
from sandbox.homeserver import free_port
from sandbox.telegram import TelegramSandbox
from tests.test_sandbox_telegram import CLIENT_ID, client_says, received

BOUND = 5.0
#: A name as employees give them: spaces, accents, a quote (and PDF's own type).
FILENAME = 'Q3 plan für "Ada".pdf'

TRANSPORTS = {
    "aiohttp": lambda: AiohttpRequest(pool_size=4, read_timeout=5.0),
    "httpx": lambda: HTTPXRequest(connection_pool_size=4, read_timeout=5.0),
}


@pytest.fixture
async def sandbox() -> AsyncIterator[TelegramSandbox]:
    sb = TelegramSandbox(host="127.0.0.1", port=0, token=None, rate_limits=False)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


def bot_on(sb: TelegramSandbox, make: Callable[[], BaseRequest]) -> telegram.Bot:
    """A bot whose calls and long polls both go through transports ``make`` builds."""
    return telegram.Bot(
        sb.token,
        base_url=f"{sb.url}/bot",
        base_file_url=f"{sb.url}/file/bot",
        request=make(),
        get_updates_request=make(),
    )


async def conversation(sb: TelegramSandbox, transport: str) -> dict[str, object]:
    """What one transport gets for a message with entities and a keyboard, a document upload
    and its download, and a call Telegram refuses."""
    async with aiohttp.ClientSession() as http, bot_on(sb, TRANSPORTS[transport]) as bot:
        await client_says(http, sb, "hello")
        await bot.get_updates()
        text = await bot.send_message(
            CLIENT_ID,
            "see the plan",
            entities=[MessageEntity(MessageEntity.BOLD, 4, 3)],
            reply_markup=InlineKeyboardMarkup([[InlineKeyboardButton("ok", callback_data="ok")]]),
        )
        document = await bot.send_document(
            CLIENT_ID, b"%PDF-1.4 plan " + transport.encode(), filename=FILENAME, caption="the plan"
        )
        file = await bot.get_file(document.document.file_id)
        downloaded = bytes(await file.download_as_bytearray())
        with pytest.raises(telegram.error.BadRequest) as refused:
            await bot.send_message(999_999_999, "nobody")
        seen = await received(http, sb)
    return {
        "text": (text.text, [(e.type, e.offset, e.length) for e in text.entities]),
        "keyboard": text.reply_markup.inline_keyboard[0][0].text,
        "document": (document.document.file_name, document.document.mime_type, document.caption),
        "downloaded": downloaded.replace(transport.encode(), b"*"),
        "refused": refused.value.message,
        "client_saw": [m.get("text") or m.get("caption") for m in seen["messages"][-2:]],
    }


async def test_the_bridges_transport_gets_what_ptbs_own_gets(sandbox: TelegramSandbox) -> None:
    ours = await conversation(sandbox, "aiohttp")
    stock = await conversation(sandbox, "httpx")
    assert ours == stock
    assert ours["text"] == ("see the plan", [("bold", 4, 3)])
    assert ours["document"] == ("Q3 plan für %22Ada%22.pdf", "application/pdf", "the plan")
    assert ours["downloaded"] == b"%PDF-1.4 plan *"
    assert ours["client_saw"] == ["see the plan", "the plan"]


async def test_a_long_poll_is_given_its_own_wait_beyond_the_read_timeout(sandbox: TelegramSandbox) -> None:
    # PTB adds getUpdates' timeout to the read timeout: a 2 s poll on a 1 s read timeout waits.
    async with bot_on(sandbox, lambda: AiohttpRequest(read_timeout=1.0)) as bot:
        t = time.monotonic()
        assert await asyncio.wait_for(bot.get_updates(timeout=2), BOUND) == ()
        assert time.monotonic() - t >= 1.9


async def test_a_filename_with_a_newline_is_sent_escaped_not_refused(sandbox: TelegramSandbox) -> None:
    async with (
        aiohttp.ClientSession() as http,
        bot_on(sandbox, lambda: AiohttpRequest(read_timeout=5.0)) as bot,
    ):
        await client_says(http, sandbox, "send me the notes")
        sent = await bot.send_document(CLIENT_ID, b"notes", filename="notes\nfinal.txt")
    assert sent.document.file_name == "notes%0Afinal.txt"


@pytest.fixture
async def slow_server() -> AsyncIterator[str]:
    """Answers every request after 3 s."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_an_answer_slower_than_the_read_timeout_is_timed_out(slow_server: str) -> None:
    request = AiohttpRequest(read_timeout=0.3)
    bot = telegram.Bot("1:token", base_url=f"{slow_server}/bot", request=request)
    await request.initialize()
    try:
        t = time.monotonic()
        with pytest.raises(telegram.error.TimedOut):
            await asyncio.wait_for(bot.send_message(1, "hi"), BOUND)
        assert time.monotonic() - t < 2
    finally:
        await request.shutdown()


async def test_a_refused_connection_is_a_network_error_naming_the_failure() -> None:
    request = AiohttpRequest(connect_timeout=1.0)
    bot = telegram.Bot("1:token", base_url=f"http://127.0.0.1:{free_port()}/bot", request=request)
    await request.initialize()
    try:
        with pytest.raises(telegram.error.NetworkError, match="aiohttp.ClientConnectorError") as failed:
            await asyncio.wait_for(bot.send_message(1, "hi"), BOUND)
        assert not isinstance(failed.value, telegram.error.TimedOut)
    finally:
        await request.shutdown()


async def test_a_request_before_initialize_or_after_shutdown_is_refused() -> None:
    request = AiohttpRequest()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request("http://127.0.0.1:9/bot1:t/getMe", "POST")
    await request.initialize()
    await request.shutdown()
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request("http://127.0.0.1:9/bot1:t/getMe", "POST")
